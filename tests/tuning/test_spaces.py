"""Search spaces: plain data -> Optuna distributions, the conditional space across families."""

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
        SearchSpace({"lstm": {"hidden_size": entry}})
    assert "lstm search space, field 'hidden_size'" in str(error.value)


def test_one_family_draws_its_fields_under_family_prefixed_names():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace({"lstm": LSTM})
    trial = study.ask()
    assert space(trial) is None
    assert set(trial.params) == {"lstm/hidden_size", "lstm/lr", "lstm/num_layers"}
    assert 1 <= trial.params["lstm/num_layers"] <= 3


def test_several_families_draw_the_model_first_and_only_that_familys_fields():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    space = SearchSpace({"lstm": LSTM, "transformer": TRANSFORMER})
    seen = set()
    for _ in range(12):
        trial = study.ask()
        space(trial)
        family = trial.params["model"]
        seen.add(family)
        assert {k.split("/")[0] for k in trial.params if k != "model"} == {family}
        study.tell(trial, 0.5)
    assert seen == {"lstm", "transformer"}


def test_an_enqueued_point_is_drawn_as_given_and_carries_fields_the_space_does_not_search():
    study = optuna.create_study(direction="maximize")
    space = SearchSpace({"lstm": LSTM, "transformer": TRANSFORMER})
    params, carried = space.point("lstm", {"hidden_size": 512, "lr": 1e-4, "num_layers": 1, "batch_size": 256})
    assert params == {"model": "lstm", "lstm/hidden_size": 512, "lstm/lr": 1e-4, "lstm/num_layers": 1}
    assert carried == {"lstm/batch_size": 256}
    study.enqueue_trial(params, user_attrs={CARRIED_ATTR: carried})
    trial = study.ask()
    extra = space(trial)
    assert trial.params == params
    assert extra == {"lstm/batch_size": 256}


def test_a_trial_config_gives_the_family_and_its_fields_with_fixed_ones_applied():
    config = {"model": "lstm", "lstm": {"hidden_size": 256, "lr": 1e-3}, "fixed": {"lstm": {"hidden_size": 16}, "bigru": {"x": 1}}}
    assert trial_hyperparameters(config) == ("lstm", {"hidden_size": 16, "lr": 1e-3})


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
