"""Search spaces: plain data -> Optuna distributions, one space per family, and the search plan."""

from __future__ import annotations

import optuna
import pytest

from tuning.spaces import (
    CARRIED_ATTR,
    SearchSpace,
    SpaceError,
    shrink_for_small_budget,
    to_distribution,
    trial_hyperparameters,
    widen,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

LSTM = {"hidden_size": ("choice", [128, 256, 512]), "lr": ("loguniform", 1e-5, 1e-3), "num_layers": ("randint", 1, 4)}
TRANSFORMER = {"num_heads": ("choice", [1, 2, 4]), "dropout": ("uniform", 0.0, 0.5)}


def test_plain_entries_become_optuna_distributions_with_randint_upper_bound_exclusive():
    assert to_distribution(("choice", [1, 2]), "x") == optuna.distributions.CategoricalDistribution([1, 2])
    assert to_distribution(("loguniform", 1e-5, 1e-3), "x") == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert to_distribution(("uniform", 0.0, 0.5), "x") == optuna.distributions.FloatDistribution(0.0, 0.5)
    assert to_distribution(("randint", 1, 4), "x") == optuna.distributions.IntDistribution(1, 3)


@pytest.mark.parametrize(
    "entry, message",
    [(("normal", 0, 1), "must be a tuple starting with one of"), (("choice", []), "nothing to choose"), (("randint", 3, 3), "is empty")],
)
def test_bad_entries_are_rejected_naming_the_family_and_field(entry, message):
    with pytest.raises(SpaceError, match=message) as error:
        SearchSpace("lstm", {"hidden_size": entry})
    assert "lstm search space, field 'hidden_size'" in str(error.value)


def test_a_family_draws_every_field_of_its_space_under_the_field_names():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace("lstm", LSTM)
    trial = study.ask()
    assert space(trial) is None
    assert set(trial.params) == {"hidden_size", "lr", "num_layers"}
    assert 1 <= trial.params["num_layers"] <= 3


def test_an_enqueued_point_is_drawn_as_given_and_carries_fields_the_space_does_not_search():
    study = optuna.create_study(direction="maximize")
    space = SearchSpace("lstm", LSTM)
    params, carried = space.point({"hidden_size": 512, "lr": 1e-4, "num_layers": 1, "batch_size": 256})
    assert params == {"hidden_size": 512, "lr": 1e-4, "num_layers": 1}
    assert carried == {"batch_size": 256}
    study.enqueue_trial(params, user_attrs={CARRIED_ATTR: carried})
    trial = study.ask()
    extra = space(trial)
    assert trial.params == params
    assert extra == {"batch_size": 256}


def test_a_trial_config_gives_the_family_and_its_fields_with_fixed_ones_applied():
    config = {"model": "lstm", "trial": 3, "lstm": {"hidden_size": 256, "lr": 1e-3}}
    fixed = {"lstm": {"hidden_size": 16}, "bigru": {"x": 1}}
    assert trial_hyperparameters(config, fixed) == ("lstm", {"hidden_size": 16, "lr": 1e-3})
    assert trial_hyperparameters(config) == ("lstm", {"hidden_size": 256, "lr": 1e-3})


def _plans(task="skip", model="lstm,bert", **options):
    from tuning.families import families_for
    from tuning.options import SearchOptions
    from tuning.spaces import plan_search

    resolved = SearchOptions(task=task, model=model, **options).resolved()
    return plan_search(families_for(task, model), resolved)


def test_every_family_gets_the_same_trials_a_full_start_point_and_its_paper_configuration():
    plans, fixed = _plans(trials_per_family=4)
    assert [p.family for p in plans] == ["lstm", "bert"] and {p.trials for p in plans} == {4}
    lstm = plans[0]
    (start, carried, kind), = lstm.points
    assert kind == "start" and set(lstm.space.space) <= set(start) | set(carried)  # no field left to the sampler
    assert start["lr"] == 3e-3 and start["dropout"] == 0.2  # the start lr, the config's default dropout
    paper, _ = lstm.paper
    assert paper["lr"] == 1e-5 and paper["hidden_size"] == 128  # the paper's lr; its 512 scaled to the small range
    # the small budget pins a small, briefly pre-trained BERT, which the bert family does not search
    assert fixed["bert"]["pretrain_epochs"] == 5 and fixed["bert"]["embedding_dim"] == 64
    assert fixed["lstm"] == {}


def test_small_budget_pins_per_task_settings_on_top_and_bert_fused_shares_berts_pre_training():
    from models.bert import ClozeOptions

    pretraining = [f for f in ClozeOptions.__dataclass_fields__ if f != "use_pretrained"]
    for task, epochs in (("skip", 5), ("seq", 20)):
        _, fixed = _plans(task=task, model="bert,bert_fused")
        assert fixed["bert"]["pretrain_epochs"] == epochs  # seq ranks next tracks only after longer pre-training
        bert = {k: fixed["bert"].get(k) for k in pretraining}
        assert bert == {k: fixed["bert_fused"].get(k) for k in pretraining}  # one cached pre-training for both
        assert fixed["bert"]["embedding_dim"] == fixed["bert_fused"]["bert_embedding_dim"] == 64
    _, fixed = _plans(task="seq", model="bert", budget="paper")
    assert "pretrain_epochs" not in fixed["bert"]  # the paper budget pre-trains as the config says


def test_the_paper_trial_runs_second_and_sampled_trials_fill_each_familys_quota():
    (plan,), _ = _plans(model="lstm", trials_per_family=3)
    kinds = []
    while (point := plan.next_point()) != "done":
        kinds.append(point[2] if point is not None else "sampled")
    assert kinds == ["start", "paper", "sampled", "sampled"]
    (plan,), _ = _plans(model="lstm", trials_per_family=2, paper_configs=False)
    assert [p if p is None else p[2] for p in iter(plan.next_point, "done")] == ["start", None]


def test_points_run_first_in_their_family_and_bad_ones_are_rejected_at_once():
    plans, _ = _plans(points=[{"model": "bert", "lr": 5e-4}])
    assert [kind for _, _, kind in plans[1].points] == ["points", "start"]
    with pytest.raises(SpaceError, match="--points entry 1: model 'gru' is not searched here"):
        _plans(points=[{"model": "gru", "lr": 5e-4}])
    with pytest.raises(SpaceError, match="--points entry 1: wings not config fields of lstm"):
        _plans(points=[{"model": "lstm", "wings": 2}])


def test_small_budget_keeps_the_lowest_third_of_size_fields_only():
    small = shrink_for_small_budget(
        {"hidden_size": ("choice", [1024, 128, 256, 512, 64, 32]), "num_layers": ("randint", 1, 8), "lr": ("loguniform", 1e-5, 1e-3)},
        {"hidden_size", "num_layers"},
    )
    assert small == {"hidden_size": ("choice", [32, 64]), "num_layers": ("randint", 1, 3), "lr": ("loguniform", 1e-5, 1e-3)}
    assert shrink_for_small_budget({"num_layers": ("randint", 1, 3)}, {"num_layers"}) == {"num_layers": ("randint", 1, 2)}


def test_widening_adds_a_points_values_to_the_space():
    wide = widen(LSTM, {"hidden_size": 32, "lr": 1e-2, "num_layers": 6, "batch_size": 64})
    assert wide == {"hidden_size": ("choice", [128, 256, 512, 32]), "lr": ("loguniform", 1e-5, 1e-2), "num_layers": ("randint", 1, 7)}
    assert widen(LSTM, {"hidden_size": 256, "lr": 1e-4}) == LSTM


def test_a_family_the_paper_did_not_have_runs_no_paper_trial():
    (plan,), _ = _plans(model="gbdt", trials_per_family=2)
    assert plan.paper is None and [p[2] for p in plan.points] == ["start"]
