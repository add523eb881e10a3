"""DDPG (rl/) benchmark: val MAA with the paper's three exploration settings, and throughput.

For each dataset and task, trains DDPG with no noise, noisy mask, and noisy
mask with decay (paper Experiment 6) for the same short budget, reports val MAA
next to the paper's test figures (Table 1: 43.0 / 43.7 skip; Table 2: 3.01 seq)
and to simple baselines scored on the same split, plus environment steps per
second (the bare environment, random actions, and inside RLlib's sampling loop)
and learner updates per second.

    python -m benchmarks.ddpg                       # synthetic default + the real sample
    python -m benchmarks.ddpg --quick               # a smoke run (minutes)
    python -m benchmarks.ddpg --data synthetic=/path/to/prepared --tasks skip

Writes a markdown block to stdout and to benchmarks/results/rl.md.
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

from benchmarks.machine import cpu_model, emit  # noqa: E402
SAMPLE_RAW = REPO.parent / "shared" / "data" / "mssd_sample"
PAPER = {("skip", "no noise"): "43.0", ("skip", "noise"): "43.7", ("skip", "noise with decay"): "43.7 (\"with noise\")",
         ("seq", "no noise"): "3.01 (one DDPG row)", ("seq", "noise"): "3.01", ("seq", "noise with decay"): "3.01"}
BASELINES = {"skip": ("all_skip", "copy_last_skip"), "seq": ("most_popular", "markov")}




def prepare_sample(out: Path) -> Path:
    """Prepare the real MSSD sample (log_sample.csv.gz + tf_small_covered.csv) once."""
    if (out / "manifest.json").exists():
        return out
    raw = out.parent / "sample_raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("log_sample.csv.gz", "tf_small_covered.csv"):
        if not (raw / name).exists():
            (raw / name).symlink_to(SAMPLE_RAW / name)
    subprocess.run([sys.executable, "-m", "data_pipeline.prepare", "--raw", str(raw), "--out", str(out), "--quiet"], check=True)
    return out


def env_steps_per_s(trainer, seconds: float = 3.0) -> float:
    """Bare environment speed: random actions, no RLlib."""
    from rl.env import SessionReplayEnv

    env = SessionReplayEnv(trainer.env_config("train"))
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        steps += 1
        if terminated:
            env.reset()
    return steps / (time.perf_counter() - start)


def baseline_maa(task: str, data_dir: Path, protocol: str) -> dict[str, float]:
    from tuning.evaluate import evaluate_baseline

    return {name: evaluate_baseline(task, name, data_dir, "val", protocol)["maa"] for name in BASELINES[task]}


def run(data_name: str, data_dir: Path, protocol: str, task: str, setting: str, args) -> dict:
    from rl.spec import NOISE_SETTINGS
    from rl.trainer import RLTrainer

    config = {
        "hidden_size": args.hidden_size,
        "batch_size": args.batch_size,
        "steps_per_iteration": args.steps_per_iteration,
        "iterations_per_epoch": 1,
        "learning_starts": args.steps_per_iteration,
        "env_steps_per_update": args.env_steps_per_update,
        "noise_mask_initial": 0.3,
        "noise_mask_decay": args.noise_mask_decay,
        "eval_sessions": args.eval_sessions,
        **NOISE_SETTINGS[setting],
    }
    trainer = RLTrainer(task=task, config=config, data_dir=data_dir, protocol=protocol, seed=0,
                        cache_dir=args.cache_dir)
    curve, best, train = [], None, []
    start = time.perf_counter()
    for _ in range(args.epochs):
        train.append(trainer.train_epoch())
        metrics = trainer.evaluate("val")
        curve.append(metrics["maa"])
        best = metrics if best is None or metrics["maa"] > best["maa"] else best
    elapsed = time.perf_counter() - start
    env_speed = env_steps_per_s(trainer) if setting == "no noise" else None
    trainer.algo.stop()
    return {
        "data": data_name, "protocol": protocol, "task": task, "setting": setting,
        "final_maa": curve[-1], "best_maa": best["maa"], "curve": curve, "sessions": best["sessions"],
        "rllib_env_steps_per_s": float(np.mean([r["env_steps_per_s"] for r in train[1:] or train])),
        "updates_per_s": float(np.mean([r["updates_per_s"] for r in train[1:] or train])),
        "env_steps_per_s": env_speed, "seconds": elapsed,
        "env_steps": args.epochs * args.steps_per_iteration,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[],
                        help="NAME=PREPARED_DIR[:PROTOCOL] (repeatable; default: the synthetic default dataset, paper "
                             "protocol, and the real sample, challenge protocol)")
    parser.add_argument("--tasks", nargs="+", default=["skip", "seq"], choices=["skip", "seq"])
    parser.add_argument("--epochs", type=int, default=6, help="evaluations per run (one RLlib iteration each)")
    parser.add_argument("--steps-per-iteration", type=int, default=1000, help="env steps per RLlib iteration")
    parser.add_argument("--env-steps-per-update", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--noise-mask-decay", type=float, default=5e-4)
    parser.add_argument("--eval-sessions", type=int, default=1000)
    parser.add_argument("--work-dir", type=Path, default=REPO / "data" / "benchmarks" / "ddpg")
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the script end to end")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rl.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.steps_per_iteration, args.eval_sessions = 2, 200, 200
    args.cache_dir = args.work_dir / "cache"

    import ray
    import torch

    torch.set_num_threads(1)
    for attempt in range(3):  # a loaded shared machine can time out Ray's node startup
        try:
            ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            break
        except Exception as error:  # noqa: BLE001 - Ray raises a bare Exception on startup timeout
            print(f"[ddpg benchmark] Ray did not start ({error}); retrying", file=sys.stderr, flush=True)
            ray.shutdown()
            if attempt == 2:
                raise
    datasets = []
    for spec in args.data:
        name, _, rest = spec.partition("=")
        path, _, protocol = rest.partition(":")
        datasets.append((name, Path(path), protocol or "paper"))
    if not datasets:
        from data_pipeline.default import default_dataset

        datasets = [("synthetic", default_dataset(show_progress=False), "paper"),
                    ("mssd sample", prepare_sample(args.work_dir / "sample_prepared"), "challenge")]

    rows, baselines = [], {}
    for name, path, protocol in datasets:
        for task in args.tasks:
            baselines[(name, task)] = baseline_maa(task, path, protocol)
            for setting in ("no noise", "noise", "noise with decay"):
                print(f"[ddpg benchmark] {name} / {task} / {setting} ...", file=sys.stderr, flush=True)
                rows.append(run(name, path, protocol, task, setting, args))
    ray.shutdown()

    command = "python -m benchmarks.ddpg " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## DDPG (rl/): paper Experiment 6 on RLlib, val MAA and throughput",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {os.cpu_count()} CPUs ({cpu_model()}), shared with other jobs; torch {torch.__version__}, CPU.  ",
        f"Budget per run: {args.epochs} RLlib iterations x {args.steps_per_iteration} env steps "
        f"(first iteration fills the buffer), one update (batch {args.batch_size}) per {args.env_steps_per_update} env "
        f"steps, hidden {args.hidden_size}, 1:99 popularity negatives, noise_mask_initial 0.3, decay "
        f"{args.noise_mask_decay}/step. Val MAA on up to {args.eval_sessions} val sessions, no noise at evaluation.",
        "",
        "| data (protocol) | task | exploration | val MAA final (best) % | MAA per iteration % | paper test MAA % | baselines (val MAA %) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ", ".join(f"{k} {100 * v:.1f}" for k, v in baselines[(r["data"], r["task"])].items())
        curve = " ".join(f"{100 * m:.1f}" for m in r["curve"])
        lines.append(
            f"| {r['data']} ({r['protocol']}) | {r['task']} | {r['setting']} | {100 * r['final_maa']:.1f} "
            f"({100 * r['best_maa']:.1f}) | {curve} | {PAPER[(r['task'], r['setting'])]} | {base} |"
        )
    lines += ["", "| data | task | bare env steps/s | env steps/s inside RLlib training | learner updates/s | s per run |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if r["setting"] == "no noise":
            lines.append(f"| {r['data']} | {r['task']} | {r['env_steps_per_s']:.0f} | {r['rllib_env_steps_per_s']:.0f} | "
                         f"{r['updates_per_s']:.1f} | {r['seconds']:.0f} |")
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
