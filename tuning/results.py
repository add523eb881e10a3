"""An experiment read back: Tune's trials through its public ``ExperimentAnalysis``, plus the search's own files.

Works on a finished, running or interrupted experiment folder (a local one;
an experiment kept at a URI is copied down first, see ``tuning.storage``):

- Tune's state (``ExperimentAnalysis``): every trial's status, failures,
  config and per-epoch results (``result.json``);
- ``search.json``: the search's options, families, pinned fields and data;
- ``baselines.json``: the simple baselines on val and test;
- ``test_results/<model>.json`` (each family's winner, evaluated once on test)
  and ``test_results/<model>.paper.json`` (its paper configuration).

Note that ``ExperimentAnalysis`` unpickles Tune's experiment state: open only
experiment folders you trust (checkpoints for ``tuning.predict`` are another
matter: they hold no pickles).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tuning.spaces import POINT_ATTR, trial_hyperparameters
from tuning.storage import BASELINES_FILE, SEARCH_FILE, TEST_DIR

PAPER_SUFFIX = ".paper"  # test_results/<model>.paper.json: the family's paper configuration on test


@dataclass
class Trial:
    """One Tune trial as the report sees it."""

    trial_id: str
    model: str
    number: int | None  # its number in the family's Optuna study
    point: str | None  # "start", "paper" or "points" for an enqueued configuration; None when sampled
    config: dict  # the family's hyperparameters (pinned fields included)
    epochs: list[dict]  # one reported result per epoch, in order
    status: str  # finished / stopped early / error / running / pending / paused
    failures: int = 0
    error: str | None = None
    path: str = ""

    @property
    def best(self) -> dict | None:
        """The epoch with the highest val MAA (first one on ties)."""
        scored = [r for r in self.epochs if is_number(r.get("val_maa"))]
        return max(scored, key=lambda r: r["val_maa"]) if scored else None

    @property
    def best_val(self) -> float:
        return (self.best or {}).get("val_maa", -1.0)

    @property
    def wall_time_s(self) -> float:
        return float(self.epochs[-1].get("time_total_s", 0.0)) if self.epochs else 0.0

    @property
    def label(self) -> str:
        """How the console and the report name it: ``lstm #3``, with the point it came from."""
        marks = {"paper": " (paper config)", "start": " (start config)", "points": " (--points)"}
        number = f" #{self.number}" if self.number is not None else f" {self.trial_id}"
        return f"{self.model}{number}{marks.get(self.point, '')}"


@dataclass
class Experiment:
    path: Path
    meta: dict
    trials: list[Trial]
    baselines: list[dict] = field(default_factory=list)
    tests: dict[str, dict] = field(default_factory=dict)  # family -> its winner on test
    paper_tests: dict[str, dict] = field(default_factory=dict)  # family -> its paper configuration on test

    @property
    def options(self) -> dict:
        return self.meta.get("options", {})

    @property
    def task(self) -> str:
        return self.options.get("task", "?")

    @property
    def max_epochs(self) -> int | None:
        return self.options.get("max_epochs")

    @property
    def families(self) -> list[str]:
        """The families searched (search.json), else those with trials."""
        return list(self.meta.get("families") or sorted({t.model for t in self.trials}))

    def trials_of(self, family: str) -> list[Trial]:
        return [t for t in self.trials if t.model == family]

    def planned_trials(self, family: str) -> int | None:
        """Trials the search meant to run for `family` (searched ones plus the paper's), when known."""
        return (self.meta.get("planned_trials") or {}).get(family)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _epochs(frame) -> list[dict]:
    """Per-epoch rows of a trial's results; a retried trial's repeated epoch keeps its latest report."""
    if frame is None or frame.empty:
        return []
    by_epoch: dict[int, dict] = {}
    for row in frame.to_dict("records"):
        clean = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        epoch = clean.get("epoch", clean.get("training_iteration"))
        if epoch is None:
            continue
        by_epoch[int(epoch)] = clean
    return [by_epoch[e] for e in sorted(by_epoch)]


def _status(tune_status: str, epochs: list[dict], max_epochs: int | None) -> str:
    if tune_status == "ERROR":
        return "error"
    if tune_status == "TERMINATED":
        reached = int(epochs[-1].get("epoch", 0)) if epochs else 0
        return "finished" if max_epochs is None or reached >= max_epochs else "stopped early"
    return {"RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}.get(tune_status, tune_status.lower())


def _error_line(trial_dir: Path) -> str | None:
    error = trial_dir / "error.txt"
    if not error.exists():
        return None
    lines = [line for line in error.read_text(errors="replace").strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def load_trials(exp_dir: Path, fixed: dict, max_epochs: int | None) -> list[Trial]:
    """Every trial of the Tune experiment in `exp_dir` (none when Tune has not written its state yet)."""
    import logging

    from ray.tune import ExperimentAnalysis

    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # a trial with no result file yet is not news
    try:
        analysis = ExperimentAnalysis(str(exp_dir))
    except ValueError:  # no experiment_state-*.json yet
        return []
    frames = analysis.trial_dataframes
    trials = []
    for tune_trial in analysis.trials:
        config = tune_trial.config or {}
        if "model" not in config:
            continue
        family, values = trial_hyperparameters(config, fixed)
        epochs = _epochs(frames.get(tune_trial.trial_id))
        status = _status(tune_trial.status, epochs, max_epochs)
        trial_dir = Path(tune_trial.path)
        trials.append(Trial(
            trial_id=tune_trial.trial_id,
            model=family,
            number=config.get("trial"),
            point=config.get(POINT_ATTR),
            config=values,
            epochs=epochs,
            status=status,
            failures=int(tune_trial.run_metadata.num_failures or 0),
            error=_error_line(trial_dir) if status == "error" else None,
            path=str(trial_dir),
        ))
    return sorted(trials, key=lambda t: (t.model, t.number if t.number is not None else -1, t.trial_id))


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Everything the report needs from an experiment folder (see the module docstring)."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"{exp_dir}: no such experiment directory")
    meta_path = exp_dir / SEARCH_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    trials = load_trials(exp_dir, meta.get("fixed") or {}, meta.get("options", {}).get("max_epochs"))
    baselines = json.loads((exp_dir / BASELINES_FILE).read_text()) if (exp_dir / BASELINES_FILE).exists() else []
    tests, paper_tests = {}, {}
    for path in sorted((exp_dir / TEST_DIR).glob("*.json")):
        if path.stem.endswith(PAPER_SUFFIX):
            paper_tests[path.stem[: -len(PAPER_SUFFIX)]] = json.loads(path.read_text())
        else:
            tests[path.stem] = json.loads(path.read_text())
    return Experiment(exp_dir, meta, trials, baselines, tests, paper_tests)
