"""Scoring outside the search: the simple baselines, and the once-only test evaluation of each family's winner.

- `evaluate_baselines`: every baseline of the task fitted on train, scored on
  val and test with the models' metrics (the ranking metrics too, for seq).
- `evaluate_winners`: per family, the trial with the best val MAA at any epoch
  (the paper configuration's trial competes like any other) is restored from
  that epoch's checkpoint and scored once on the test split, in a Ray task with
  a trial's resources; so is the family's paper-configuration trial, reported
  on its own row. The winner's checkpoint is copied to ``best/<model>/``, a
  folder that ``tuning.predict --checkpoint`` and ``tuning.train --config``
  take as it is.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.dataset import open_prepared
from data_pipeline.tasks import label_key
from models.baselines import BASELINES, get_baseline
from models.metrics import RANK_CUTOFF, evaluate_predictions
from tuning.options import METRIC
from tuning.results import PAPER_SUFFIX
from tuning.spaces import POINT_ATTR
from tuning.storage import BEST_DIR, TEST_DIR
from tuning.trainable import TRAINER_DIR, TRIAL_STATE


def evaluate_baseline(task: str, name: str, data_dir: str | Path, split: str = "val", protocol: str = "paper",
                      fitted: Any = None) -> dict:
    """Fit baseline `name` on the train split (or use `fitted`) and score it on `split` (no loss)."""
    dataset = open_prepared(data_dir)
    baseline = fitted or get_baseline(task, name).fit(dataset.numpy_split("train", protocol), vocab_size=dataset.vocab_size)
    data = dataset.numpy_split(split, protocol)
    if not len(data["length"]):
        empty = np.zeros((0, 10), np.int64)
        return evaluate_predictions(empty, empty, empty.astype(bool))
    top = baseline.rank(data, RANK_CUTOFF) if hasattr(baseline, "rank") else None
    return evaluate_predictions(baseline.predict(data), data[label_key(task)], data["out_mask"], top=top)


def evaluate_baselines(task: str, data_dir: str | Path, protocol: str, say=print) -> list[dict]:
    """Every simple baseline of `task`, fitted on train once, scored on val and test."""
    dataset = open_prepared(data_dir)
    train = dataset.numpy_split("train", protocol)
    rows = []
    for name in BASELINES[task]:
        start = time.perf_counter()
        fitted = get_baseline(task, name).fit(train, vocab_size=dataset.vocab_size)
        val = evaluate_baseline(task, name, data_dir, "val", protocol, fitted)
        test = evaluate_baseline(task, name, data_dir, "test", protocol, fitted)
        rows.append({"name": name, "val": val, "test": test, "seconds": time.perf_counter() - start})
        say(f"  baseline {name:>18}: val MAA {val['maa']:.4f}  test MAA {test['maa']:.4f}")
    return rows


def _score_on_test(checkpoint, data_dir: str, device: str) -> dict:
    """Restore a trial checkpoint and score it on the test split (runs as a Ray task)."""
    from tuning.families import restore_trainer

    with checkpoint.as_directory() as directory:
        state = json.loads((Path(directory) / TRIAL_STATE).read_text())
        trainer = restore_trainer(Path(directory) / TRAINER_DIR, data_dir, device)
        test = trainer.evaluate("test")
    return {"state": state, "test": test}


def best_checkpoints(results) -> dict[tuple[str, str], tuple[float, Any, Any]]:
    """(family, "winner" | "paper") -> (val MAA, checkpoint of the best epoch, Tune result)."""
    best: dict[tuple[str, str], tuple[float, Any, Any]] = {}
    for result in results:
        config = result.config or {}
        family = config.get("model")
        kinds = ["winner"] + (["paper"] if config.get(POINT_ATTR) == "paper" else [])
        for checkpoint, metrics in result.best_checkpoints or []:
            value = metrics.get(METRIC)
            if family is None or value is None or not math.isfinite(value):
                continue
            for kind in kinds:
                if (family, kind) not in best or value > best[(family, kind)][0]:
                    best[(family, kind)] = (value, checkpoint, result)
    return best


def evaluate_winners(results, families: dict, data_dir: str, exp_dir: Path, device: str, cpus: float, gpus: float,
                     say=print) -> list[dict]:
    """Each family's winner (and paper configuration) scored once on test; best/<model>/ written.

    `families` maps a family name to its Family (for whether it uses a GPU).
    """
    import ray

    chosen = best_checkpoints(results)
    pending = {}
    for (family, kind), (_, checkpoint, _) in sorted(chosen.items()):
        uses_gpu = families[family].uses_gpu if family in families else True
        task = ray.remote(num_cpus=cpus, num_gpus=gpus if uses_gpu else 0)(_score_on_test)
        pending[(family, kind)] = task.remote(checkpoint, data_dir, device if uses_gpu else "cpu")
    out_dir = exp_dir / TEST_DIR
    out_dir.mkdir(exist_ok=True)
    rows = []
    for (family, kind), ref in pending.items():
        value, checkpoint, result = chosen[(family, kind)]
        try:
            scored = ray.get(ref)
        except Exception as error:  # noqa: BLE001 - one broken winner must not hide the others
            say(f"  {family}: test evaluation of its {kind} failed: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
            continue
        config = result.config or {}
        row = {
            "model": family,
            "kind": kind,
            "trial_id": result.metrics.get("trial_id", Path(result.path).name),
            "trial": config.get("trial"),
            POINT_ATTR: config.get(POINT_ATTR),
            "checkpoint": checkpoint.path,
            "epoch": scored["state"]["epoch"],
            "val": scored["state"]["val"],
            "config": scored["state"]["config"],
            "test": scored["test"],
        }
        name = family if kind == "winner" else f"{family}{PAPER_SUFFIX}"
        (out_dir / f"{name}.json").write_text(json.dumps(row, indent=2))
        if kind == "winner":
            row["best"] = str(copy_best(checkpoint, exp_dir / BEST_DIR / family))
            say(f"  {family:>12}: val MAA {value:.4f} (epoch {row['epoch']})  test MAA {row['test']['maa']:.4f}")
        rows.append(row)
    return rows


def copy_best(checkpoint, target: Path) -> Path:
    """The trainer folder of a Tune checkpoint, copied to `target` (replaced if present)."""
    with checkpoint.as_directory() as directory:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(directory) / TRAINER_DIR, target)
    return target
