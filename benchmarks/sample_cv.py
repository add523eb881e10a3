"""Skip task on the real MSSD sample, by n-fold cross-validation of the product's own search.

One hash split of the 4,156-session sample leaves ~830 test sessions: a
standard error of about 0.015 MAA per split, half the +0.03 margin over
copy-last-skip that the issues ask for. So this script prepares the sample
once per fold (``data_pipeline.prepare --fold k --test-fraction 1/n``: the
folds' test slices are disjoint, every session is tested once) and in every
fold runs the search itself (``python -m tuning.search --data <fold>
--protocol challenge``) over ``--models``, every family with the same
``--trials-per-family`` and ``--max-epochs``. The search selects each
family's winner on val and scores it once on test (``test_results/<model>.json``);
it scores the simple baselines too (``baselines.json``). Nothing here looks at
a test figure before the search has chosen.

It prints one markdown block: per family and per baseline, the test MAA of
each fold, the mean ± standard error over folds and the paired difference to
copy-last-skip, with the command, the machine and its load average.

    .venv/bin/python benchmarks/sample_cv.py [--sample DIR] [--folds 5] [--models lstm,transformer,gbdt] \\
        [--trials-per-family 4] [--max-epochs 6] [--fix use_context=true] [--work /tmp/sample_cv] \\
        [--out benchmarks/results/sample_cv.md]

``--sample`` is the folder holding ``log_sample.csv.gz`` and
``tf_small_covered.csv`` (default: ``MSSD_SAMPLE_DIR``). The figures are
quality figures, but ``--out`` still refuses a run that started on a loaded
machine (``benchmarks.machine.quiet``), as every benchmark here does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import describe_machine, emit, load_average, quiet  # noqa: E402

SAMPLE_FILES = ("log_sample.csv.gz", "tf_small_covered.csv")
REFERENCE = "copy_last_skip"
# The search's families, DDPG aside (on this 3.3K-session sample it stays below copy-last-skip: BENCHMARKS.md).
DEFAULT_MODELS = "lstm,lstm_w2v,bigru,transformer,bert,bert_fused,gbdt"


def prepare_fold(raw: Path, work: Path, fold: int, folds: int) -> Path:
    """The sample prepared with fold `fold`'s test slice (cached under `work`)."""
    out = work / f"fold{fold}of{folds}"
    if not (out / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "data_pipeline.prepare", "--raw", str(raw), "--out", str(out), "--fold", str(fold),
             "--test-fraction", str(1.0 / folds), "--quiet"],
            cwd=REPO, check=True,
        )
    return out


def search_command(data: Path, args: argparse.Namespace, name: str) -> list[str]:
    command = [sys.executable, "-m", "tuning.search", "--task", "skip", "--data", str(data), "--protocol", "challenge",
               "--model", args.models, "--trials-per-family", str(args.trials_per_family),
               "--max-epochs", str(args.max_epochs), "--storage", str(args.work / "experiments"), "--name", name]
    if not args.paper_configs:
        command.append("--no-paper-configs")
    for pin in args.fix:
        command += ["--fix", pin]
    return command


def read_fold(experiment: Path) -> dict:
    """{name: (val MAA, test MAA)} for every family's winner and every baseline of one searched fold."""
    scores = {}
    for row in json.loads((experiment / "baselines.json").read_text()):
        scores[row["name"]] = (row["val"]["maa"], row["test"]["maa"])
    for path in sorted((experiment / "test_results").glob("*.json")):
        row = json.loads(path.read_text())
        if row.get("kind") == "winner":
            scores[row["model"]] = (row["val"]["maa"], row["test"]["maa"])
    return scores


def mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def table(folds: list[dict], families: list[str]) -> list[str]:
    """Markdown rows: families by mean test MAA, then the baselines; per fold, mean ± se, Δ to copy-last-skip."""
    n = len(folds)
    baselines = [name for name in folds[0] if name not in families]
    present = [f for f in families if all(f in fold for fold in folds)]
    order = sorted(present, key=lambda f: -mean_se([fold[f][1] for fold in folds])[0]) + baselines
    lines = [
        "| model | " + " | ".join(f"fold {k}" for k in range(n)) + " | **test MAA, mean ± se** | "
        f"Δ vs {REFERENCE.replace('_', '-')} (paired) | folds ≥ +0.03 | winners' val MAA |",
        "|---|" + "---:|" * n + "---:|---:|---:|---:|",
    ]
    for name in order:
        tests = [fold[name][1] for fold in folds]
        deltas = [fold[name][1] - fold[REFERENCE][1] for fold in folds]
        m, se = mean_se(tests)
        dm, dse = mean_se(deltas)
        above = sum(d >= 0.03 for d in deltas)
        label = name if name in families else f"{name} (baseline)"
        delta = "" if name == REFERENCE else f"{dm:+.3f} ± {dse:.3f}"
        lines.append(f"| {label} | " + " | ".join(f"{t:.3f}" for t in tests) + f" | **{m:.3f} ± {se:.3f}** | {delta} | "
                     f"{'' if name == REFERENCE else f'{above}/{n}'} | {mean_se([fold[name][0] for fold in folds])[0]:.3f} |")
    missing = [f for f in families if f not in present]
    if missing:
        lines += ["", f"No winner in every fold (failed trials): {', '.join(missing)}."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=Path, default=os.environ.get("MSSD_SAMPLE_DIR"),
                        help="folder with log_sample.csv.gz and tf_small_covered.csv (default: MSSD_SAMPLE_DIR)")
    parser.add_argument("--folds", type=int, default=5, help="n folds, each testing 1/n of the sessions (val 0.1)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="the families searched in every fold")
    parser.add_argument("--trials-per-family", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--fix", action="append", metavar="FIELD=VALUE",
                        help="passed to the search (default: use_context=true: the session's context columns, "
                        "without which no neural family gets clear of copy-last-skip here)")
    parser.add_argument("--paper-configs", action="store_true",
                        help="also run each family's paper configuration (its skip lr 1e-5 learns nothing in a few epochs)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sample_cv"))
    parser.add_argument("--out", type=Path, help="also write the markdown block here (refused on a loaded machine)")
    args = parser.parse_args(argv)
    if args.sample is None or not all((args.sample / name).is_file() for name in SAMPLE_FILES):
        parser.error(f"--sample {args.sample}: needs a folder holding {' and '.join(SAMPLE_FILES)} (or set MSSD_SAMPLE_DIR)")
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    args.fix = args.fix if args.fix is not None else ["use_context=true"]
    load_at_start = load_average()
    if args.out and not quiet(load_at_start):
        parser.error(f"load average {load_at_start:.1f} is above the {os.cpu_count()} cores: not writing --out from a "
                     "loaded machine (run without --out to see the figures)")

    raw = args.work / "raw"  # the two sample files only (the sample's folder may hold others)
    raw.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_FILES:
        if not (raw / name).exists():
            (raw / name).symlink_to((args.sample / name).resolve())
    started, stamp = time.time(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run_name = f"cv-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    folds = []
    for fold in range(args.folds):
        data = prepare_fold(raw, args.work, fold, args.folds)
        name = f"{run_name}-fold{fold}"
        command = search_command(data, args, name)
        print(f"fold {fold}: {shlex.join(command[1:])}", flush=True)
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL if not os.environ.get("CV_VERBOSE") else None)
        folds.append(read_fold(args.work / "experiments" / name))
        print(f"fold {fold}: " + ", ".join(f"{k} {v[1]:.4f}" for k, v in folds[-1].items()), flush=True)

    families = [m for m in args.models.split(",") if m]
    options = (f"--folds {args.folds} --models {args.models} --trials-per-family {args.trials_per_family} "
               f"--max-epochs {args.max_epochs}" + "".join(f" --fix {pin}" for pin in args.fix)
               + (" --paper-configs" if args.paper_configs else ""))
    lines = [
        f"`MSSD_SAMPLE_DIR=<sample> python benchmarks/sample_cv.py {options}` ({stamp}, {time.time() - started:.0f} s; "
        f"{describe_machine(load_at_start)}).",
        f"Per fold: `python -m tuning.search --task skip --data <fold> --protocol challenge --model {args.models} "
        f"--trials-per-family {args.trials_per_family} --max-epochs {args.max_epochs}"
        + "".join(f" --fix {pin}" for pin in args.fix) + ("" if args.paper_configs else " --no-paper-configs")
        + "`: each family's winner chosen on val (10% of the sessions), tested once; baselines fitted on train.",
        "",
        *table(folds, families),
    ]
    emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
