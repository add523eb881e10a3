"""Seq task: full softmax vs sampled softmax (speed and MAA), greedy vs beam search.

Two measurements, each against its baseline in the same run:

1. Training speed of the paper's Transformer (d 256, 2 layers, 2 heads,
   batch 256) on random sessions at large vocabularies (the paper's is 103K):
   sessions/s with the full-softmax cross-entropy and with a sampled softmax
   over `--negatives` log-uniform negatives.
2. Quality on a prepared dataset (default: the embedded synthetic one): the
   same model trained `--epochs` epochs with each loss, val MAA with greedy
   decoding, and for the full-softmax model also with beam search (`--beam`).

    .venv/bin/python benchmarks/seq_loss_and_decoding.py [--data DIR] [--out benchmarks/results/models.md]

Prints a markdown block (command, machine, figures) and writes it to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model, emit  # noqa: E402

from data_pipeline.dataset import split_halves  # noqa: E402
from data_pipeline.schema import FIRST_TRACK_ID, MAX_SESSION_LENGTH, SEQUENCE_COLUMN_NAMES  # noqa: E402
from models.data import DataInfo
from models.registry import get_model  # noqa: E402




def random_batch(batch_size: int, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    raw = {name: np.zeros((batch_size, MAX_SESSION_LENGTH), np.int64) for name in SEQUENCE_COLUMN_NAMES}
    raw["tracks"] = rng.integers(FIRST_TRACK_ID, vocab_size, (batch_size, MAX_SESSION_LENGTH))
    raw["length"] = np.full(batch_size, MAX_SESSION_LENGTH)
    return {k: torch.as_tensor(v) for k, v in split_halves(raw, "paper").items()}


def training_speed(vocab_size: int, loss: str, negatives: int, batch_size: int, steps: int, device: str) -> float:
    """Sessions/s of forward + backward + Adam step of the paper's Transformer for the seq task."""
    spec = get_model("transformer")
    config = spec.make_config({"loss": loss, "num_negatives": negatives}, task="seq")
    torch.manual_seed(0)
    model = spec.build(config, "seq", DataInfo(vocab_size)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = {k: v.to(device) for k, v in random_batch(batch_size, vocab_size, 0).items()}

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(batch)[1].backward()
        optimizer.step()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def quality(data: Path, config: dict, loss: str, negatives: int, epochs: int, beam: int, device: str) -> dict:
    from tuning.families import make_trainer

    config = {**config, "loss": loss, "num_negatives": negatives}
    trainer = make_trainer("seq", "transformer", config, data, protocol="challenge", device=device, input_path="memory")
    seconds = 0.0
    for _ in range(epochs):
        seconds += trainer.train_epoch()["seconds"]
    result = {"seconds_per_epoch": seconds / epochs, "greedy": trainer.evaluate("val", beam_size=1)}
    if beam > 1:
        start = time.perf_counter()
        result["beam"] = trainer.evaluate("val", beam_size=beam)
        result["beam_seconds"] = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="prepared dataset for the quality runs (default: the embedded synthetic one)")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[20_000, 103_000])
    parser.add_argument("--negatives", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per speed figure")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per quality run")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--config", type=json.loads, default={"lr": 1e-3}, help="Transformer config (JSON) of the quality runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-quality", action="store_true", help="only the speed figures")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "models.md")
    args = parser.parse_args(argv)

    lines = [
        "### Seq task: sampled softmax and beam search",
        "",
        f"Command: `.venv/bin/python benchmarks/seq_loss_and_decoding.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(),
        f"Machine: {os.cpu_count()} CPUs (`nproc` {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}), "
        f"{cpu_model()}, device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        f"Training speed, paper Transformer (d 256, 2+2 layers, 2 heads), batch {args.batch_size}, random sessions:",
        "",
        f"| vocabulary | full softmax (sessions/s) | sampled softmax, {args.negatives} negatives (sessions/s) | speed-up |",
        "|---|---|---|---|",
    ]
    for vocab in args.vocab_sizes:
        full = training_speed(vocab, "ce", args.negatives, args.batch_size, args.steps, args.device)
        sampled = training_speed(vocab, "sampled_softmax", args.negatives, args.batch_size, args.steps, args.device)
        lines.append(f"| {vocab:,} | {full:.0f} | {sampled:.0f} | {sampled / full:.1f}x |")
        print(lines[-1], flush=True)

    if not args.skip_quality:
        data = args.data
        if data is None:
            from data_pipeline.default import default_dataset

            data = default_dataset()
        from data_pipeline.dataset import open_prepared

        vocab = open_prepared(data).vocab_size
        lines += [
            "",
            f"Quality on `{data}` (vocabulary {vocab:,}, challenge protocol), Transformer {json.dumps(args.config)}, "
            f"{args.epochs} epochs, val split:",
            "",
            "| loss | decoding | val MAA | first-position accuracy | s/epoch (train) |",
            "|---|---|---|---|---|",
        ]
        for loss in ("ce", "sampled_softmax"):
            k = min(args.negatives, max(1, (vocab - FIRST_TRACK_ID) // 4))
            r = quality(data, args.config, loss, k, args.epochs, args.beam if loss == "ce" else 1, args.device)
            name = "full softmax" if loss == "ce" else f"sampled softmax ({k} negatives)"
            g = r["greedy"]
            lines.append(f"| {name} | greedy | {g['maa']:.4f} | {g['first_accuracy']:.4f} | {r['seconds_per_epoch']:.1f} |")
            if "beam" in r:
                b = r["beam"]
                lines.append(f"| {name} | beam {args.beam} | {b['maa']:.4f} | {b['first_accuracy']:.4f} | (eval {r['beam_seconds']:.1f} s) |")
            print("\n".join(lines[-2:]), flush=True)

    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
