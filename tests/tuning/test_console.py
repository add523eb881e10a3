"""The search's console: one line per trial event, the count of trials done, and the live report's refresh."""

from types import SimpleNamespace

from tuning.console import TrialEvents


def trial(trial_id, number, point=None, status="RUNNING", last_result=None):
    config = {"model": "lstm", "trial": number, "lstm": {"lr": 0.003, "hidden_size": 128}}
    if point:
        config["point"] = point
    return SimpleNamespace(trial_id=trial_id, config=config, status=status, last_result=last_result or {}, path="/nowhere")


def test_one_line_per_event_with_the_trials_done_and_a_refresh_after_results(capsys):
    refreshed = []
    events = TrialEvents(total=3, max_epochs=2, on_refresh=lambda: refreshed.append(1), refresh_s=0.0)
    a, b = trial("a", 0, "start"), trial("b", 1, "paper")
    events.on_trial_start(0, [a, b], a)
    events.on_trial_result(0, [a, b], a, {"val_maa": 0.5, "epoch": 1})
    events.on_trial_result(0, [a, b], a, {"val_maa": 0.6, "epoch": 2, "val_recall_at_10": 0.4})
    a.status, a.last_result = "TERMINATED", {"epoch": 2, "time_total_s": 12.0}
    events.on_trial_complete(0, [a, b], a)
    b.last_result = {"epoch": 1, "time_total_s": 3.0}
    events.on_trial_result(0, [a, b], b, {"val_maa": 0.3, "epoch": 1})
    events.on_trial_complete(0, [a, b], b)
    events.on_experiment_end([a, b])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[0/3] lstm #0 (start config) started: lr=0.003 hidden_size=128",
        "[0/3] lstm #0 (start config) epoch 1/2: val MAA 0.5000",
        "[0/3] lstm #0 (start config) epoch 2/2: val MAA 0.6000, Recall@10 0.4000",
        "[1/3] lstm #0 (start config) finished: best val MAA 0.6000 at epoch 2, 12 s",
        "[1/3] lstm #1 (paper config) epoch 1/2: val MAA 0.3000",
        "[2/3] lstm #1 (paper config) stopped early after epoch 1: best val MAA 0.3000, 3 s",
    ]
    assert len(refreshed) == 6  # after every result and end of a trial (refresh_s=0), and at the end


def test_the_callback_survives_pickling_as_tune_keeps_it_with_the_experiment():
    import pickle

    events = TrialEvents(total=5, max_epochs=3, on_refresh=print)  # the bar is made lazily and never pickled
    copy = pickle.loads(pickle.dumps(events))
    assert (copy.total, copy.max_epochs, copy._bar) == (5, 3, None)
