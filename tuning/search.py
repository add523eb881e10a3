"""The main job: hyperparameter search over the paper's models with Ray Tune, Optuna and ASHA.

    python -m tuning.search --task skip                      # every model, embedded synthetic data
    python -m tuning.search --task seq --model transformer --data DIR --num-samples 50 --gpus-per-trial 0.5
    python -m tuning.search --task skip --name NAME --resume # continue an interrupted search

One trial trains one configuration of one model family (tuning/trainable.py)
and reports val MAA, the only selection metric, every epoch, with a checkpoint.

- Searcher: Optuna TPE (seeded) through Tune's `OptunaSearch`, or Optuna's
  random sampler (``--searcher random``), over the registry's search spaces
  (tuning/spaces.py); ``--model all`` draws the family first (a conditional
  space). The paper's configurations are the first trials. The study lives in
  an Optuna RDB storage: ``optuna.db`` (SQLite) in the experiment directory, or
  any SQLAlchemy URL (``--optuna-storage postgresql://...``), so
  ``optuna-dashboard`` can watch it live.
- Scheduler: ASHA on the explicit ``epoch`` counter (``--grace-period``,
  ``--reduction-factor``, ``--max-epochs``), or none.
- How ASHA's early stops reach Optuna: Tune tells a searcher that a trial is
  complete with its last result, so by default Optuna would record a trial
  stopped at epoch 1 as COMPLETE with its epoch-1 value, as if it were a full
  run. `StudySearch` tells such a trial as PRUNED instead (with every epoch's
  value as intermediate values). TPE then ranks it below every completed trial
  (and pruned trials among themselves by how far they got, then by value),
  which is what ASHA decided; optuna-dashboard shows it as pruned. A trial that
  fails for good is told as FAIL (OptunaSearch would call it COMPLETE when it
  had reported an epoch before failing).
- Data: every trial gets the prepared directory's path, opened once by the
  driver (validated, baselines), and reads the same parquet shards; nothing is
  copied per trial. Trials stream the train split through Ray Data
  (``--input-path ray``) or, for small data, hold it in memory (``memory``;
  ``auto``, the default, picks memory up to 50K training sessions, because Ray
  Data's start-up per epoch costs more than a small epoch itself).
- Concurrency: a trial reserves ``--cpus-per-trial`` / ``--gpus-per-trial``
  (fractions allowed). Ray Data's read tasks inside a trial need CPUs outside
  the trials' reservations (else the search hangs), so when trials stream, one
  CPU is left free for them and at most (CPUs - 1) / cpus_per_trial trials run
  at once (``--max-concurrent`` overrides).
- Budget: ``--budget small`` (default) searches the lowest third of the model
  size ranges (the paper's configurations scaled down to them), sets small
  sizes and a short pre-training where a family does not search them
  (``BUDGETS["small"]["settings"]``, e.g. BERT: 64-d, 2 layers, 1 pre-training
  epoch over 5,000 sessions), 3 epochs, two trials per model family; ``--budget paper`` the full spaces, 5 epochs (the
  paper's maximum), 20 trials per family; ``--max-trial-epochs N`` caps the
  total epochs trained by all trials.
- Faults: a trial that raises is retried from its latest checkpoint up to
  ``--max-failures`` times; one that fails for good is recorded with its error
  and the search goes on. ``--resume`` continues an interrupted experiment with
  ``Tuner.restore(..., resume_errored=True)``: finished trials are kept, running
  ones resume from their checkpoints, the Optuna study keeps its history. ASHA's
  rung records are not saved by Tune, so after a resume ASHA starts its rungs
  afresh for the trials still to run.

Storage: ``--storage`` is a local or shared path, or a URI that pyarrow opens
(``s3://bucket/experiments``, ``gs://...``). With a URI, Tune writes trial
results and checkpoints there (trials resume on any node), ``search.json`` and
``baselines.json`` go there too (``--resume`` reads them from there), and the
driver keeps a local copy in ``./experiments/<name>``: the Optuna study (unless
``--optuna-storage``), the test results and the report, written after the
experiment is copied down and then copied up beside it. ``--data`` may be a URI
too (data_pipeline/dataset.py); caches of pre-trained embeddings then go to a
node-local folder (``~/.cache/mssd-hpsearch/<fingerprint>``).

At the end the best configuration of each family (its best epoch's checkpoint)
is evaluated once on the test split, the simple baselines are listed beside
them, and tuning/report.py writes the leaderboard, best configs and learning
curves into the experiment directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuning.report import BASELINES_FILE, SEARCH_FILE, TEST_DIR, copy_down, copy_up, is_uri, list_dirs_at, read_text_at
from tuning.spaces import CARRIED_ATTR, SearchSpace, SpaceError, shrink_for_small_budget, widen, without_fixed

TASKS = ("skip", "seq")
METRIC = "val_maa"
OPTUNA_FILE = "optuna.db"
DEFAULT_STORAGE = Path("experiments")

# What --budget sets when the matching flag is not given (and whether model sizes shrink).
BUDGETS = {
    # A laptop-sized search (2 CPU cores, about 10 minutes over every family on the
    # embedded synthetic data): small model sizes, a few epochs, two trials per family.
    "small": {
        "max_epochs": 3, "trials_per_family": 2, "grace_period": 1, "reduction_factor": 3, "shrink": True,
        # Fields a family does not search, set in every trial of the families that have them:
        # small BERTs pre-trained briefly (the full Cloze pre-training alone takes many minutes here).
        "settings": {
            "embedding_dim": 64, "num_layers": 2, "ffn_dim": 256,  # bert (the paper: 256, 4, 1024)
            "bert_embedding_dim": 64, "bert_num_layers": 2, "bert_ffn_dim": 256,  # bert_fused's BERT, the same one
            "pretrain_epochs": 1, "pretrain_max_sessions": 5000,  # Cloze pre-training (the default: 5, every session)
        },
    },
    # The paper's scale: full search spaces, its 5-epoch maximum, 20 trials per family.
    "paper": {"max_epochs": 5, "trials_per_family": 20, "grace_period": 1, "reduction_factor": 2, "shrink": False, "settings": {}},
}
# Config fields that set a model's size; `--budget small` searches the lowest part of their ranges.
SIZE_FIELDS = {"hidden_size", "embedding_dim", "embedding_size", "ffn_dim", "num_layers"}


# Up to this many training sessions a trial holds the train split in memory (--input-path auto):
# on small data Ray Data's per-epoch start-up costs more than the epoch itself (measured on
# 2 cores: 3K sessions, 15 s per epoch streamed vs 0.4 s in memory); above it, trials stream.
MEMORY_INPUT_MAX_SESSIONS = 50_000


UNLIMITED_TRIALS = 100_000  # --num-samples when only --max-trial-epochs bounds the search


class UsageError(ValueError):
    """A bad command line or setting, found before any trial starts (exit status 2)."""


# ---------------------------------------------------------------------------
# model families
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """What the search needs to know about one model family (registry or rl.spec)."""

    name: str
    tasks: tuple[str, ...]
    search_space: dict[str, tuple]
    paper_configs: dict[str, dict[str, Any]]
    fields: frozenset[str]


def known_families() -> dict[str, Family]:
    """Every searchable family: the registry's models, then ``ddpg`` when rl/spec.py exists."""
    from models.registry import MODELS
    from tuning.trainer import TrainerOptions

    # trainer options (cache_train, shuffle_buffer, grad_clip, ...) can be pinned with --fix like model fields
    options = frozenset(f.name for f in dataclasses.fields(TrainerOptions))
    families = {
        name: Family(
            name,
            tuple(spec.tasks),
            dict(spec.search_space),
            dict(spec.paper_configs),
            frozenset(f.name for f in dataclasses.fields(spec.config_cls)) | options,
        )
        for name, spec in MODELS.items()
    }
    try:
        from rl import spec as rl_spec
    except ImportError:
        return families
    families[rl_spec.NAME] = Family(
        rl_spec.NAME,
        tuple(rl_spec.TASKS),
        dict(rl_spec.SEARCH_SPACE),
        dict(rl_spec.PAPER_CONFIGS),
        frozenset(f.name for f in dataclasses.fields(rl_spec.DDPGModelConfig)),
    )
    return families


def resolve_families(task: str, model: str, families: dict[str, Family] | None = None) -> list[Family]:
    """The families a search covers: one by name, or every family that supports `task` for ``all``.

    `families` defaults to `known_families()`.
    """
    families = known_families() if families is None else families
    if model == "all":
        chosen = [f for f in families.values() if task in f.tasks]
        if not chosen:
            raise UsageError(f"no model supports task {task!r}")
        return chosen
    if model not in families:
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(families)} or all")
    family = families[model]
    if task not in family.tasks:
        raise UsageError(f"model {model!r} does not support task {task!r} (it supports {', '.join(family.tasks)})")
    return [family]


# ---------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------


@dataclass
class SearchOptions:
    """Everything one search needs; the command line fills it (see `build_parser`)."""

    task: str
    model: str = "all"
    data: str | None = None
    protocol: str = "paper"
    budget: str = "small"
    num_samples: int | None = None
    max_epochs: int | None = None
    grace_period: int | None = None
    reduction_factor: float | None = None
    max_trial_epochs: int | None = None
    scheduler: str = "asha"
    searcher: str = "optuna"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2
    input_path: str = "auto"
    device: str = "auto"
    address: str | None = None
    storage: str | None = None
    optuna_storage: str | None = None
    name: str | None = None
    resume: bool = False
    seed: int = 0
    fix: dict[str, Any] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    baselines: bool = True
    test: bool = True
    # Fault drills for tests (tuning/trainable.py); never set from the command line.
    hooks: dict[str, Any] = field(default_factory=dict)

    def resolved(self, n_families: int) -> "SearchOptions":
        """A copy with the budget's defaults filled in for the flags left unset."""
        budget = BUDGETS[self.budget]
        out = dataclasses.replace(self)
        out.max_epochs = self.max_epochs or budget["max_epochs"]
        out.grace_period = self.grace_period or min(budget["grace_period"], out.max_epochs)
        out.reduction_factor = self.reduction_factor or budget["reduction_factor"]
        if self.num_samples:
            out.num_samples = self.num_samples
        elif self.max_trial_epochs:
            out.num_samples = UNLIMITED_TRIALS
        else:
            out.num_samples = budget["trials_per_family"] * n_families
        return out


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except for on/off switches, where "default: True" would mislead."""

    def _get_help_string(self, action):
        if isinstance(action, (argparse._StoreFalseAction, argparse._StoreTrueAction)):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.search",
        description=(
            "Hyperparameter search for the paper's models on Ray Tune (Optuna TPE + ASHA). "
            "With only --task it searches every model on the embedded synthetic dataset with a "
            "laptop-sized budget, lists the simple baselines, and prints the leaderboard."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="skip prediction or next-10-tracks")
    parser.add_argument("--model", default="all", help="a model name (lstm, transformer, ...) or all: every model that supports the task")
    parser.add_argument("--data", help="prepared dataset directory, or its s3:// / gs:// URI (default: the embedded synthetic set, made on first use)")
    parser.add_argument("--protocol", default="paper", choices=["paper", "challenge"],
                        help="paper: 20-track sessions, 10 in / 10 out; challenge: all sessions, T = ceil(L/2)")
    parser.add_argument("--budget", default="small", choices=list(BUDGETS),
                        help="small: small model sizes, 3 epochs, 2 trials per model (minutes on a laptop); "
                        "paper: full spaces, 5 epochs, 20 trials per model. Explicit flags override it")
    parser.add_argument("--num-samples", type=int, help="trials in all (default: from --budget, per model family)")
    parser.add_argument("--max-epochs", type=int, help="epochs of a trial that is not stopped early (default: from --budget)")
    parser.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial can be stopped (default: from --budget)")
    parser.add_argument("--reduction-factor", type=float, help="ASHA: keep 1/R of the trials at each rung (default: from --budget)")
    parser.add_argument("--max-trial-epochs", type=int,
                        help="total budget: stop the search once its trials have trained this many epochs in all "
                        "(--num-samples then defaults to no limit); counted afresh after --resume")
    parser.add_argument("--scheduler", default="asha", choices=["asha", "none"], help="early stopping")
    parser.add_argument("--searcher", default="optuna", choices=["optuna", "random"], help="Optuna TPE or random sampling")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved by each trial")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs reserved by each trial (fractions share a GPU)")
    parser.add_argument("--max-concurrent", type=int,
                        help="trials at once (default: what the cluster holds, one CPU left for Ray Data)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial, each from its latest checkpoint")
    parser.add_argument("--input-path", default="auto", choices=["auto", "ray", "memory"],
                        help="trials stream the train split through Ray Data, or hold it in memory; auto: memory "
                        f"up to {MEMORY_INPUT_MAX_SESSIONS:,} training sessions, Ray Data above")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when the trial has a GPU")
    parser.add_argument("--address", help="Ray cluster to join (auto, or host:port; default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage", help=f"where experiments live: a shared path or s3:// / gs:// URI (default: ./{DEFAULT_STORAGE})")
    parser.add_argument("--optuna-storage", help="SQLAlchemy URL of the Optuna study (default: sqlite:///EXPERIMENT/optuna.db)")
    parser.add_argument("--name", help="experiment name (default: <task>-<model>-<UTC time>); with --resume, the one to continue")
    parser.add_argument("--resume", action="store_true", help="continue the experiment --name (default: the latest of --task)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial")
    parser.add_argument("--fix", action="append", default=[], metavar="FIELD=VALUE",
                        help="pin a config field or trainer option in every trial instead of searching it, "
                        "e.g. --fix use_context=true, --fix cache_train=never (repeatable)")
    parser.add_argument("--points", type=Path, metavar="FILE.json",
                        help='configurations to try first, before the paper\'s: a JSON list of {"model": NAME, FIELD: VALUE, ...}')
    parser.add_argument("--no-baselines", dest="baselines", action="store_false", help="do not score the simple baselines")
    parser.add_argument("--no-test", dest="test", action="store_false", help="do not evaluate the winners on the test split")
    return parser


def parse_options(argv: list[str] | None = None) -> SearchOptions:
    """Options from the command line; a malformed value raises UsageError."""
    from tuning.config_io import ConfigError, parse_overrides

    args = build_parser().parse_args(argv)
    try:
        fixed = parse_overrides(args.fix)
    except ConfigError as error:
        raise UsageError(str(error).replace("--set", "--fix")) from None
    points = []
    if args.points is not None:
        try:
            points = json.loads(args.points.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"--points {args.points}: cannot read a JSON list ({error})") from None
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise UsageError(f"--points {args.points}: expected a JSON list of objects")
    values = {k: v for k, v in vars(args).items() if k not in ("fix", "points")}
    return SearchOptions(**values, fix=fixed, points=points)


def check_options(options: SearchOptions) -> None:
    """Reject impossible numbers with one sentence each."""
    positive = {
        "--num-samples": options.num_samples,
        "--max-epochs": options.max_epochs,
        "--grace-period": options.grace_period,
        "--max-concurrent": options.max_concurrent,
        "--max-trial-epochs": options.max_trial_epochs,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    if options.reduction_factor is not None and options.reduction_factor <= 1:
        raise UsageError(f"--reduction-factor {options.reduction_factor}: must be greater than 1")
    if options.grace_period and options.max_epochs and options.grace_period > options.max_epochs:
        raise UsageError(f"--grace-period {options.grace_period} is longer than --max-epochs {options.max_epochs}")
    if options.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial {options.cpus_per_trial}: must be positive")
    if options.gpus_per_trial < 0 or (options.gpus_per_trial > 1 and options.gpus_per_trial != int(options.gpus_per_trial)):
        raise UsageError(f"--gpus-per-trial {options.gpus_per_trial}: use a fraction of one GPU or a whole number")
    if options.max_failures < 0:
        raise UsageError(f"--max-failures {options.max_failures}: must be 0 or more")
    if options.device == "cuda" and options.gpus_per_trial == 0:
        raise UsageError("--device cuda needs --gpus-per-trial > 0, or each trial would see no GPU")


def check_fixed(fixed: dict[str, Any], families: list[Family]) -> None:
    """Every --fix field must be a config field of at least one family searched."""
    for name in fixed:
        if not any(name in f.fields for f in families):
            fields = sorted(set().union(*(f.fields for f in families)))
            raise UsageError(f"--fix {name}: not a config field of {', '.join(f.name for f in families)} (fields: {', '.join(fields)})")


def check_data(data: str | None):
    """(prepared directory, PreparedDataset) for --data, checked; None when the default set is used."""
    from data_pipeline.dataset import open_prepared
    from data_pipeline.schema import SchemaError

    if data is None:
        return None
    if is_uri(data):
        # s3://, gs://, file://: read through pyarrow.fs (no exists()/resolve(), which only know local paths)
        try:
            return data.rstrip("/"), open_prepared(data)
        except SchemaError as error:
            raise UsageError(str(error)) from None
        except OSError as error:  # unreachable bucket, missing credentials
            raise UsageError(f"--data {data}: cannot read it ({error})") from None
    path = Path(data).expanduser()
    if not path.exists():
        raise UsageError(f"--data {data}: no such directory; prepare one with `python -m data_pipeline.prepare --raw RAW --out {data}`")
    try:
        return path.resolve(), open_prepared(path)
    except SchemaError as error:
        raise UsageError(str(error)) from None


# Families that read the prepared data only as a local path (rl/trainer.py builds Path(data_dir)).
LOCAL_DATA_ONLY = ("ddpg",)


def data_families(families: list[Family], options: SearchOptions) -> list[Family]:
    """The families that can read --data: with a URI, those that read only local paths are left out."""
    if not (options.data and is_uri(options.data)):
        return families
    kept = [f for f in families if f.name not in LOCAL_DATA_ONLY]
    dropped = [f.name for f in families if f.name in LOCAL_DATA_ONLY]
    if not kept:
        raise UsageError(
            f"--model {options.model} reads the prepared data only from a local or shared path, not from "
            f"--data {options.data}; copy it to a shared path (e.g. `aws s3 sync` / `gsutil rsync`) and give that"
        )
    if dropped:
        print(f"note: {', '.join(dropped)} left out: it reads the prepared data only from a local or shared path, "
              f"not from --data {options.data}", flush=True)
    return kept


def default_data():
    """(prepared directory, PreparedDataset) of the embedded synthetic set, made on first use.

    Called once Ray is up, so that preparing it runs on the search's own Ray instance.
    """
    from data_pipeline.dataset import open_prepared
    from data_pipeline.default import default_dataset

    print("data: the embedded synthetic dataset (generated and prepared on first use)", flush=True)
    path = Path(default_dataset()).resolve()
    return path, open_prepared(path)


# ---------------------------------------------------------------------------
# Optuna searcher and Tune pieces
# ---------------------------------------------------------------------------


def _optuna_search_class():
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that tells trials stopped early (by ASHA) as PRUNED and failed ones as FAIL.

        A trial that ends without error before `max_epochs` epochs was stopped by
        the scheduler; see the module docstring for why Optuna sees it as pruned.
        The paper's configurations are enqueued with the fields the space does not
        draw carried along (tuning.spaces.SearchSpace.point); ``skip_if_exists``
        keeps a resumed or reused study from running them twice.
        """

        def __init__(self, *args, max_epochs: int, points: list[tuple[dict, dict]] = (), **kwargs):
            super().__init__(*args, **kwargs)
            self._max_epochs = max_epochs
            for params, carried in points:
                self._ot_study.enqueue_trial(params, user_attrs={CARRIED_ATTR: carried}, skip_if_exists=True)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            import optuna

            epochs = int((result or {}).get("epoch", 0))
            if trial_id in self._completed_trials or (not error and (not result or epochs >= self._max_epochs)):
                return super().on_trial_complete(trial_id, result, error)
            if error:
                # OptunaSearch would record a trial that failed after reporting as COMPLETE.
                state = optuna.trial.TrialState.FAIL
            else:
                # The result that made ASHA stop the trial never went through on_trial_result:
                # record it as the last intermediate value, which Optuna keeps as the pruned value.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a step already reported is ignored, with a warning
                    self.on_trial_result(trial_id, result)
                state = optuna.trial.TrialState.PRUNED
            try:
                self._ot_study.tell(self._ot_trials[trial_id], state=state)
            except Exception as exc:  # noqa: BLE001 - as OptunaSearch: a failed tell must not stop the search
                warnings.warn(f"optuna: could not record trial {trial_id} as {state.name}: {exc}")
            self._completed_trials.add(trial_id)

    return StudySearch


ORPHANED_ATTR = "orphaned"


def close_orphaned_trials(storage_url: str, study_name: str) -> int:
    """Mark as FAIL the Optuna trials still RUNNING once every Tune trial has ended.

    A driver killed between Optuna's ask and Tune's next experiment snapshot
    leaves a trial in the study that Tune never recorded; after ``--resume``
    Tune asks for a fresh one instead, and the old one would stay RUNNING for
    ever (and count as in flight for TPE). Returns how many were closed.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage_url)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study._storage.set_trial_user_attr(trial._trial_id, ORPHANED_ATTR, "asked for by a driver that was interrupted before Tune recorded it")
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if running:
        print(f"optuna: {len(running)} trial(s) left RUNNING by an interrupted driver marked FAIL ({ORPHANED_ATTR})", flush=True)
    return len(running)


def build_searcher(options: SearchOptions, space: SearchSpace, points, storage_url: str, study_name: str):
    """The Optuna searcher (TPE or random, seeded, RDB storage) behind a ConcurrencyLimiter."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if options.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=options.seed)
    else:
        # multivariate + group: TPE models each family's fields jointly, per branch of the conditional space.
        sampler = optuna.samplers.TPESampler(
            seed=options.seed,
            multivariate=True,
            group=len(space.families) > 1,
            # Random start-up trials before TPE models the results: a quarter of the trials
            # expected (at most Optuna's default 10), at least one per family plus one.
            n_startup_trials=min(10, max(len(space.families) + 1, expected_trials(options) // 4)),
        )
    storage = optuna.storages.RDBStorage(storage_url)
    searcher = _optuna_search_class()(
        space,
        metric=METRIC,
        mode="max",
        sampler=sampler,
        study_name=study_name,
        storage=storage,
        max_epochs=options.max_epochs,
        points=points[: options.num_samples],  # more would wait in the study forever
    )
    return ConcurrencyLimiter(searcher, max_concurrent=options.max_concurrent)


def expected_trials(options: SearchOptions) -> int:
    """Trials the search will run: --num-samples, or about what --max-trial-epochs allows."""
    if options.max_trial_epochs and options.num_samples >= UNLIMITED_TRIALS:
        shortest = options.grace_period if options.scheduler == "asha" else options.max_epochs
        return max(1, options.max_trial_epochs // max(1, shortest))
    return options.num_samples


def build_scheduler(options: SearchOptions):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if options.scheduler == "none":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        max_t=options.max_epochs,
        grace_period=options.grace_period,
        reduction_factor=options.reduction_factor,
    )


def trial_dirname(trial) -> str:
    """Short trial directory names: <model>_<trial id>."""
    return f"{trial.config.get('model', 'trial')}_{trial.trial_id}"


def trial_name(trial) -> str:
    return f"{trial.config.get('model', 'trial')}_{trial.trial_id}"


def search_space_for(families: list[Family], options: SearchOptions) -> tuple[SearchSpace, list, dict]:
    """(define-by-run space, points to enqueue: --points then the paper's, fixed fields per family)."""
    spaces, fixed = {}, {}
    for family in families:
        space = without_fixed(family.search_space, options.fix)
        if BUDGETS[options.budget]["shrink"]:
            space = shrink_for_small_budget(space, SIZE_FIELDS)
        spaces[family.name] = space
        settings = {k: v for k, v in BUDGETS[options.budget]["settings"].items() if k in family.fields and k not in space}
        fixed[family.name] = {**settings, **{k: v for k, v in options.fix.items() if k in family.fields}}
    chosen = []  # (family, values): --points first, then the paper's configurations
    by_name = {f.name: f for f in families}
    for number, given in enumerate(options.points, 1):
        given = dict(given)
        name = given.pop("model", families[0].name if len(families) == 1 else None)
        if name not in by_name:
            raise UsageError(f"--points entry {number}: model {name!r} is not searched here ({', '.join(by_name)})")
        unknown = sorted(set(given) - by_name[name].fields)
        if unknown:
            raise UsageError(f"--points entry {number}: {', '.join(unknown)} not config fields of {name}")
        chosen.append((name, {k: v for k, v in given.items() if k not in options.fix}))
    for family in families:
        paper = family.paper_configs.get(options.task)
        if paper:
            paper = {k: v for k, v in paper.items() if k not in options.fix}
            if BUDGETS[options.budget]["shrink"]:
                paper = scale_down(paper, spaces[family.name])
            chosen.append((family.name, paper))
    # The space contains every point evaluated first (Optuna rejects a categorical value outside it).
    for name, values in chosen:
        spaces[name] = widen(spaces[name], values)
    try:
        search_space = SearchSpace(spaces)
    except SpaceError as error:
        raise UsageError(str(error)) from None
    points = [search_space.point(name, values) for name, values in chosen]
    return search_space, points, fixed


def scale_down(config: dict, space: dict[str, tuple]) -> dict:
    """A paper configuration with its size fields clipped to the small budget's ranges."""
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


def default_concurrency(options: SearchOptions, cpus: float, gpus: float) -> int:
    """Trials at once: CPUs less one for Ray Data over CPUs per trial, and GPUs over GPUs per trial."""
    spare = 1 if options.input_path == "ray" and cpus > options.cpus_per_trial else 0
    by_cpu = int((cpus - spare) // options.cpus_per_trial)
    limit = by_cpu
    if options.gpus_per_trial > 0:
        limit = min(limit, int(round(gpus / options.gpus_per_trial, 6) // 1))
    return max(1, limit)


# ---------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------


def experiment_root(storage: str | None) -> str:
    """The storage root as Tune wants it: an absolute path or a URI."""
    if storage and is_uri(storage):
        return storage.rstrip("/")
    return str(Path(storage or DEFAULT_STORAGE).expanduser().resolve())


def local_experiment_dir(root: str, name: str) -> Path:
    """Where the driver writes the experiment's own files: in the storage, or ./experiments/<name> for a URI."""
    return Path(root) / name if not is_uri(root) else Path(DEFAULT_STORAGE).resolve() / name


def read_search_meta(root: str, name: str) -> tuple[str, dict | None]:
    """(where search.json is, its content or None when absent) for experiment `name` under `root`."""
    if is_uri(root):
        where = f"{root}/{name}/{SEARCH_FILE}"
        try:
            text = read_text_at(where)
        except (OSError, ValueError) as error:
            raise UsageError(f"--storage {root}: cannot read {where} ({error})") from None
        return where, json.loads(text) if text is not None else None
    path = Path(root) / name / SEARCH_FILE
    return str(path), json.loads(path.read_text()) if path.exists() else None


def latest_experiment(root: str, task: str) -> str | None:
    """The most recently started experiment of `task` under `root` (a path or a URI), for a bare --resume."""
    if is_uri(root):
        try:
            names = list_dirs_at(root)
        except (OSError, ValueError) as error:
            raise UsageError(f"--storage {root}: cannot list it ({error})") from None
        metas = ((name, lambda name=name: read_text_at(f"{root}/{name}/{SEARCH_FILE}")) for name in names)
    else:
        metas = ((m.parent.name, m.read_text) for m in Path(root).glob(f"*/{SEARCH_FILE}"))
    candidates = []
    for name, read in metas:
        try:
            saved = json.loads(read() or "{}")
        except (OSError, json.JSONDecodeError):
            continue
        if saved.get("options", {}).get("task") == task:
            candidates.append((saved.get("started", ""), name))
    return max(candidates)[1] if candidates else None


def evaluate_baselines(task: str, data_dir: Path | str, protocol: str) -> list[dict]:
    """Every simple baseline of `task`, fitted on train, scored on val and test."""
    from models.baselines import BASELINES
    from tuning.trainer import evaluate_baseline

    rows = []
    for name in BASELINES[task]:
        start = time.perf_counter()
        val = evaluate_baseline(task, name, data_dir, "val", protocol)
        test = evaluate_baseline(task, name, data_dir, "test", protocol)
        rows.append({"name": name, "val": val, "test": test, "seconds": time.perf_counter() - start})
        print(f"  baseline {name:>18}: val MAA {val['maa']:.4f}  test MAA {test['maa']:.4f}", flush=True)
    return rows


def _evaluate_checkpoint_on_test(checkpoint, family: str, data_dir: str, device: str) -> dict:
    """Restore a trial checkpoint and score it on the test split (runs as a Ray task)."""
    from tuning.trainable import TRAINER_DIR, TRIAL_STATE, restore_trainer

    with checkpoint.as_directory() as directory:
        state = json.loads((Path(directory) / TRIAL_STATE).read_text())
        trainer = restore_trainer(family, Path(directory) / TRAINER_DIR, data_dir, device)
        test = trainer.evaluate("test")
    return {"state": state, "test": test}


def evaluate_winners(results, options: SearchOptions, data_dir: Path | str, exp_dir: Path) -> list[dict]:
    """The best epoch of the best trial of each family, evaluated once on the test split."""
    import ray

    best: dict[str, tuple[float, Any, Any]] = {}
    for result in results:
        family = (result.config or {}).get("model")
        for checkpoint, metrics in result.best_checkpoints or []:
            value = metrics.get(METRIC)
            if family is None or value is None or not math.isfinite(value):
                continue
            if family not in best or value > best[family][0]:
                best[family] = (value, checkpoint, result)
    evaluate = ray.remote(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial)(_evaluate_checkpoint_on_test)
    pending = {
        family: evaluate.remote(checkpoint, family, str(data_dir), options.device)
        for family, (_, checkpoint, _) in sorted(best.items())
    }
    out_dir = exp_dir / TEST_DIR
    out_dir.mkdir(exist_ok=True)
    rows = []
    for family, ref in pending.items():
        value, checkpoint, result = best[family]
        try:
            evaluated = ray.get(ref)
        except Exception as error:  # noqa: BLE001 - one broken winner must not hide the others
            print(f"  {family}: test evaluation failed: {error}", file=sys.stderr)
            continue
        row = {
            "model": family,
            "trial_id": result.metrics.get("trial_id", Path(result.path).name),
            "checkpoint": checkpoint.path,
            "epoch": evaluated["state"]["epoch"],
            "val": evaluated["state"]["val"],
            "config": evaluated["state"]["config"],
            "test": evaluated["test"],
        }
        (out_dir / f"{family}.json").write_text(json.dumps(row, indent=2))
        rows.append(row)
        print(f"  {family:>12}: val MAA {value:.4f} (epoch {row['epoch']})  test MAA {row['test']['maa']:.4f}", flush=True)
    return rows


def run_search(options: SearchOptions) -> Path:
    """Run (or resume) one search end to end; returns the experiment directory.

    Raises UsageError for bad settings and for a cluster that cannot be reached,
    before any trial starts.
    """
    from tuning.cluster import ClusterError, connect, describe

    root = experiment_root(options.storage)
    if options.resume:
        name = options.name or latest_experiment(root, options.task)
        if name is None:
            raise UsageError(f"--resume: no experiment of task {options.task!r} under {root}; name one with --name")
        meta_path, saved = read_search_meta(root, name)
        if saved is None:
            raise UsageError(f"--resume: {meta_path} not found; is --name {name} an experiment started by tuning.search?")
        resumed = SearchOptions(**saved["options"])
        # Where to run may change on resume; what to search may not.
        resumed.address, resumed.storage, resumed.name, resumed.resume = options.address, options.storage, name, True
        resumed.hooks = options.hooks
        options = resumed
    check_options(options)
    families = data_families(resolve_families(options.task, options.model), options)
    check_fixed(options.fix, families)
    options = options.resolved(len(families))
    check_options(options)
    space, points, fixed = search_space_for(families, options)
    given = check_data(options.data)

    try:
        info = connect(options.address)
    except ClusterError as error:
        raise UsageError(str(error)) from None
    print(describe(info), flush=True)
    if options.gpus_per_trial > 0 and info.gpus == 0:
        raise UsageError(
            f"--gpus-per-trial {options.gpus_per_trial} asked for, but the Ray cluster has no GPU "
            "(start GPU workers first, or drop --gpus-per-trial)"
        )
    if options.cpus_per_trial > info.cpus:
        raise UsageError(f"--cpus-per-trial {options.cpus_per_trial} is more than the cluster's {info.cpus:g} CPUs")
    data_dir, dataset = given or default_data()
    if options.input_path == "auto":
        options.input_path = "memory" if dataset.num_sessions("train") <= MEMORY_INPUT_MAX_SESSIONS else "ray"
    if options.max_concurrent is None:
        options.max_concurrent = default_concurrency(options, info.cpus, info.gpus)

    name = options.name or f"{options.task}-{options.model}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    options.name = name
    exp_dir = local_experiment_dir(root, name)
    remote_dir = f"{root}/{name}" if is_uri(root) else None
    if remote_dir and options.resume:
        # search.json, baselines.json, test results, and the Optuna study as copied up at the end of the
        # last run, when this machine has none of its own (a local copy is newer than the one copied up)
        missing = tuple(f for f in (SEARCH_FILE, BASELINES_FILE, TEST_DIR, OPTUNA_FILE) if not (exp_dir / f).exists())
        if missing:
            copy_down(remote_dir, exp_dir, only=missing)
    exp_dir.mkdir(parents=True, exist_ok=True)
    storage_url = options.optuna_storage or f"sqlite:///{exp_dir / OPTUNA_FILE}"

    if not options.resume:
        meta = {
            "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "hooks"},
            "families": [f.name for f in families],
            "data_dir": str(data_dir),
            "data_fingerprint": dataset.fingerprint,
            "optuna_storage": storage_url,
            "study_name": name,
            "search_space": {k: {f: list(v) for f, v in s.items()} for k, s in space.spaces.items()},
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (exp_dir / SEARCH_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if remote_dir:
            try:
                copy_up(exp_dir / SEARCH_FILE, f"{remote_dir}/{SEARCH_FILE}")  # what --resume reads
            except (OSError, ValueError) as error:  # pyarrow: no bucket, no credentials, bad URI
                raise UsageError(f"--storage {root}: cannot write {remote_dir}/{SEARCH_FILE} ({error})") from None
    print(
        f"search: task {options.task}, models {', '.join(space.families)}, {options.num_samples} trials of up to "
        f"{options.max_epochs} epochs, {options.searcher} sampler, scheduler {options.scheduler}, "
        f"{options.max_concurrent} at a time ({options.cpus_per_trial:g} CPU"
        f"{f' + {options.gpus_per_trial:g} GPU' if options.gpus_per_trial else ''} each), budget {options.budget}",
        flush=True,
    )
    if remote_dir:
        print(f"experiment: {remote_dir} (trials, checkpoints); local copy and report: {exp_dir}", flush=True)
    else:
        print(f"experiment: {exp_dir}", flush=True)
    print(f"  TensorBoard:      tensorboard --logdir {remote_dir or exp_dir}", flush=True)
    print(f"  optuna-dashboard: optuna-dashboard {storage_url}", flush=True)

    if options.baselines and not (exp_dir / BASELINES_FILE).exists():
        print("baselines (fitted on train, scored on val and test):", flush=True)
        rows = evaluate_baselines(options.task, data_dir, options.protocol)
        (exp_dir / BASELINES_FILE).write_text(json.dumps(rows, indent=2))
        if remote_dir:
            copy_up(exp_dir / BASELINES_FILE, f"{remote_dir}/{BASELINES_FILE}")

    results = fit(options, space, points, fixed, data_dir, root, name, storage_url, exp_dir)
    if remote_dir:
        print(f"copying {remote_dir} (all but checkpoints) down to {exp_dir} for the report", flush=True)
        copy_down(remote_dir, exp_dir)
    from tuning.report import generate, load_experiment

    unfinished = [t for t in load_experiment(exp_dir).trials if t.status in ("interrupted", "pending", "unknown")]
    errors = [r for r in results if r.error is not None]
    print(f"search {'interrupted' if unfinished else 'done'}: {len(results)} trials, {len(errors)} failed for good", flush=True)
    if unfinished:
        print(f"  {len(unfinished)} trials unfinished: continue with --task {options.task} --name {name} --resume "
              "(the test split is evaluated when the search completes)", flush=True)
    else:
        close_orphaned_trials(storage_url, name)
        if options.test:
            print("winners of each model family on the test split (evaluated once):", flush=True)
            evaluate_winners(results, options, data_dir, exp_dir)

    paths = generate(exp_dir)
    print()
    print(paths["leaderboard_md"].read_text())
    print(f"files in {exp_dir}:")
    for label, path in paths.items():
        print(f"  {label}: {path}")
    if remote_dir:
        # The report, test results and Optuna study beside the trials, for whoever resumes or reads it next.
        uploads = [*paths.values(), exp_dir / TEST_DIR]
        if not options.optuna_storage:
            uploads.append(exp_dir / OPTUNA_FILE)
        for path in uploads:
            if path.exists():
                copy_up(path, f"{remote_dir}/{path.relative_to(exp_dir).as_posix()}")
        print(f"report copied up to {remote_dir}", flush=True)
    return exp_dir


def fit(options: SearchOptions, space, points, fixed, data_dir: Path | str, root: str, name: str, storage_url: str, exp_dir: Path):
    """Build (or restore) the Tuner and run it; returns Tune's ResultGrid."""
    from ray import tune

    from tuning.stoppers import TrialEpochBudget
    from tuning.trainable import train_trial

    trainable = tune.with_resources(train_trial, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
    experiment_path = f"{root.rstrip('/')}/{name}"
    if options.resume and tune.Tuner.can_restore(experiment_path):
        print(f"resuming {experiment_path}", flush=True)
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_errored=True)
        return tuner.fit()

    param_space = {
        "task": options.task,
        "data_dir": str(data_dir),
        "protocol": options.protocol,
        "max_epochs": options.max_epochs,
        "seed": options.seed,
        "device": options.device,
        "input_path": options.input_path,
        # <data>/cache; for data at a URI each trial picks a node-local folder (PreparedDataset.cache_dir)
        "cache_dir": None if is_uri(data_dir) else str(data_dir / "cache"),
        "fixed": fixed,
        "hooks": dict(options.hooks),
    }
    if len(space.families) == 1:
        param_space["model"] = space.families[0]
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=build_searcher(options, space, points, storage_url, study_name=name),
            scheduler=build_scheduler(options),
            metric=METRIC,
            mode="max",
            num_samples=options.num_samples,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=root,
            stop=TrialEpochBudget(options.max_trial_epochs) if options.max_trial_epochs else None,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            # Keep the best epoch (for the test evaluation) and, always, the latest (for retries).
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="max"
            ),
            verbose=1,
        ),
    )
    return tuner.fit()


def main(argv: list[str] | None = None) -> int:
    # Tune snapshots the experiment state whenever a trial checkpoints (CheckpointConfig(num_to_keep)),
    # which is what --resume relies on; its warning about snapshot frequency is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        options = parse_options(argv)
        run_search(options)
    except UsageError as error:
        print(f"tuning.search: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tuning.search: interrupted; continue with --resume --name NAME", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
