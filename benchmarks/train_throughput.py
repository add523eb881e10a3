"""Training throughput: sessions/s per model, Ray Data input vs in-memory tensors, full vs sampled softmax.

Three measurements, each against its baseline in the same run:

1. Per model family (small CPU configurations of benchmarks/model_quality.py),
   skip task: training sessions/s of one epoch over the synthetic train split.
2. For each family, the Ray Data input path (`PreparedDataset.ray_dataset` ->
   `iter_torch_batches` with a local shuffle buffer) against the same model fed
   from in-memory tensors; epochs alternate memory / ray and the best of
   ``--repeats`` is kept for each (the machine is shared, so the best is the
   least disturbed). Target: ray >= 0.85x memory.
3. Seq task at a larger vocabulary (a synthetic set with ``--big-tracks``
   tracks): the Transformer with the full-softmax cross-entropy and with the
   sampled softmax (``loss=sampled_softmax``), sessions/s and val MAA after
   ``--big-epochs`` epochs.

    .venv/bin/python benchmarks/train_throughput.py [--data DIR] [--models lstm,transformer] [--out FILE]

Prints a markdown block (command, machine, figures).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import emit  # noqa: E402
from benchmarks.model_quality import BENCH_CONFIGS, machine  # noqa: E402


def epoch_rates(task, model, config, data_dir, repeats, protocol):
    """Best sessions/s of `repeats` epochs per input path, alternating the paths; plus the first Ray epoch."""
    from tuning.families import make_trainer

    trainers = {path: make_trainer(task, model, config, data_dir, protocol=protocol, device="cpu", input_path=path)
                for path in ("memory", "ray")}
    # warm-up: the first epoch of each path loads data (memory) or starts Ray Data workers (ray)
    first = {path: trainer.train_epoch()["sessions_per_s"] for path, trainer in trainers.items()}
    best = {"memory": 0.0, "ray": 0.0}
    for _ in range(repeats):
        for path, trainer in trainers.items():
            best[path] = max(best[path], trainer.train_epoch()["sessions_per_s"])
    return best, first, trainers["memory"].num_parameters


def big_vocab_dataset(work: Path, tracks: int, sessions: int) -> Path:
    from data_pipeline.prepare import PrepareOptions, prepare
    from data_pipeline.synth import SynthConfig, generate

    raw, out = work / f"raw_{tracks}_{sessions}", work / f"prepared_{tracks}_{sessions}"
    if (out / "manifest.json").exists():
        return out
    if not raw.exists():
        generate(SynthConfig(sessions=sessions, tracks=tracks, days=2, seed=11), raw)
    prepare(PrepareOptions(raw=raw, out=out, min_count=1, show_progress=False))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="prepared dir (default: the embedded synthetic set)")
    parser.add_argument("--models", default="lstm,transformer")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--protocol", default="challenge", choices=["paper", "challenge"])
    parser.add_argument("--big-tracks", type=int, default=20000)
    parser.add_argument("--big-sessions", type=int, default=20000)
    parser.add_argument("--big-epochs", type=int, default=2)
    parser.add_argument("--negatives", type=int, default=500)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/train_throughput"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import ray
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    if args.data is None:
        from data_pipeline.default import default_dataset

        args.data = Path(default_dataset(show_progress=False))
    command = "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["### Training throughput (benchmarks/train_throughput.py)", "",
             f"`{command.strip()}` on {machine()}; CPU, torch threads 2, shared machine (figures are the best of "
             f"{args.repeats} alternating epochs per path after one warm-up epoch each).", "",
             f"**Skip task, {args.protocol} protocol, data {args.data.name}**", "",
             "| model | parameters | in-memory sessions/s | Ray Data sessions/s | ratio ray/memory | first Ray epoch sessions/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for model in args.models.split(","):
        print(f"[train_throughput] {model}", file=sys.stderr, flush=True)
        best, first, params = epoch_rates("skip", model, BENCH_CONFIGS[model], args.data, args.repeats, args.protocol)
        lines.append(f"| `{model}` | {params:,} | {best['memory']:.0f} | {best['ray']:.0f} | "
                     f"{best['ray'] / best['memory']:.2f} | {first['ray']:.0f} |")
    lines.append("")

    if not args.skip_big:
        from tuning.families import make_trainer

        print("[train_throughput] large-vocabulary dataset", file=sys.stderr, flush=True)
        big = big_vocab_dataset(args.work, args.big_tracks, args.big_sessions)
        from data_pipeline.dataset import open_prepared

        vocab = open_prepared(big).vocab_size
        lines += [f"**Seq task, Transformer, vocabulary {vocab:,} ids ({args.big_sessions:,} synthetic sessions), "
                  f"{args.big_epochs} epochs, in-memory input**", "",
                  "| loss | sessions/s (best epoch) | val MAA | val first-position acc |", "|---|---:|---:|---:|"]
        base = {**BENCH_CONFIGS["transformer"], "batch_size": 128}
        for label, extra in (("full softmax (cross-entropy)", {"loss": "ce"}),
                             (f"sampled softmax, {args.negatives} negatives", {"loss": "sampled_softmax",
                                                                                "num_negatives": args.negatives})):
            print(f"[train_throughput] {label}", file=sys.stderr, flush=True)
            trainer = make_trainer("seq", "transformer", {**base, **extra}, big, protocol=args.protocol,
                                   device="cpu", input_path="memory")
            rate = max(trainer.train_epoch()["sessions_per_s"] for _ in range(args.big_epochs))
            val = trainer.evaluate("val")
            lines.append(f"| {label} | {rate:.0f} | {val['maa']:.4f} | {val['first_accuracy']:.4f} |")
        lines.append("")
    block = "\n".join(lines)
    emit(block, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
