"""What one search does: `SearchOptions`, the budgets, the command line, and checks that fail at once.

Every check here runs before Ray starts or any file is written; a failure is a
`UsageError` whose message ``tuning.search`` prints as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline.tasks import TASKS

METRIC = "val_maa"  # the only selection metric
DEFAULT_STORAGE = Path("experiments")


class UsageError(ValueError):
    """A bad command line or setting, found before any trial starts (exit status 2)."""


@dataclass(frozen=True)
class Budget:
    """What --budget sets when the matching flag is not given."""

    max_epochs: int
    trials_per_family: int  # searched trials per family; each family also runs its paper configuration
    grace_period: int
    reduction_factor: float
    shrink_sizes: bool  # search the lowest third of the model-size ranges, pin the families' small settings


BUDGETS = {
    # Laptop-sized (the main job: ~5 minutes on 2 CPU cores over every family on the embedded synthetic
    # data): small models, 3 epochs, two searched trials per family plus its paper configuration.
    "small": Budget(max_epochs=3, trials_per_family=2, grace_period=1, reduction_factor=3, shrink_sizes=True),
    # The paper's scale: full spaces, its 5-epoch maximum, 20 searched trials per family.
    "paper": Budget(max_epochs=5, trials_per_family=20, grace_period=1, reduction_factor=2, shrink_sizes=False),
}
SCHEDULERS = ("asha", "none")
SEARCHERS = ("optuna", "random")
SAMPLER_NAMES = {"optuna": "TPE", "random": "random"}
INPUT_PATHS = ("auto", "ray", "memory")
# Up to this many training sessions a trial holds the train split in memory (--input-path auto):
# on small data Ray Data's per-epoch start-up costs more than the epoch itself (measured on
# 2 cores: 3K sessions, 15 s per epoch streamed vs 0.4 s in memory); above it, trials stream.
MEMORY_INPUT_MAX_SESSIONS = 50_000
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class SearchOptions:
    """Everything one search needs; the command line fills it (see `build_parser`)."""

    task: str
    model: str = "all"
    data: str | None = None
    protocol: str = "paper"
    budget: str = "small"
    trials_per_family: int | None = None
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
    paper_configs: bool = True
    baselines: bool = True
    test: bool = True
    verbose: bool = False
    # Fault drills for tests (tuning/trainable.py); never set from the command line.
    hooks: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> "SearchOptions":
        """A copy with the budget's defaults filled in for the flags left unset."""
        budget = BUDGETS[self.budget]
        out = dataclasses.replace(self)
        out.max_epochs = self.max_epochs or budget.max_epochs
        out.grace_period = self.grace_period or min(budget.grace_period, out.max_epochs)
        out.reduction_factor = self.reduction_factor or budget.reduction_factor
        out.trials_per_family = self.trials_per_family or budget.trials_per_family
        return out

    def saved(self) -> dict:
        """The options as written to search.json (what --resume reads back): no fault drills, no secrets."""
        from tuning.storage import mask_url

        values = {k: v for k, v in dataclasses.asdict(self).items() if k != "hooks"}
        values["optuna_storage"] = mask_url(self.optuna_storage) if self.optuna_storage else None
        return values


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
            "Hyperparameter search for the paper's models on Ray Tune: one Optuna (TPE) study and its own "
            "ASHA brackets per model family, the same number of trials for every family, all in one Tune run. "
            "With only --task it searches every model on the embedded synthetic dataset with a laptop-sized "
            "budget, scores the simple baselines, evaluates each family's winner once on test, writes "
            "report.html and best/<model>/ checkpoints, and prints the leaderboard."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="skip prediction or next-10-tracks")
    parser.add_argument("--model", default="all",
                        help="all (every model that supports the task), one name, or names separated by commas")
    parser.add_argument("--data", help="prepared dataset directory, or its s3:// / gs:// URI (default: the embedded synthetic set, made on first use)")
    parser.add_argument("--protocol", default="paper", choices=["paper", "challenge"],
                        help="paper: 20-track sessions, 10 in / 10 out; challenge: all sessions, T = ceil(L/2)")
    parser.add_argument("--budget", default="small", choices=list(BUDGETS),
                        help="small: small models, 3 epochs, 2 searched trials per family (minutes on a laptop); "
                        "paper: full spaces, 5 epochs, 20 per family. Explicit flags override it")
    parser.add_argument("--trials-per-family", type=int,
                        help="searched trials per model family, the same for every family (default: from --budget); "
                        "each family also runs the paper's configuration as one more, marked trial")
    parser.add_argument("--max-epochs", type=int, help="epochs of a trial that is not stopped early (default: from --budget)")
    parser.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial can be stopped (default: from --budget)")
    parser.add_argument("--reduction-factor", type=float, help="ASHA: keep 1/R of a family's trials at each rung (default: from --budget)")
    parser.add_argument("--max-trial-epochs", type=int,
                        help="stop the whole search once its trials have trained this many epochs in all "
                        "(for single-family budget studies; counted afresh after --resume)")
    parser.add_argument("--scheduler", default="asha", choices=SCHEDULERS, help="early stopping within each family")
    parser.add_argument("--searcher", default="optuna", choices=SEARCHERS, help="Optuna TPE or random sampling")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved by each trial")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="GPUs reserved by each trial of a GPU family (fractions share a GPU)")
    parser.add_argument("--max-concurrent", type=int,
                        help="trials at once (default: what the cluster can hold at its largest, one CPU left for Ray Data)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial, each from its latest checkpoint")
    parser.add_argument("--input-path", default="auto", choices=INPUT_PATHS,
                        help="trials stream the train split through Ray Data, or hold it in memory; auto: memory "
                        f"up to {MEMORY_INPUT_MAX_SESSIONS:,} training sessions, Ray Data above")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when the trial has a GPU")
    parser.add_argument("--address", help="Ray cluster to join (auto, or host:port; default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--storage", help=f"where experiments live: a shared path or s3:// / gs:// URI (default: ./{DEFAULT_STORAGE})")
    parser.add_argument("--optuna-storage",
                        help="SQLAlchemy URL of the Optuna studies (default: sqlite:///EXPERIMENT/optuna.db); a password "
                        "in it is never written or printed, so give it again with --resume")
    parser.add_argument("--name", help="experiment name, one folder name (default: <task>-<model>-<UTC time>); "
                        "with --resume, the one to continue")
    parser.add_argument("--resume", action="store_true", help="continue the experiment --name (default: the latest of --task)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the samplers and every trial")
    parser.add_argument("--fix", action="append", default=[], metavar="FIELD=VALUE",
                        help="pin a config field or trainer option in every trial instead of searching it, "
                        "e.g. --fix use_context=true, --fix cache_train=never (repeatable)")
    parser.add_argument("--points", type=Path, metavar="FILE.json",
                        help='configurations to try first: a JSON list of {"model": NAME, FIELD: VALUE, ...}')
    parser.add_argument("--no-paper-configs", dest="paper_configs", action="store_false",
                        help="do not run each family's paper configuration as an extra trial")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false", help="do not score the simple baselines")
    parser.add_argument("--no-test", dest="test", action="store_false", help="do not evaluate the winners on the test split")
    parser.add_argument("--verbose", action="store_true",
                        help="Ray Tune's status tables and Ray's own log lines on the console, besides one line per trial event")
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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"--points {args.points}: cannot read a JSON list ({error})") from None
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise UsageError(f"--points {args.points}: expected a JSON list of objects")
    values = {k: v for k, v in vars(args).items() if k not in ("fix", "points")}
    return SearchOptions(**values, fix=fixed, points=points)


def check_options(options: SearchOptions) -> None:
    """Reject impossible numbers and names with one sentence each."""
    positive = {
        "--trials-per-family": options.trials_per_family,
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
    if options.name is not None:
        check_name(options.name)


def check_name(name: str) -> str:
    """An experiment name is one folder name: letters, digits, '.', '_', '-', not starting with a dot."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"--name {name!r}: use one folder name of letters, digits, '.', '_' and '-' (at most 128, not starting "
            "with '.' or '-'); the experiment goes under --storage"
        )
    return name


def check_fixed(fixed: dict[str, Any], families) -> None:
    """Every --fix field must be a config field or trainer option of at least one family searched."""
    for name in fixed:
        if not any(name in f.fields for f in families):
            fields = sorted(set().union(*(f.fields for f in families)))
            raise UsageError(f"--fix {name}: not a config field of {', '.join(f.name for f in families)} (fields: {', '.join(fields)})")
