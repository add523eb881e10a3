"""The GPU path, proven and measured in one prepared run: `python -m benchmarks.gpu_check`.

On a GPU node (one H100/H200 with 16 cores: within ~8 minutes) it checks and measures, and prints one table:

1. CUDA: whether torch finds a GPU and the trainer uses it, and whether mixed precision is on
   (bf16 where the GPU supports it, else fp16 with a gradient scaler);
2. throughput: one training epoch of the LSTM and of the Transformer at the paper's sizes
   (skip task), through the Ray Data input path the search uses, over as many of
   ``--sessions`` synthetic sessions (default 3.3M, the paper's training-set size) as fit in
   ``--minutes`` each: sessions/s and the GPU memory the epoch used;
3. a 4-trial search of the LSTM (``--budget small``) sharing one GPU at 0.25 GPU per trial,
   which must finish with a leaderboard;
4. ``tuning.predict`` with the search's best checkpoint on the GPU, over raw logs.

Without a GPU the same script runs on the CPU (tiny: ``--sessions 2000 --minutes 1``, as the
test suite does), so it stays ready for a GPU machine. The synthetic data is generated and
prepared once into ``--work`` and reused.

    python -m benchmarks.gpu_check                              # on the GPU node
    python -m benchmarks.gpu_check --sessions 2000 --minutes 1  # anywhere (CPU)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe_machine, emit, load_average

PAPER_SIZES = {
    "lstm": {"hidden_size": 512, "num_layers": 1, "embedding_dim": 256, "lr": 1e-3, "batch_size": 256},
    "transformer": {"embedding_dim": 256, "num_layers": 2, "num_heads": 2, "ffn_dim": 1024, "dropout": 0.2, "lr": 1e-3,
                    "batch_size": 256},
}
TRACKS_PER_SESSION = 30  # synthetic catalogue: 3.3M sessions over 110K tracks, as the paper's ~103K


def dataset(work: Path, sessions: int) -> tuple[Path, Path]:
    """(raw, prepared) synthetic folders of `sessions` sessions, made once."""
    from data_pipeline.prepare import PrepareOptions, prepare
    from data_pipeline.synth import SynthConfig, generate

    raw, prepared = work / f"raw-{sessions}", work / f"prepared-{sessions}"
    if not (raw / "done").exists():
        generate(SynthConfig(sessions=sessions, tracks=max(200, sessions // TRACKS_PER_SESSION), days=2, seed=0), raw,
                 show_progress=False)
        (raw / "done").write_text("")
    if not (prepared / "manifest.json").exists():
        prepare(PrepareOptions(raw=raw, out=prepared, show_progress=False))
    return raw, prepared


def epoch_throughput(model: str, data: Path, seconds: float, device: str) -> dict:
    """One (time-boxed) training epoch through Ray Data at the paper's sizes: sessions/s, GPU memory."""
    import torch

    from tuning.families import make_trainer

    trainer = make_trainer("skip", model, dict(PAPER_SIZES[model]), data, protocol="challenge", device=device,
                           input_path="ray")
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train_epoch(max_seconds=seconds)
    memory = torch.cuda.max_memory_allocated() / 2**30 if trainer.device.type == "cuda" else None
    return {"model": model, "device": str(trainer.device), "amp": str(trainer.amp_dtype).replace("torch.", "") if
            trainer.amp_dtype else "off", "sessions": result["sessions"], "seconds": result["seconds"],
            "rate": result["sessions_per_s"], "partial": result["partial"], "gib": memory,
            "parameters": trainer.num_parameters}


def shared_gpu_search(data: Path, storage: Path, gpus: float) -> tuple[Path, float]:
    """A 4-trial LSTM search, `gpus` GPU per trial (0.25: four trials share one GPU); its folder and time."""
    from tuning.options import SearchOptions
    from tuning.search import run_search

    start = time.perf_counter()
    options = SearchOptions(task="skip", model="lstm", data=str(data), storage=str(storage), name="gpu-check",
                            protocol="challenge", trials_per_family=4, paper_configs=False, max_epochs=1,
                            gpus_per_trial=gpus, device="cuda" if gpus else "cpu", max_concurrent=4)
    exp_dir = run_search(options)
    return exp_dir, time.perf_counter() - start


def predict_on(checkpoint: Path, raw: Path, device: str, out: Path) -> tuple[dict, float]:
    from tuning.predict import predict

    logs = sorted(raw.glob("log_*"))[:1]
    start = time.perf_counter()
    result = predict(checkpoint, logs, out, protocol="challenge", device=device)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=3_300_000, help="synthetic sessions to generate and prepare")
    parser.add_argument("--minutes", type=float, default=1.5, help="time box of each model's training epoch")
    parser.add_argument("--search-sessions", type=int, default=20_000, help="sessions of the 4-trial search's data")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gpu_check",
                        help="where the synthetic data is made once and kept")
    parser.add_argument("--out", type=Path, help="write the result table here too")
    args = parser.parse_args(argv)

    import torch

    from data_pipeline.ray_runtime import init_ray

    load_at_start = load_average()
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    init_ray()
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = [("CUDA found", f"yes: {torch.cuda.get_device_name(0)}" if cuda else "no (CPU run)")]

    t0 = time.perf_counter()
    _, prepared = dataset(args.work, args.sessions)
    rows.append(("data", f"{args.sessions:,} synthetic sessions generated and prepared in {time.perf_counter() - t0:.0f} s"))
    for model in PAPER_SIZES:
        r = epoch_throughput(model, prepared, args.minutes * 60, device)
        rows.append((f"{model} (paper sizes, {r['parameters']:,} parameters)",
                     f"{r['rate']:,.0f} sessions/s on {r['device']} over {r['sessions']:,} sessions"
                     f"{' (time-boxed)' if r['partial'] else ''}; mixed precision {r['amp']}"
                     + (f"; GPU memory {r['gib']:.2f} GiB" if r["gib"] is not None else "")))

    search_raw, search_data = dataset(args.work, args.search_sessions)
    with tempfile.TemporaryDirectory(prefix="gpu-check-search-") as storage:
        exp_dir, seconds = shared_gpu_search(search_data, Path(storage), 0.25 if cuda else 0.0)
        leaderboard = (exp_dir / "leaderboard.md").read_text()
        finished = leaderboard.count("| lstm |")
        rows.append(("4-trial search" + (", 0.25 GPU each" if cuda else ", CPU"),
                     f"finished in {seconds:.0f} s with a leaderboard ({'lstm row present' if finished else 'NO lstm row'})"))
        prediction, seconds = predict_on(exp_dir / "best" / "lstm", search_raw, device, Path(storage) / "pred.csv")
        maa = prediction.get("metrics", {}).get("maa")
        rows.append((f"tuning.predict on {device}", f"{prediction['predicted']:,} sessions in {seconds:.1f} s"
                     + (f", MAA {maa:.4f}" if maa is not None else "")))

    lines = [
        "### GPU check",
        "",
        f"- command: `python -m benchmarks.gpu_check {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" ({(time.perf_counter() - started) / 60:.1f} min)",
        f"- machine: {describe_machine(load_at_start)}",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    emit("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
