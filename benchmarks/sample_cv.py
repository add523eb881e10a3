"""Skip task on the real MSSD sample, by n-fold cross-validation.

One hash split of the 4,156-session sample leaves ~430 test sessions: a
standard error of about 0.015 MAA, half the +0.03 margin issue 3 asks for.
This script prepares the sample once per fold (``data_pipeline.prepare
--fold k --test-fraction 0.2``: the 5 folds' test slices are disjoint, so
every session is tested once), and in every fold

- scores the simple baselines on test;
- trains each variant of each model in ``--models`` for ``--epochs`` epochs
  with ``--seeds`` seeds, keeping the epoch with the best val MAA;
- selects, per model, the variant with the best mean val MAA, and reports its
  test MAA (mean over seeds): select on val, test once.

It prints one markdown block: per-fold test MAA of copy-last-skip and of the
selected model with context, their difference, and mean ± standard error
over folds.

    .venv/bin/python benchmarks/sample_cv.py [--folds 5] [--models lstm,transformer] [--epochs 6] \
        [--seeds 3] [--work /tmp/sample_cv] [--out benchmarks/results/sample_cv.md]

CPU, in-memory input path (3.3K training sessions per fold).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model, emit  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "mssd_sample"
BASELINES = ("all_skip", "session_majority", "copy_last_skip")

# The variants compared inside each fold (small CPU configurations). "paper" = the paper's inputs
# (track ids with skip padding); the others add session context and the regularisers that matter
# with 3K training sessions (see models/config.py: track_dropout, position_weights, wide_context).
LSTM = {"hidden_size": 128, "embedding_dim": 64, "batch_size": 64}
TRANSFORMER = {"embedding_dim": 64, "ffn_dim": 128, "num_layers": 2, "num_heads": 2, "batch_size": 64}
CONTEXT = {"use_context": True, "position_weights": "maa", "track_dropout": 0.5}
VARIANTS = {
    "lstm": {
        "paper inputs": {**LSTM, "lr": 3e-3},
        "context": {**LSTM, "lr": 3e-3, "use_context": True, "wide_context": False},
        "context+wide+maa+track dropout, lr 3e-3": {**LSTM, **CONTEXT, "lr": 3e-3},
        "context+wide+maa+track dropout, lr 1e-3": {**LSTM, **CONTEXT, "lr": 1e-3},
    },
    "transformer": {
        "paper inputs": {**TRANSFORMER, "lr": 1e-3},
        "context": {**TRANSFORMER, "lr": 1e-3, "use_context": True, "wide_context": False},
        "context+wide+maa+track dropout": {**TRANSFORMER, **CONTEXT, "lr": 1e-3},
    },
}


def prepare_fold(raw: Path, work: Path, fold: int, test_fraction: float) -> Path:
    out = work / f"test{test_fraction:g}-fold{fold}"
    if not (out / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "data_pipeline.prepare", "--raw", str(raw), "--out", str(out), "--fold", str(fold),
             "--test-fraction", str(test_fraction), "--quiet"],
            cwd=REPO, check=True,
        )
    return out


def train_variant(model: str, config: dict, data: Path, epochs: int, seeds: int) -> dict:
    """Mean over seeds of (best val MAA, test MAA at that epoch)."""
    from tuning.families import make_trainer

    vals, tests = [], []
    for seed in range(seeds):
        trainer = make_trainer("skip", model, config, data, protocol="challenge", device="cpu",
                               input_path="memory", seed=seed)
        best_val, best_state = -1.0, None
        for _ in range(epochs):
            trainer.train_epoch()
            val = trainer.evaluate("val")["maa"]
            if val > best_val:
                best_val = val
                best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        trainer.model.load_state_dict(best_state)
        vals.append(best_val)
        tests.append(trainer.evaluate("test")["maa"])  # only the selected variant's is reported
    return {"val": sum(vals) / seeds, "test": sum(tests) / seeds}


def mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=SAMPLE, help="folder with log_sample.csv.gz and tf_small_covered.csv")
    parser.add_argument("--folds", type=int, default=5, help="n folds, each testing 1/n of the sessions (val 0.1)")
    parser.add_argument("--models", default="lstm,transformer")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sample_cv"))
    parser.add_argument("--out", type=Path, help="also write the markdown block here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    raw = args.work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("log_sample.csv.gz", "tf_small_covered.csv"):
        if not (raw / name).exists():
            (raw / name).symlink_to((args.raw / name).resolve())

    from tuning.evaluate import evaluate_baseline

    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in VARIANTS]
    if unknown:
        parser.error(f"--models: no variants defined for {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    started = time.time()
    rows = []
    for fold in range(args.folds):
        data = prepare_fold(raw, args.work, fold, 1.0 / args.folds)
        row = {"fold": fold, "test_sessions": json.loads((data / "manifest.json").read_text())["splits"]["test"]["sessions"]}
        for name in BASELINES:
            row[name] = evaluate_baseline("skip", name, data, split="test", protocol="challenge")["maa"]
        for model in models:
            results = {label: train_variant(model, cfg, data, args.epochs, args.seeds)
                       for label, cfg in VARIANTS[model].items()}
            with_context = {k: v for k, v in results.items() if k != "paper inputs"}
            chosen = max(with_context, key=lambda k: with_context[k]["val"])
            row[f"{model} paper inputs"] = results["paper inputs"]["test"]
            row[f"{model} context"] = results[chosen]["test"]
            row[f"{model} chosen"] = chosen
            row[f"{model} val"] = {k: round(v["val"], 4) for k, v in results.items()}
            print(f"fold {fold} {model}: " + json.dumps({k: (round(v['val'], 4), round(v['test'], 4))
                                                          for k, v in results.items()}), flush=True)
        rows.append(row)
        print(f"fold {fold}: copy_last_skip {row['copy_last_skip']:.4f} " +
              " ".join(f"{m} {row[f'{m} context']:.4f}" for m in models), flush=True)

    lines = [
        f"`python benchmarks/sample_cv.py --folds {args.folds} --models {args.models} --epochs {args.epochs} "
        f"--seeds {args.seeds}` ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {cpu_model()}, "
        f"{os.cpu_count()} CPUs, {time.time() - started:.0f} s). Challenge protocol; per fold the variant with the "
        "best val MAA (mean of the seeds) is tested once; test MAA is the mean over seeds.",
        "",
        "| fold | test sessions | all_skip | session_majority | copy_last_skip | "
        + " | ".join(f"{m} paper inputs | {m} with context | Δ vs copy-last" for m in models) + " |",
        "|---:|---:|---:|---:|---:|" + "---:|---:|---:|" * len(models),
    ]
    for row in rows:
        cells = [str(row["fold"]), str(row["test_sessions"])] + [f"{row[b]:.3f}" for b in BASELINES]
        for m in models:
            cells += [f"{row[f'{m} paper inputs']:.3f}", f"{row[f'{m} context']:.3f}",
                      f"{row[f'{m} context'] - row['copy_last_skip']:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    summary = ["**mean ± se**", ""]
    for b in BASELINES:
        m, se = mean_se([r[b] for r in rows])
        summary.append(f"{m:.3f} ± {se:.3f}")
    for m_ in models:
        for key in (f"{m_} paper inputs", f"{m_} context"):
            m, se = mean_se([r[key] for r in rows])
            summary.append(f"{m:.3f} ± {se:.3f}")
        m, se = mean_se([r[f"{m_} context"] - r["copy_last_skip"] for r in rows])
        summary.append(f"**{m:+.3f} ± {se:.3f}**")
    lines.append("| " + " | ".join(summary) + " |")
    lines.append("")
    for m in models:
        chosen = [r[f"{m} chosen"] for r in rows]
        lines.append(f"{m}: variant chosen on val per fold: " + "; ".join(f"{i}: {c}" for i, c in enumerate(chosen)))
    block = "\n".join(lines)
    emit(block, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
