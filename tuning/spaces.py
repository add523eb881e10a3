"""Search spaces: the registry's plain data turned into Optuna distributions and one Tune space.

A model family's search space is plain data next to its config (models/registry.py,
rl/spec.py), one entry per config field:

    {"hidden_size": ("choice", [128, 256, 512]),
     "lr": ("loguniform", 1e-5, 1e-3),
     "dropout": ("uniform", 0.0, 0.5),
     "num_layers": ("randint", 1, 4)}          # randint: upper bound exclusive

The search draws every trial through one define-by-run function (`SearchSpace`),
so one model and ``--model all`` work the same way:

- a trial's parameters are named ``<family>/<field>`` (``lstm/hidden_size``); Tune
  un-flattens them, so a trial config holds ``config["model"]`` and the family's
  fields under ``config[<family>]``, and Tune's results show ``config/lstm/hidden_size``;
- with several families the first draw is the categorical ``model``, and only
  that family's fields are drawn after it: a conditional space, which Optuna's TPE
  handles per branch (each ``<family>/<field>`` is its own distribution);
- fields pinned with ``--fix FIELD=VALUE`` are not searched;
- the paper's configurations are enqueued as the first trials (`point`); a point's
  fields that the space does not search are carried into the trial unchanged
  (through the Optuna trial's user attribute ``carried_fields``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

CARRIED_ATTR = "carried_fields"
KINDS = ("choice", "loguniform", "uniform", "randint", "lograndint")


class SpaceError(ValueError):
    """A search-space entry that cannot be turned into a distribution."""


def to_distribution(spec: tuple, where: str) -> optuna.distributions.BaseDistribution:
    """One plain-data entry as an Optuna distribution; `where` names it in errors."""
    if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in KINDS:
        raise SpaceError(f"{where}: search-space entry {spec!r} must be a tuple starting with one of {', '.join(KINDS)}")
    kind, *args = spec
    try:
        if kind == "choice":
            (values,) = args
            if not values:
                raise SpaceError(f"{where}: ('choice', []) has nothing to choose from")
            return optuna.distributions.CategoricalDistribution(list(values))
        low, high = args
        if kind == "loguniform":
            return optuna.distributions.FloatDistribution(float(low), float(high), log=True)
        if kind == "uniform":
            return optuna.distributions.FloatDistribution(float(low), float(high))
        if int(high) <= int(low):
            raise SpaceError(f"{where}: ({kind!r}, {low}, {high}) is empty (the upper bound is exclusive)")
        return optuna.distributions.IntDistribution(int(low), int(high) - 1, log=kind == "lograndint")
    except (TypeError, ValueError) as error:
        if isinstance(error, SpaceError):
            raise
        raise SpaceError(f"{where}: bad search-space entry {spec!r} ({error})") from None


def contains(spec: tuple, value: Any) -> bool:
    """Whether `value` lies in the plain-data entry `spec`."""
    kind, *args = spec
    if kind == "choice":
        return value in args[0]
    low, high = args
    if kind in ("randint", "lograndint"):
        return isinstance(value, (int,)) and low <= value < high
    return isinstance(value, (int, float)) and low <= value <= high and math.isfinite(value)


@dataclass
class SearchSpace:
    """The define-by-run space of one search over one or more model families.

    `spaces` maps family -> its plain-data space (already without fixed fields).
    Called by OptunaSearch with an Optuna trial; returns the values that are not
    drawn (fields of an enqueued point that the space does not search).
    """

    spaces: dict[str, dict[str, tuple]]
    distributions: dict[str, dict[str, optuna.distributions.BaseDistribution]] = field(init=False)

    def __post_init__(self):
        if not self.spaces:
            raise SpaceError("a search needs at least one model family")
        self.distributions = {
            family: {name: to_distribution(spec, f"{family} search space, field {name!r}") for name, spec in space.items()}
            for family, space in self.spaces.items()
        }

    @property
    def families(self) -> list[str]:
        return list(self.spaces)

    def __call__(self, trial) -> dict[str, Any] | None:
        if len(self.families) > 1:
            family = trial.suggest_categorical("model", self.families)
        else:
            family = self.families[0]
        for name, distribution in self.distributions[family].items():
            _suggest(trial, f"{family}/{name}", distribution)
        # An enqueued point (a paper configuration) may set fields the space does not draw.
        return dict(trial.user_attrs.get(CARRIED_ATTR) or {}) or None

    def point(self, family: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A configuration of `family` as (Optuna params to enqueue, carried fields).

        Fields the space draws become the enqueued params (flattened names); the
        others are carried into the trial unchanged through the trial's user
        attribute `CARRIED_ATTR`.
        """
        drawn = self.distributions[family]
        params = {f"{family}/{key}": value for key, value in values.items() if key in drawn}
        carried = {f"{family}/{key}": value for key, value in values.items() if key not in drawn}
        if len(self.families) > 1:
            params["model"] = family
        return params, carried


def _suggest(trial, name: str, distribution: optuna.distributions.BaseDistribution):
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def trial_hyperparameters(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(family, its field values) from a trial config built by this space (see module docstring)."""
    family = config["model"]
    values = dict(config.get(family) or {})
    values.update((config.get("fixed") or {}).get(family, {}))
    return family, values


def without_fixed(space: dict[str, tuple], fixed: dict[str, Any]) -> dict[str, tuple]:
    """`space` minus the fields pinned by ``--fix``."""
    return {name: spec for name, spec in space.items() if name not in fixed}


def widen(space: dict[str, tuple], values: dict[str, Any]) -> dict[str, tuple]:
    """`space` stretched to contain `values` (a point to evaluate first): a missing choice is
    added, a range's bound moves; fields not in `space` are left to be carried."""
    wide = dict(space)
    for name, value in values.items():
        if name not in space or contains(space[name], value):
            continue
        kind, *args = space[name]
        if kind == "choice":
            wide[name] = ("choice", [*args[0], value])
        elif kind in ("randint", "lograndint"):
            wide[name] = (kind, min(args[0], int(value)), max(args[1], int(value) + 1))
        else:
            wide[name] = (kind, min(args[0], value), max(args[1], value))
    return wide


def shrink_for_small_budget(space: dict[str, tuple], fields: set[str]) -> dict[str, tuple]:
    """The lowest part of the size fields' ranges: small models for a laptop-sized budget.

    For each field in `fields` (model sizes: hidden sizes, widths, layer counts), a
    ``choice`` of numbers keeps its smallest third (at least one value) and an integer
    range its lowest third (at least its lower bound); other fields are unchanged.
    """
    small = {}
    for name, spec in space.items():
        kind, *args = spec
        if name in fields and kind == "choice" and all(isinstance(v, (int, float)) for v in args[0]):
            values = sorted(args[0])
            small[name] = ("choice", values[: max(1, len(values) // 3)])
        elif name in fields and kind in ("randint", "lograndint"):
            low, high = args
            small[name] = (kind, low, max(low + 1, low + (high - low) // 3))
        else:
            small[name] = spec
    return small
