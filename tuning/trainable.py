"""The one Tune function trainable: one trial trains one configuration of one model family.

A trial config (built by tuning.search, see tuning.spaces) holds:

- ``model`` and the family's hyperparameters under ``config[<model>]``
  (plus ``fixed[<model>]``, the fields pinned with ``--fix``);
- the run settings: ``task``, ``data_dir`` (the prepared directory: every trial
  reads the same parquet shards through Ray Data, nothing is copied), ``protocol``,
  ``max_epochs``, ``seed``, ``device``, ``input_path``, ``cache_dir``;
- ``hooks``: fault drills for tests, off by default (see `FAIL_ONCE_MARKER`).

Every epoch the trial trains once over the train split, evaluates on val and
reports, with a checkpoint, the metrics of `report_metrics` (``epoch`` is the
explicit counter ASHA uses as its time attribute; ``val_maa`` is the only
selection metric). A retried trial restores the trainer from Tune's latest
checkpoint and continues with the next epoch.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from tuning.spaces import trial_hyperparameters

TRAINER_DIR = "trainer"  # inside each Tune checkpoint: Trainer.save's directory
TRIAL_STATE = "trial_state.json"  # inside each Tune checkpoint: epoch and val metrics
# Fault drill: when hooks[FAIL_ONCE_MARKER] names a file that does not exist yet, the
# trial creates it and raises right after reporting epoch hooks["fail_after_epoch"]
# (default 1); the retry must resume from that epoch's checkpoint. Used by tests only.
FAIL_ONCE_MARKER = "fail_once_marker"


class InjectedFailure(RuntimeError):
    """The deliberate, one-time failure of the fail-once fault drill."""


def report_metrics(epoch_result: dict, val: dict, num_parameters: int) -> dict:
    """The scalars a trial reports each epoch (what Tune, TensorBoard and ASHA see)."""
    metrics = {
        "epoch": int(epoch_result["epoch"]),
        "val_maa": float(val["maa"]),
        "val_loss": _finite_or_none(val.get("loss")),
        "val_first_accuracy": float(val["first_accuracy"]),
        "train_loss": _finite_or_none(epoch_result.get("train_loss")),
        "sessions_per_s": float(epoch_result.get("sessions_per_s", 0.0)),
        "num_parameters": int(num_parameters),
    }
    return {k: v for k, v in metrics.items() if v is not None}


def _finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def restore_trainer(family: str, directory: Path, data_dir: str | None, device: str = "auto"):
    """A trainer of `family` restored from its saved directory (RLTrainer for ddpg)."""
    if family == "ddpg":
        from rl.trainer import RLTrainer as trainer_cls
    else:
        from tuning.trainer import Trainer as trainer_cls
    return trainer_cls.restore(directory, data_dir=data_dir, device=device)


def train_trial(config: dict) -> None:
    """Train `config`'s model for up to ``config["max_epochs"]`` epochs, reporting every epoch."""
    import torch
    from ray import tune

    from tuning.trainer import make_trainer

    family, hyperparameters = trial_hyperparameters(config)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    hooks = config.get("hooks") or {}

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer = restore_trainer(family, Path(directory) / TRAINER_DIR, config["data_dir"], config["device"])
    else:
        trainer = make_trainer(
            config["task"],
            family,
            hyperparameters,
            config["data_dir"],
            protocol=config["protocol"],
            device=config["device"],
            seed=int(config["seed"]),
            input_path=config["input_path"],
            cache_dir=config.get("cache_dir"),
        )

    while trainer.epoch < int(config["max_epochs"]):
        epoch_result = trainer.train_epoch()
        val = trainer.evaluate("val")
        metrics = report_metrics(epoch_result, val, trainer.num_parameters)
        with tempfile.TemporaryDirectory(prefix="trial-checkpoint-") as directory:
            trainer.save(Path(directory) / TRAINER_DIR)
            state = {**metrics, "model": family, "config": hyperparameters, "val": val}
            (Path(directory) / TRIAL_STATE).write_text(json.dumps(state, indent=2))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        _maybe_fail_once(hooks, trainer.epoch)


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
