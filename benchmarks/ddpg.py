"""DDPG (rl/) benchmark: val MAA of both formulations against the baselines, and training speed against the LSTM's.

For each dataset and task, trains DDPG for the same short budget in the
formulations of rl/env.py: ``dense`` with its default configuration (what the
search runs) and, unless ``--no-paper``, the paper's formulation with the
paper's three exploration settings (Experiment 6: no noise, noisy mask, noisy
mask with decay). Reports val MAA per epoch next to the paper's test figures
(Table 1: 43.0 / 43.7 skip; Table 2: 3.01 seq) and the simple baselines scored
on the same split; and training sessions per second of DDPG and of the LSTM
(its start configuration, one epoch, in-memory input) on the same data in the
same run, so the two figures share the machine's load.

    python -m benchmarks.ddpg                       # the embedded synthetic set
    python -m benchmarks.ddpg --sample DIR          # also the real MSSD sample (or MSSD_SAMPLE_DIR=DIR)
    python -m benchmarks.ddpg --quick               # a smoke run (a few minutes)
    python -m benchmarks.ddpg --data mine=/path/to/prepared:challenge --tasks skip

The sample folder holds ``log_sample.csv.gz`` and ``tf_small_covered.csv``; it
is prepared once under ``--work-dir``. Without ``--sample`` or
``MSSD_SAMPLE_DIR`` the sample is skipped. Prints a markdown block with the load
average; ``--out FILE`` also writes it there, unless the machine was loaded
(load average above the core count at the start).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from benchmarks.machine import describe_machine, emit_result, load_average  # noqa: E402

SAMPLE_FILES = ("log_sample.csv.gz", "tf_small_covered.csv")
PAPER = {("skip", "paper: no noise"): "43.0", ("skip", "paper: noise"): "43.7",
         ("skip", "paper: noise with decay"): "43.7 (\"with noise\")", ("seq", "paper: no noise"): "3.01",
         ("seq", "paper: noise"): "3.01", ("seq", "paper: noise with decay"): "3.01"}
BASELINES = {"skip": ("all_skip", "copy_last_skip"), "seq": ("most_popular", "markov")}


def sample_dir(option: Path | None) -> Path | None:
    """The raw MSSD sample folder: --sample, else MSSD_SAMPLE_DIR, else None (the sample is skipped)."""
    folder = option or (Path(os.environ["MSSD_SAMPLE_DIR"]) if os.environ.get("MSSD_SAMPLE_DIR") else None)
    if folder is None:
        return None
    missing = [name for name in SAMPLE_FILES if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"benchmarks.ddpg: the sample folder {folder} lacks {', '.join(missing)}")
    return folder


def prepare_sample(folder: Path, out: Path) -> Path:
    """Prepare the real MSSD sample once (its raw files are linked, not copied)."""
    if (out / "manifest.json").exists():
        return out
    raw = out.parent / "sample_raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_FILES:
        if not (raw / name).exists():
            (raw / name).symlink_to(folder.resolve() / name)
    subprocess.run([sys.executable, "-m", "data_pipeline.prepare", "--raw", str(raw), "--out", str(out), "--quiet"],
                   check=True)
    return out


def settings(args, task: str) -> dict[str, dict]:
    """Label -> DDPG config override for each run of `task`."""
    from rl.spec import NOISE_SETTINGS, PAPER_CONFIGS

    runs = {"dense (search default)": {}}
    if not args.no_paper:
        names = ("noise with decay",) if args.quick else tuple(NOISE_SETTINGS)
        for name in names:
            runs[f"paper: {name}"] = {**PAPER_CONFIGS[task], **NOISE_SETTINGS[name]}
    return runs


def baseline_maa(task: str, data_dir: Path, protocol: str) -> dict[str, float]:
    from tuning.evaluate import evaluate_baseline

    return {name: evaluate_baseline(task, name, data_dir, "val", protocol)["maa"] for name in BASELINES[task]}


def lstm_speed(task: str, data_dir: Path, protocol: str, args) -> dict:
    """One epoch of the LSTM's start configuration on the same data: training sessions/s."""
    from tuning.families import get_family, make_trainer

    config = dict(get_family("lstm").start_configs.get(task, {}))
    trainer = make_trainer(task, "lstm", config, data_dir, protocol=protocol, device=args.device, seed=0,
                           input_path="memory", cache_dir=args.work_dir / "cache")
    result = trainer.train_epoch()
    return {"sessions_per_s": result["sessions_per_s"], "sessions": result["sessions"]}


def run_ddpg(task: str, data_dir: Path, protocol: str, override: dict, args) -> dict:
    from rl.trainer import RLTrainer

    config = {"sessions_per_epoch": args.sessions_per_epoch, "eval_sessions": args.eval_sessions, **override}
    trainer = RLTrainer(task=task, config=config, data_dir=data_dir, protocol=protocol, seed=0, device=args.device,
                        cache_dir=args.work_dir / "cache")
    curve, train = [], []
    start = time.perf_counter()
    try:
        for _ in range(args.epochs):
            train.append(trainer.train_epoch())
            curve.append(trainer.evaluate("val")["maa"])
    finally:
        trainer.algo.stop()
    sessions = sum(r["sessions"] for r in train)
    seconds = sum(r["seconds"] for r in train)
    return {"curve": curve, "sessions_per_s": sessions / seconds, "sessions": sessions,
            "updates_per_s": float(np.mean([r["updates_per_s"] for r in train])),
            "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[],
                        help="NAME=PREPARED_DIR[:PROTOCOL] (repeatable; default: the embedded synthetic set, paper "
                             "protocol)")
    parser.add_argument("--sample", type=Path, default=None,
                        help="raw MSSD sample folder (log_sample.csv.gz, tf_small_covered.csv), run under the "
                             "challenge protocol; default: $MSSD_SAMPLE_DIR, else no sample")
    parser.add_argument("--tasks", nargs="+", default=["skip", "seq"], choices=["skip", "seq"])
    parser.add_argument("--epochs", type=int, default=3, help="DDPG epochs per run, val MAA after each (default 3)")
    parser.add_argument("--sessions-per-epoch", type=int, default=0,
                        help="training sessions per DDPG epoch (default 0: one pass over the train split)")
    parser.add_argument("--eval-sessions", type=int, default=0, help="val sessions scored (default 0: all)")
    parser.add_argument("--no-paper", action="store_true", help="only the dense formulation")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--work-dir", type=Path, default=REPO / "data" / "benchmarks" / "ddpg")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 epoch of 1,000 sessions, 500 val sessions, one paper setting")
    parser.add_argument("--out", type=Path,
                        help="write the result block here too (refused on a loaded machine and with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.sessions_per_epoch, args.eval_sessions = 1, 1000, 500

    import torch

    from data_pipeline.ray_runtime import init_ray

    load_at_start = load_average()
    init_ray(num_cpus=2, object_store_memory=512 * 1024**2)
    datasets = []
    for spec in args.data:
        name, _, rest = spec.partition("=")
        path, _, protocol = rest.partition(":")
        datasets.append((name, Path(path), protocol or "paper"))
    if not args.data:
        from data_pipeline.default import default_dataset

        datasets.append(("synthetic", default_dataset(show_progress=False), "paper"))
    sample = sample_dir(args.sample)
    if sample is not None:
        datasets.append(("mssd sample", prepare_sample(sample, args.work_dir / "sample_prepared"), "challenge"))

    rows, speeds, baselines = [], [], {}
    started = time.perf_counter()
    for name, path, protocol in datasets:
        for task in args.tasks:
            baselines[(name, task)] = baseline_maa(task, path, protocol)
            print(f"[ddpg benchmark] {name} / {task} / lstm ...", file=sys.stderr, flush=True)
            lstm = lstm_speed(task, path, protocol, args)
            for label, override in settings(args, task).items():
                print(f"[ddpg benchmark] {name} / {task} / {label} ...", file=sys.stderr, flush=True)
                rows.append({"data": name, "protocol": protocol, "task": task, "setting": label,
                             **run_ddpg(task, path, protocol, override, args)})
            dense = next(r for r in rows if r["data"] == name and r["task"] == task and r["setting"].startswith("dense"))
            speeds.append({"data": name, "task": task, "ddpg": dense["sessions_per_s"], "lstm": lstm["sessions_per_s"],
                           "updates": dense["updates_per_s"]})
    elapsed = time.perf_counter() - started

    command = "python -m benchmarks.ddpg " + " ".join(argv if argv is not None else sys.argv[1:])
    budget = ("one pass over the train split" if not args.sessions_per_epoch
              else f"{args.sessions_per_epoch:,} training sessions")
    lines = [
        "### DDPG (rl/): both formulations against the baselines, training speed against the LSTM",
        "",
        f"- command: `{command.strip()}` ({elapsed / 60:.1f} min)",
        f"- machine: {describe_machine(load_at_start)}; torch {torch.__version__}, device {args.device}",
        f"- budget per DDPG run: {args.epochs} epoch(s) of {budget}; val MAA on "
        f"{args.eval_sessions or 'all'} val sessions, no noise at evaluation",
        "",
        "| data (protocol) | task | formulation / exploration | val MAA per epoch % | paper test MAA % | baselines (val MAA %) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ", ".join(f"{k} {100 * v:.1f}" for k, v in baselines[(r["data"], r["task"])].items())
        curve = " ".join(f"{100 * m:.1f}" for m in r["curve"])
        lines.append(f"| {r['data']} ({r['protocol']}) | {r['task']} | {r['setting']} | {curve} | "
                     f"{PAPER.get((r['task'], r['setting']), '-')} | {base} |")
    lines += ["", "| data | task | DDPG (dense) training sessions/s | LSTM training sessions/s | DDPG / LSTM | DDPG learner updates/s |",
              "|---|---|---:|---:|---:|---:|"]
    for s in speeds:
        lines.append(f"| {s['data']} | {s['task']} | {s['ddpg']:.0f} | {s['lstm']:.0f} | {s['ddpg'] / s['lstm']:.2f} | "
                     f"{s['updates']:.1f} |")
    if sample is None:
        lines += ["", "The real MSSD sample was not run (give --sample DIR or MSSD_SAMPLE_DIR)."]
    out = args.out
    if args.quick:
        lines += ["", "--quick: a smoke run (DDPG barely starts learning in 1,000 sessions); its figures are not results."]
        out = None
    emit_result(lines, out, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
