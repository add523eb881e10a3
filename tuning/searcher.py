"""The search's Tune pieces: one Optuna study and one set of ASHA brackets per model family.

Why per family: with one study over a conditional space ("model" drawn first),
TPE spends the budget on the families that look good first, and a family can be
left with a single, unlucky trial. Here every family gets the same number of
trials and its own TPE model, and ASHA compares a trial only with trials of its
own family; all families still run in one Tune run, so the cluster stays full.

- `FamilyStudies` (a Tune ``Searcher``): per family an Optuna study named
  ``<experiment>.<family>`` in one RDB storage (SQLite by default, so
  optuna-dashboard can watch every study), asked and told through Optuna's
  ask/tell API. Families take turns (round robin), each up to
  ``trials_per_family`` searched trials plus, when asked for, its paper
  configuration as one more trial, marked ``point: paper`` in the trial config.
  A family's searched trials start with ``--points``, then its start
  configuration (``point: start``), then draws of its sampler (TPE, seeded per
  family, or random); the paper trial runs second, right after the first one.
- How ASHA's early stops reach Optuna: Tune tells a searcher that a trial is
  complete with its last result, so Optuna would record a trial stopped at
  epoch 1 as COMPLETE with its epoch-1 value, as if it were a full run. A trial
  that ends without error before ``max_epochs`` was stopped early and is told
  as PRUNED (with every epoch's value as intermediate values): TPE ranks it
  below every completed trial, as ASHA decided, and optuna-dashboard shows it
  as pruned. A completed trial's value is its best epoch's val MAA (the epoch
  whose checkpoint the search keeps); a trial that fails for good is FAIL.
- `FamilyScheduler` (a Tune ``TrialScheduler``): ASHA brackets per family on
  the explicit ``epoch`` counter, or none.
- `TrialEpochBudget`: stops the whole search after a total number of epochs.

Reproducibility: a family's configurations depend only on the seed and on the
order in which its own trials finish. Start and paper points and the sampler's
start-up draws (random, seeded per family) do not depend on it at all; TPE's
later draws and ASHA's stops do, when trials of a family run at the same time.
ASHA's rung records are not saved by Tune, so after ``--resume`` its rungs
start afresh for the trials still to run.

Credentials: the RDB URL's password is never pickled into Tune's state files;
a resumed driver gives it again (``tuning.storage.remember_url``).
"""

from __future__ import annotations

import pickle
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from tuning.spaces import CARRIED_ATTR, POINT_ATTR, FamilyPlan
from tuning.storage import mask_url, unmask_url

ORPHANED_ATTR = "orphaned"
def study_name(experiment: str, family: str) -> str:
    return f"{experiment}.{family}"


def family_seed(seed: int, family: str) -> int:
    """A sampler seed per family that does not depend on which other families are searched."""
    return (seed * 1_000_003 + zlib.crc32(family.encode())) % (2**31)


class FamilyStudies(Searcher):
    """Per-family Optuna studies behind one Tune Searcher (see the module docstring)."""

    def __init__(self, plans: list[FamilyPlan], storage_url: str, experiment: str, max_epochs: int,
                 sampler: str = "optuna", seed: int = 0, metric: str = "val_maa", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.plans = {plan.family: plan for plan in plans}
        self.order = [plan.family for plan in plans]
        self.storage_url = storage_url
        self.experiment = experiment
        self.max_epochs = max_epochs
        self.sampler_kind = sampler
        self.seed = seed
        self.turn = 0
        self.trials: dict[str, tuple[str, int]] = {}  # Tune trial id -> (family, Optuna trial number)
        self.values: dict[str, list[float]] = {}  # Tune trial id -> val MAA per epoch reported
        self.finished: set[str] = set()
        self._studies: dict[str, optuna.Study] = {}
        self._live: dict[str, optuna.trial.Trial] = {}
        self.samplers = {family: self._new_sampler(plan) for family, plan in self.plans.items()}

    # -- state that must not reach a file: the real storage URL and live database handles --------

    def __getstate__(self):
        state = dict(self.__dict__)
        state["storage_url"] = mask_url(self.storage_url)
        state["_studies"], state["_live"] = {}, {}
        return state

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))

    def _url(self) -> str:
        return unmask_url(self.storage_url)

    def study(self, family: str) -> optuna.Study:
        if family not in self._studies:
            self._studies[family] = optuna.create_study(
                study_name=study_name(self.experiment, family),
                storage=self._url(),
                sampler=self.samplers[family],
                direction="maximize" if self.mode == "max" else "minimize",
                load_if_exists=True,
            )
        return self._studies[family]

    def _new_sampler(self, plan: FamilyPlan) -> optuna.samplers.BaseSampler:
        seed = family_seed(self.seed, plan.family)
        if self.sampler_kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Random start-up trials (enqueued points count) before TPE models the family's results:
            # a quarter of its trials, at least 3, at most Optuna's default 10.
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, n_startup_trials=min(10, max(3, (plan.trials + 1) // 4))
            )

    def _trial(self, trial_id: str) -> optuna.trial.Trial:
        """The live Optuna trial of a Tune trial (rebuilt from the storage after a resume)."""
        if trial_id not in self._live:
            family, number = self.trials[trial_id]
            self._live[trial_id] = _optuna_trial(self.study(family), number)
        return self._live[trial_id]

    # -- Tune's Searcher API ----------------------------------------------------------------------

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode are set at construction; the spaces are the plans'

    def suggest(self, trial_id: str) -> dict | str | None:
        for _ in range(len(self.order)):
            family = self.order[self.turn % len(self.order)]
            self.turn += 1
            plan = self.plans[family]
            if plan.done:
                continue
            point = plan.next_point()
            if point == "done":
                plan.done = True
                continue
            return self._ask(trial_id, plan, point)
        return Searcher.FINISHED

    def _ask(self, trial_id: str, plan: FamilyPlan, point) -> dict:
        study = self.study(plan.family)
        kind = None
        if point is not None:
            params, carried, kind = point
            study.enqueue_trial(params, user_attrs={CARRIED_ATTR: carried, POINT_ATTR: kind})
        trial = study.ask()
        values = plan.space(trial)  # draws (or takes the enqueued) values; returns the carried ones
        self.trials[trial_id] = (plan.family, trial.number)
        self._live[trial_id] = trial
        config = {"model": plan.family, "trial": trial.number, plan.family: {**trial.params, **(values or {})}}
        if kind:
            config[POINT_ATTR] = kind
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.trials or trial_id in self.finished or self.metric not in result:
            return
        self.values.setdefault(trial_id, []).append(float(result[self.metric]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an epoch reported again by a retried trial is ignored, with a warning
            self._trial(trial_id).report(float(result[self.metric]), step=int(result.get("epoch", 0)))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.trials or trial_id in self.finished:
            return
        state, value = optuna.trial.TrialState.FAIL, None
        if not error:
            if result and self.metric in result:
                self.on_trial_result(trial_id, result)  # the result that ended it may not have been seen
            epochs = int((result or {}).get("epoch", 0))
            scores = self.values.get(trial_id, [])
            if epochs >= self.max_epochs and scores:
                state, value = optuna.trial.TrialState.COMPLETE, max(scores)
            else:
                state = optuna.trial.TrialState.PRUNED
        family, number = self.trials[trial_id]
        if self.study(family).get_trials(deepcopy=False)[number].state.is_finished():
            # told before a --resume, by a driver whose searcher state Tune had not saved since
            self.finished.add(trial_id)
            return
        try:
            self.study(family).tell(number, value, state=state)
        except Exception as exc:  # noqa: BLE001 - a failed tell must not stop the search
            warnings.warn(f"optuna: could not record trial {trial_id} as {state.name}: {exc}")
        self.finished.add(trial_id)
        self._live.pop(trial_id, None)


@dataclass(frozen=True)
class AshaSettings:
    max_t: int
    grace_period: int
    reduction_factor: float


class FamilyScheduler(FIFOScheduler):
    """Early stopping within each family: one ASHA (on ``epoch``) per family, or none (FIFO)."""

    def __init__(self, asha: AshaSettings | None):
        super().__init__()
        self.asha = asha
        self.schedulers: dict[str, TrialScheduler] = {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._metric, self._mode = metric, mode
        return True

    def _of(self, trial) -> TrialScheduler | None:
        if self.asha is None:
            return None
        family = trial.config.get("model", "")
        if family not in self.schedulers:
            scheduler = ASHAScheduler(
                time_attr="epoch", max_t=self.asha.max_t, grace_period=self.asha.grace_period,
                reduction_factor=self.asha.reduction_factor,
            )
            scheduler.set_search_properties(self._metric, self._mode)
            self.schedulers[family] = scheduler
        return self.schedulers[family]

    def on_trial_add(self, tune_controller, trial):
        if (scheduler := self._of(trial)) is not None:
            scheduler.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        scheduler = self._of(trial)
        if scheduler is None:
            return TrialScheduler.CONTINUE
        try:
            return scheduler.on_trial_result(tune_controller, trial, result)
        except KeyError:  # a trial restored by --resume that ASHA never saw added (rungs are not saved)
            scheduler.on_trial_add(tune_controller, trial)
            return scheduler.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        scheduler = self._of(trial)
        if scheduler is not None and trial.trial_id in getattr(scheduler, "_trial_info", {}):
            scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        scheduler = self._of(trial)
        if scheduler is not None and trial.trial_id in getattr(scheduler, "_trial_info", {}):
            scheduler.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{family}: {s.debug_string()}" for family, s in self.schedulers.items()) or "FIFO"


class TrialEpochBudget(Stopper):
    """Ends the search once its trials have reported `budget` epochs in all (``--max-trial-epochs``).

    Trials still running when the budget is reached are stopped too, so a search
    may overshoot by at most one epoch per running trial. The count starts afresh
    after ``--resume``.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self._epochs: dict[str, int] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        # Count epochs, not calls: Tune calls stoppers again with a finished trial's last result.
        epoch = int(result.get("epoch", 0))
        if epoch > self._epochs.get(trial_id, 0):
            self.used += epoch - self._epochs.get(trial_id, 0)
            self._epochs[trial_id] = epoch
        return False

    def stop_all(self) -> bool:
        return self.used >= self.budget


def _optuna_trial(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """A live handle on trial `number` of `study`, to report to or annotate an earlier trial.

    Optuna's ask() returns this handle; for a trial asked by an earlier driver (a resumed search)
    it is rebuilt from the storage's trial id, which only FrozenTrial knows.
    """
    return optuna.trial.Trial(study, study.get_trials(deepcopy=False)[number]._trial_id)


def close_orphaned_trials(storage_url: str, experiment: str, families: list[str]) -> int:
    """Mark as FAIL the Optuna trials still RUNNING once every Tune trial has ended.

    A driver killed between Optuna's ask and Tune's next experiment snapshot
    leaves a trial in a study that Tune never recorded; after ``--resume`` Tune
    asks for a fresh one instead, and the old one would stay RUNNING for ever
    (and count as in flight for TPE). Returns how many were closed.
    """
    closed = 0
    for family in families:
        try:
            study = optuna.load_study(study_name=study_name(experiment, family), storage=storage_url)
        except KeyError:  # no trial of this family was ever asked for
            continue
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            _optuna_trial(study, trial.number).set_user_attr(
                ORPHANED_ATTR, "asked for by a driver that was interrupted before Tune recorded it"
            )
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            closed += 1
    return closed


def build_search(plans: list[FamilyPlan], storage_url: str, experiment: str, options) -> tuple[Any, Any, Any]:
    """(searcher behind a ConcurrencyLimiter, scheduler, stopper or None) for one search."""
    from ray.tune.search import ConcurrencyLimiter

    from tuning.options import METRIC

    studies = FamilyStudies(plans, storage_url, experiment, options.max_epochs, options.searcher, options.seed, METRIC, "max")
    asha = None
    if options.scheduler == "asha":
        asha = AshaSettings(options.max_epochs, options.grace_period, options.reduction_factor)
    stopper = TrialEpochBudget(options.max_trial_epochs) if options.max_trial_epochs else None
    return ConcurrencyLimiter(studies, max_concurrent=options.max_concurrent), FamilyScheduler(asha), stopper
