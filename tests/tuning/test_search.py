"""`python -m tuning.search` end to end on a real local Ray instance with tiny data and tiny models.

Every search here runs real trials (tuning/trainable.py -> tuning/trainer.py) of a small LSTM on
the `synthetic_prepared` fixture (3000 sessions, 400 tracks), in the test session's Ray instance
(2 CPUs), except the resume test, whose first driver is a separate process joined to that instance
so that it can be killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tuning.config_io import load_config_file
from tuning.report import load_experiment
from tuning.search import ORPHANED_ATTR, Family, SearchOptions, UsageError, main, resolve_families, run_search

REPO = Path(__file__).resolve().parents[2]
TINY = ["--fix", "hidden_size=16", "--fix", "embedding_dim=16"]
TINY_FIX = {"hidden_size": 16, "embedding_dim": 16}


def lstm_search(data: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return ["--task", "skip", "--model", "lstm", "--data", str(data), "--storage", str(storage), "--name", name, *TINY, *extra]


def study_trials(exp_dir: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=exp_dir.name, storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def result_epochs(trial_dir: Path) -> list[int]:
    """The epochs a trial reported, in order, as Tune wrote them (one line per report)."""
    return [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------
# bad arguments: one clear line, exit status 2, before any trial starts
# ---------------------------------------------------------------------------


def test_an_unknown_model_fails_at_once_with_one_line_naming_the_known_models(tmp_path, capsys):
    assert main(["--task", "skip", "--model", "gpt", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "unknown model 'gpt'" in err and "lstm" in err and "transformer" in err
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_does_not_support_the_task_is_rejected():
    seq_only = Family("seq_only", ("seq",), {"lr": ("loguniform", 1e-5, 1e-3)}, {}, frozenset({"lr"}))
    with pytest.raises(UsageError, match="model 'seq_only' does not support task 'skip' \\(it supports seq\\)"):
        resolve_families("skip", "seq_only", {"seq_only": seq_only})
    with pytest.raises(UsageError, match="no model supports task 'skip'"):
        resolve_families("skip", "all", {"seq_only": seq_only})


def test_a_missing_data_directory_fails_at_once(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["--task", "skip", "--data", str(missing), "--storage", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"--data {missing}: no such directory" in err
    assert not (tmp_path / "exp").exists()


def test_a_fix_of_a_field_no_model_has_fails_at_once(tmp_path, synthetic_prepared, capsys):
    assert main(lstm_search(synthetic_prepared, tmp_path, "x", "--fix", "wings=2")) == 2
    assert "--fix wings: not a config field of lstm" in capsys.readouterr().err


def test_gpus_requested_on_a_cluster_without_gpus_fail_before_any_trial(tmp_path, synthetic_prepared, ray_session, capsys):
    assert ray_session.cluster_resources().get("GPU", 0) == 0
    assert main(lstm_search(synthetic_prepared, tmp_path, "gpu", "--gpus-per-trial", "0.5")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--gpus-per-trial 0.5 asked for, but the Ray cluster has no GPU" in err[0]
    assert not (tmp_path / "gpu").exists()


# ---------------------------------------------------------------------------
# searches
# ---------------------------------------------------------------------------


def test_a_three_trial_search_writes_the_leaderboard_best_config_curves_study_and_tensorboard_logs(
    tmp_path, synthetic_prepared, ray_session, capsys
):
    assert main(lstm_search(synthetic_prepared, tmp_path, "e2e", "--num-samples", "3", "--max-epochs", "2")) == 0
    out = capsys.readouterr().out
    exp_dir = tmp_path / "e2e"
    leaderboard = (exp_dir / "leaderboard.md").read_text()
    assert leaderboard in out  # printed at the end
    assert "| lstm |" in leaderboard
    for baseline in ("all_skip", "no_skip", "session_majority", "copy_last_skip"):
        assert f"baseline: {baseline}" in leaderboard
    trials = load_experiment(exp_dir).trials
    assert len(trials) == 3
    assert {t.status for t in trials} <= {"finished", "stopped early"}
    for trial in trials:
        assert list(trial.path.glob("events.out.tfevents.*")), "TensorBoard event file per trial"
    rows = (exp_dir / "leaderboard.csv").read_text().splitlines()
    lstm_row = next(r for r in rows if r.split(",")[1] == "lstm")
    header = rows[0].split(",")
    values = dict(zip(header, lstm_row.split(",")))
    assert 0.0 < float(values["test_maa"]) <= 1.0
    assert 0.0 < float(values["val_maa"]) <= 1.0
    assert int(values["parameters"]) > 0
    config, task, model = load_config_file(exp_dir / "best_configs" / "lstm.json")
    assert (task, model) == ("skip", "lstm")
    assert config["hidden_size"] == 16 and config["embedding_dim"] == 16
    assert (exp_dir / "learning_curves" / "lstm.png").stat().st_size > 0
    assert (exp_dir / "learning_curves.png").stat().st_size > 0
    test_result = json.loads((exp_dir / "test_results" / "lstm.json").read_text())
    assert test_result["test"]["maa"] == pytest.approx(float(values["test_maa"]))
    assert len(study_trials(exp_dir)) == 3
    # the paper's configuration is the first trial
    first = min(study_trials(exp_dir), key=lambda t: t.number)
    assert first.params["lstm/lr"] == 1e-5 and first.params["lstm/batch_size"] == 256

    # tuning.report regenerates the same files from the directory alone
    (exp_dir / "leaderboard.md").unlink()
    assert subprocess.run([sys.executable, "-m", "tuning.report", str(exp_dir)], cwd=REPO, capture_output=True).returncode == 0
    assert (exp_dir / "leaderboard.md").read_text() == leaderboard


def test_asha_stops_a_hopeless_configuration_after_the_grace_period(tmp_path, synthetic_prepared, ray_session):
    points = tmp_path / "points.json"
    points.write_text(json.dumps([{"lr": 1e-2, "batch_size": 32}, {"lr": 1e-8, "batch_size": 32}]))
    args = lstm_search(
        synthetic_prepared, tmp_path, "asha", "--points", str(points), "--num-samples", "2", "--max-epochs", "3",
        "--grace-period", "1", "--reduction-factor", "2", "--max-concurrent", "1", "--no-baselines", "--no-test",
    )
    assert main(args) == 0
    trials = {t.config["lr"]: t for t in load_experiment(tmp_path / "asha").trials}
    assert trials[1e-2].status == "finished" and len(trials[1e-2].epochs) == 3
    assert trials[1e-8].status == "stopped early" and len(trials[1e-8].epochs) == 1
    states = {t.params["lstm/lr"]: t.state for t in study_trials(tmp_path / "asha")}
    assert states == {1e-2: optuna.trial.TrialState.COMPLETE, 1e-8: optuna.trial.TrialState.PRUNED}


def test_a_trial_that_fails_once_is_retried_from_its_checkpoint_and_finishes(tmp_path, synthetic_prepared, ray_session):
    marker = tmp_path / "failed-once"
    options = SearchOptions(
        task="skip", model="lstm", data=str(synthetic_prepared), storage=str(tmp_path), name="retry",
        num_samples=1, max_epochs=3, max_concurrent=1, baselines=False, test=False, fix=TINY_FIX,
        hooks={"fail_once_marker": str(marker), "fail_after_epoch": 1},
    )
    exp_dir = run_search(options)
    assert marker.exists()
    (trial,) = load_experiment(exp_dir).trials
    assert trial.status == "finished"
    assert trial.failures == 1
    # restored from the epoch-1 checkpoint: epoch 1 is not trained or reported again
    assert result_epochs(trial.path) == [1, 2, 3]


def _finished_trials(exp_dir: Path) -> list[str]:
    states = sorted(exp_dir.glob("experiment_state-*.json"))  # named by driver start time
    if not states:
        return []
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:
        return []
    trials = [json.loads(t) for t, _ in data.get("trial_data", [])]
    return [t["trial_id"] for t in trials if t.get("status") == "TERMINATED"]


def test_a_driver_killed_after_the_first_finished_trial_resumes_without_losing_or_rerunning_it(
    tmp_path, synthetic_prepared, ray_session
):
    args = lstm_search(
        synthetic_prepared, tmp_path, "resume", "--num-samples", "3", "--max-epochs", "2", "--scheduler", "none",
        "--max-concurrent", "1", "--no-baselines", "--no-test",
    )
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address}
    driver = subprocess.Popen([sys.executable, "-m", "tuning.search", *args], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exp_dir = tmp_path / "resume"
    deadline = time.monotonic() + 300
    try:
        while not _finished_trials(exp_dir):
            assert driver.poll() is None, "the driver ended before any trial finished"
            assert time.monotonic() < deadline, "no trial finished within 300 s"
            time.sleep(1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    (first,) = _finished_trials(exp_dir)[:1]
    first_dir = next(exp_dir.glob(f"*_{first}"))
    first_results = (first_dir / "result.json").read_text()

    assert main(["--task", "skip", "--storage", str(tmp_path), "--name", "resume", "--resume"]) == 0

    experiment = load_experiment(exp_dir)
    assert len(experiment.trials) == 3
    assert all(t.status == "finished" for t in experiment.trials)
    assert (first_dir / "result.json").read_text() == first_results  # kept, not rerun
    assert result_epochs(first_dir) == [1, 2]
    study = study_trials(exp_dir)
    completed = [t for t in study if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 3
    # A trial asked for just before the kill, which Tune had not recorded yet, is closed as FAIL, not left RUNNING.
    others = [t for t in study if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.FAIL and ORPHANED_ATTR in t.user_attrs for t in others)
    first_value = json.loads(first_results.splitlines()[-1])["val_maa"]
    assert first_value in [t.value for t in completed]


@pytest.mark.slow  # about a minute; the retry path above covers the trainable's failure hook in CI
def test_a_trial_that_fails_for_good_is_recorded_with_its_error_and_the_search_goes_on(tmp_path, synthetic_prepared, ray_session):
    options = SearchOptions(
        task="skip", model="lstm", data=str(synthetic_prepared), storage=str(tmp_path), name="broken",
        num_samples=2, max_epochs=2, scheduler="none", max_concurrent=1, max_failures=0, baselines=False, test=False,
        fix=TINY_FIX,
        hooks={"fail_once_marker": str(tmp_path / "failed-once"), "fail_after_epoch": 1},
    )
    exp_dir = run_search(options)
    trials = sorted(load_experiment(exp_dir).trials, key=lambda t: t.status)
    assert [t.status for t in trials] == ["error", "finished"]
    assert "InjectedFailure: fault drill: failing once after epoch 1" in trials[0].error
    assert "fault drill: failing once after epoch 1" in (exp_dir / "leaderboard.md").read_text()
    states = sorted(t.state.name for t in study_trials(exp_dir))
    assert states == ["COMPLETE", "FAIL"]


def test_the_trial_epoch_budget_counts_each_epoch_once():
    from tuning.stoppers import TrialEpochBudget

    budget = TrialEpochBudget(4)
    for trial_id, epoch in [("a", 1), ("a", 2), ("a", 2), ("b", 1)]:  # ("a", 2) again: Tune's final call
        assert budget(trial_id, {"epoch": epoch}) is False
    assert (budget.used, budget.stop_all()) == (3, False)
    budget("b", {"epoch": 2})
    assert budget.stop_all()


def test_trials_left_running_by_an_interrupted_driver_are_closed_as_failed(tmp_path):
    from tuning.search import close_orphaned_trials

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # asked for, never told: what a killed driver leaves behind

    assert close_orphaned_trials(storage, "s") == 1
    trials = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    states = [(t.state, ORPHANED_ATTR in t.user_attrs) for t in trials]
    assert states == [(optuna.trial.TrialState.COMPLETE, False), (optuna.trial.TrialState.FAIL, True)]
    assert close_orphaned_trials(storage, "s") == 0
