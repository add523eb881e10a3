"""Search spaces: a family's plain data turned into Optuna distributions (one define-by-run space per family).

A model family's search space is plain data next to its config (models/registry.py,
rl/spec.py), one entry per config field:

    {"hidden_size": ("choice", [128, 256, 512]),
     "lr": ("loguniform", 1e-5, 1e-3),
     "dropout": ("uniform", 0.0, 0.5),
     "num_layers": ("randint", 1, 4)}          # randint: upper bound exclusive

Each family is searched in its own Optuna study (tuning/searcher.py); its trial
config holds ``config["model"]`` and the family's fields under
``config[<family>]``, so Tune's results show ``config/lstm/hidden_size``.
Fields pinned with ``--fix FIELD=VALUE`` are not searched. The start and paper
configurations are enqueued as trials (`SearchSpace.point`); a point's fields
that the space does not search are carried into the trial unchanged (through
the Optuna trial's user attribute ``carried_fields``). ``shrink_for_small_budget``
keeps the lowest third of the model-size ranges for a laptop-sized search, and
``widen`` stretches a space to hold a point evaluated first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import optuna

CARRIED_ATTR = "carried_fields"
POINT_ATTR = "point"  # Optuna user attribute and trial-config key: "points", "start" or "paper"
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
    """The define-by-run space of one model family: its plain-data space as Optuna distributions.

    Called with an Optuna trial (``FamilyStudies`` asks one per Tune trial); draws
    every field (or takes the value of an enqueued point) and returns the values
    that are not drawn: the fields of an enqueued point that the space does not
    search, carried through the trial's user attribute `CARRIED_ATTR`.
    """

    family: str
    space: dict[str, tuple]
    distributions: dict[str, optuna.distributions.BaseDistribution] = field(init=False)

    def __post_init__(self):
        self.distributions = {
            name: to_distribution(spec, f"{self.family} search space, field {name!r}") for name, spec in self.space.items()
        }

    def __call__(self, trial) -> dict[str, Any] | None:
        for name, distribution in self.distributions.items():
            _suggest(trial, name, distribution)
        return dict(trial.user_attrs.get(CARRIED_ATTR) or {}) or None

    def point(self, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A configuration as (Optuna params to enqueue, carried fields the space does not draw)."""
        params = {key: value for key, value in values.items() if key in self.distributions}
        carried = {key: value for key, value in values.items() if key not in self.distributions}
        return params, carried


@dataclass
class FamilyPlan:
    """One family's share of a search: its space, its queued points and its budget."""

    family: str
    space: SearchSpace
    points: list[tuple[dict, dict, str]]  # (params, carried, kind) in the order to run; kind: "points" or "start"
    paper: tuple[dict, dict] | None  # the paper configuration, run as one more trial
    trials: int  # searched trials (not counting the paper trial)
    started: int = 0
    paper_started: bool = False
    done: bool = field(default=False)

    def next_point(self) -> tuple[dict, dict, str] | None | str:
        """The next (params, carried, kind) to enqueue, None to sample one, or "done"."""
        if self.paper is not None and not self.paper_started and (self.started >= 1 or self.trials == 0):
            self.paper_started = True
            return (*self.paper, "paper")
        if self.started < self.trials:
            self.started += 1
            return self.points.pop(0) if self.points else None
        if self.paper is not None and not self.paper_started:
            self.paper_started = True
            return (*self.paper, "paper")
        return "done"


def _suggest(trial, name: str, distribution: optuna.distributions.BaseDistribution):
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)


def trial_hyperparameters(config: dict[str, Any], fixed: dict[str, dict] | None = None) -> tuple[str, dict[str, Any]]:
    """(family, its field values) from a trial config (``{"model": family, family: {...}}``), with the
    fields pinned for that family (`fixed`: family -> field -> value) applied on top."""
    family = config["model"]
    values = dict(config.get(family) or {})
    values.update((fixed or {}).get(family, {}))
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


# Config fields that set a model's size; `--budget small` searches the lowest third of their ranges.
SIZE_FIELDS = {"hidden_size", "embedding_dim", "embedding_size", "ffn_dim", "num_layers"}


def plan_search(families, options) -> tuple[list[FamilyPlan], dict[str, dict[str, Any]]]:
    """Each family's plan (space, points in order, paper configuration, trials) and its pinned fields.

    `options` is a resolved ``tuning.options.SearchOptions``. Raises SpaceError for a
    bad --points entry or space.
    """
    budget_small = options.budget == "small"
    by_name = {f.name: f for f in families}
    given: dict[str, list[dict]] = {f.name: [] for f in families}
    for number, point in enumerate(options.points, 1):
        point = dict(point)
        name = point.pop("model", families[0].name if len(families) == 1 else None)
        if name not in by_name:
            raise SpaceError(f"--points entry {number}: model {name!r} is not searched here ({', '.join(by_name)})")
        unknown = sorted(set(point) - by_name[name].fields)
        if unknown:
            raise SpaceError(f"--points entry {number}: {', '.join(unknown)} not config fields of {name}")
        given[name].append({k: v for k, v in point.items() if k not in options.fix})
    plans, fixed = [], {}
    for family in families:
        space = without_fixed(family.search_space, options.fix)
        if budget_small:
            space = shrink_for_small_budget(space, SIZE_FIELDS)
        settings = {**family.small_settings, **family.small_task_settings.get(options.task, {})} if budget_small else {}
        fixed[family.name] = {
            **{k: v for k, v in settings.items() if k not in space},
            **{k: v for k, v in options.fix.items() if k in family.fields},
        }

        defaults = {f.name: f.default for f in dataclasses.fields(family.config_cls)
                    if f.default is not dataclasses.MISSING}

        def prepared(config: dict) -> dict:
            # a point names every field the space searches (the config's default where it is silent),
            # so the sampler never fills in part of the paper's or the start configuration
            config = {**{k: defaults[k] for k in space if k in defaults}, **config}
            config = {k: v for k, v in config.items() if k not in options.fix}
            return scale_down(config, space) if budget_small else config

        start = prepared(family.start_configs.get(options.task, {}))
        # a family the paper did not have (gbdt) has no paper configuration to run
        has_paper = options.paper_configs and options.task in family.paper_configs
        paper = prepared(family.paper_configs[options.task]) if has_paper else None
        queued = [(p, "points") for p in given[family.name]] + [(start, "start")]
        for values in [p for p, _ in queued] + ([paper] if paper is not None else []):
            space = widen(space, values)  # Optuna rejects a categorical value outside the space
        family_space = SearchSpace(family.name, space)
        plans.append(FamilyPlan(
            family=family.name,
            space=family_space,
            points=[(*family_space.point(values), kind) for values, kind in queued],
            paper=family_space.point(paper) if paper is not None and paper != start else None,
            trials=options.trials_per_family,
        ))
        if paper is not None and paper == start:  # the start point is the paper's configuration: mark it so
            plans[-1].points = [(p, c, "paper" if kind == "start" else kind) for p, c, kind in plans[-1].points]
    return plans, fixed


def scale_down(config: dict, space: dict[str, tuple]) -> dict:
    """A configuration with its size fields clipped to the small budget's ranges."""
    out = dict(config)
    for name, value in config.items():
        if name not in SIZE_FIELDS or name not in space:
            continue
        kind, *args = space[name]
        if kind == "choice" and value not in args[0]:
            out[name] = max((v for v in args[0] if v <= value), default=min(args[0]))
        elif kind in ("randint", "lograndint") and not args[0] <= value < args[1]:
            out[name] = min(max(value, args[0]), args[1] - 1)
    return out
