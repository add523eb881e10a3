"""The one Tune function trainable: one trial trains one configuration of one model family.

A trial config (built by ``tuning.searcher.FamilyStudies``) holds only what
varies between trials: ``model`` (the family), ``trial`` (its number in the
family's Optuna study), ``point`` for the start and paper configurations, and
the family's hyperparameters under ``config[<model>]``. Everything the same for
every trial travels once, by ``tune.with_parameters``, as `RunSettings`: the
task, the prepared data directory (every trial reads the same parquet shards
through Ray Data; nothing is copied), the protocol, epochs, seed, device,
input path, the fields pinned per family (``--fix`` and the budget's
settings), and fault drills for tests.

Every epoch the trial trains once over the train split, evaluates on val and
reports, with a checkpoint, the metrics of `report_metrics` (``epoch`` is the
explicit counter ASHA uses as its time attribute; ``val_maa`` is the only
selection metric). A retried trial restores the trainer from Tune's latest
checkpoint and continues with the next epoch.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tuning.spaces import trial_hyperparameters
from tuning.trainer import finite_or_none

TRAINER_DIR = "trainer"  # inside each Tune checkpoint: the trainer's saved directory
TRIAL_STATE = "trial_state.json"  # inside each Tune checkpoint: epoch and val metrics
# Fault drill: when hooks[FAIL_ONCE_MARKER] names a file that does not exist yet, the
# trial creates it and raises right after reporting epoch hooks["fail_after_epoch"]
# (default 1); the retry must resume from that epoch's checkpoint. Used by tests only.
FAIL_ONCE_MARKER = "fail_once_marker"


@dataclass(frozen=True)
class RunSettings:
    """What every trial of a search shares (passed once with tune.with_parameters)."""

    task: str
    data_dir: str
    protocol: str
    max_epochs: int
    seed: int
    device: str
    input_path: str
    cache_dir: str | None  # <data>/cache; None for data at a URI (each trial picks a node-local folder)
    fixed: dict[str, dict] = field(default_factory=dict)  # family -> field -> value
    hooks: dict = field(default_factory=dict)


class InjectedFailure(RuntimeError):
    """The deliberate, one-time failure of the fail-once fault drill."""


def report_metrics(epoch_result: dict, val: dict, num_parameters: int) -> dict:
    """The scalars a trial reports each epoch (what Tune, TensorBoard and ASHA see)."""
    metrics = {
        "epoch": int(epoch_result["epoch"]),
        "val_maa": float(val["maa"]),
        "val_loss": finite_or_none(val.get("loss")),
        "val_first_accuracy": float(val["first_accuracy"]),
        "train_loss": finite_or_none(epoch_result.get("train_loss")),
        "sessions_per_s": float(epoch_result.get("sessions_per_s", 0.0)),
        "num_parameters": int(num_parameters),
    }
    for name in ("recall_at_10", "ndcg_at_10", "mrr_at_10"):
        if name in val:
            metrics[f"val_{name}"] = float(val[name])
    return {k: v for k, v in metrics.items() if v is not None}


def train_trial(config: dict, settings: RunSettings) -> None:
    """Train `config`'s model for up to ``settings.max_epochs`` epochs, reporting every epoch."""
    import torch
    from ray import tune

    from tuning.families import make_trainer, restore_trainer

    family, hyperparameters = trial_hyperparameters(config, settings.fixed)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer = restore_trainer(Path(directory) / TRAINER_DIR, settings.data_dir, settings.device)
    else:
        trainer = make_trainer(
            settings.task, family, hyperparameters, settings.data_dir, protocol=settings.protocol,
            device=settings.device, seed=settings.seed, input_path=settings.input_path, cache_dir=settings.cache_dir,
        )

    while trainer.epoch < settings.max_epochs:
        epoch_result = trainer.train_epoch()
        val = trainer.evaluate("val")
        metrics = report_metrics(epoch_result, val, trainer.num_parameters)
        with tempfile.TemporaryDirectory(prefix="trial-checkpoint-") as directory:
            trainer.save(Path(directory) / TRAINER_DIR)
            state = {**metrics, "model": family, "config": hyperparameters, "val": val}
            (Path(directory) / TRIAL_STATE).write_text(json.dumps(state, indent=2))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        _maybe_fail_once(settings.hooks, trainer.epoch)


def _maybe_fail_once(hooks: dict, epoch: int) -> None:
    marker = hooks.get(FAIL_ONCE_MARKER)
    if not marker or epoch != int(hooks.get("fail_after_epoch", 1)):
        return
    marker = Path(marker)
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"failed once after epoch {epoch}\n")
    raise InjectedFailure(f"fault drill: failing once after epoch {epoch} (marker {marker})")
