"""Model quality: every family and every baseline, val and test MAA, next to the paper.

Two parts, each printed as a markdown table:

1. Synthetic data (default: the embedded synthetic set), both tasks: every
   registered family trained ``--epochs`` epochs with a small CPU
   configuration (``BENCH_CONFIGS``), and every baseline. For skip, each
   family is trained with and without session context and the variant with the
   better val MAA is the one tested (select on val, test once).
2. The real MSSD sample (``../shared/data/mssd_sample/log_sample.csv.gz``,
   prepared here with ``data_pipeline.prepare``), skip task, under both
   protocols, with and without session context: val and test MAA of the
   baselines and the families in ``--sample-models``, beside the paper's Table
   1 and FACTS.md (copy-last-skip 0.532 on this sample, challenge protocol).

    .venv/bin/python benchmarks/model_quality.py [--synthetic DIR] [--epochs 3] \
        [--models lstm,transformer,...] [--sample-models lstm,transformer] [--out benchmarks/results/trainer.md]

Everything runs on CPU with the in-memory input path (the data are small).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model, emit  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "mssd_sample"

# Small CPU configurations; lr larger than the paper's (1e-5 skip / 1e-4 seq) for few epochs.
BENCH_CONFIGS = {
    "lstm": {"hidden_size": 128, "embedding_dim": 64, "lr": 3e-3, "batch_size": 64},
    "lstm_w2v": {"hidden_size": 128, "lr": 3e-3, "batch_size": 64, "w2v_epochs": 5},
    "bigru": {"hidden_size": 128, "lr": 3e-3, "batch_size": 64, "w2v_epochs": 5},
    "transformer": {"embedding_dim": 64, "ffn_dim": 128, "num_layers": 2, "num_heads": 2, "lr": 1e-3, "batch_size": 64},
    "bert": {"embedding_dim": 64, "ffn_dim": 128, "num_layers": 2, "num_heads": 2, "lr": 1e-3, "batch_size": 64,
             "pretrain_epochs": 3},
    "bert_fused": {"embedding_dim": 64, "ffn_dim": 128, "num_layers": 1, "num_heads": 2, "lr": 1e-3, "batch_size": 64,
                   "bert_embedding_dim": 64, "bert_num_layers": 2, "bert_num_heads": 2, "bert_ffn_dim": 128,
                   "pretrain_epochs": 3},
}
PAPER_SKIP = {"lstm": 0.611, "lstm_w2v": 0.614, "bigru": 0.613, "transformer": 0.571, "bert_fused": 0.441}
PAPER_SEQ = {"lstm_w2v": 0.0080, "transformer": 0.178, "bert": 0.144, "bert_fused": 0.157}
SAMPLE_CONTEXT = {"use_context": True, "track_dropout": 0.5, "position_weights": "maa"}  # wide term on by default
SAMPLE_REFERENCE = "copy-last-skip on this sample (FACTS.md, challenge protocol): 0.532 MAA, first-position accuracy 0.738"


def machine() -> str:
    cpu = cpu_model()
    return f"{os.cpu_count()} CPUs ({subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} usable), {cpu}"


def train_select_test(task, model, variants, data_dir, protocol, epochs, cache_dir):
    """Train each config variant; pick the epoch-final model with the best val MAA; test it once."""
    from tuning.families import make_trainer

    best = None
    tried = []
    for label, config in variants:
        start = time.perf_counter()
        trainer = make_trainer(task, model, config, data_dir, protocol=protocol, device="cpu",
                               input_path="memory", cache_dir=cache_dir)
        for _ in range(epochs):
            trainer.train_epoch()
        val = trainer.evaluate("val")
        tried.append({"variant": label, "val_maa": val["maa"], "seconds": time.perf_counter() - start})
        if best is None or val["maa"] > best[1]["maa"]:
            best = (label, val, trainer)
    label, val, trainer = best
    test = trainer.evaluate("test")
    return {"variant": label, "val": val, "test": test, "tried": tried, "parameters": trainer.num_parameters}


def baselines(task, data_dir, protocol):
    from models.baselines import BASELINES
    from tuning.evaluate import evaluate_baseline

    return {
        name: {split: evaluate_baseline(task, name, data_dir, split, protocol) for split in ("val", "test")}
        for name in BASELINES[task]
    }


def prepare_sample(work: Path) -> Path:
    """The real sample's log (and the covered track features) prepared under `work`."""
    from data_pipeline.prepare import PrepareOptions, prepare

    raw, out = work / "sample_raw", work / "sample_prepared"
    if (out / "manifest.json").exists():
        return out
    raw.mkdir(parents=True, exist_ok=True)
    # only log_sample: log_small_covered repeats its first 11 sessions
    shutil.copyfile(SAMPLE / "log_sample.csv.gz", raw / "log_sample.csv.gz")
    shutil.copyfile(SAMPLE / "tf_small_covered.csv", raw / "tf_small_covered.csv")
    prepare(PrepareOptions(raw=raw, out=out, min_count=1, show_progress=False))
    return out


def fmt(x):
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def synthetic_tables(data_dir, models, epochs, cache_dir, protocol):
    lines = []
    results = {}
    for task in ("skip", "seq"):
        base = baselines(task, data_dir, protocol)
        rows = [(f"baseline `{n}`", "-", b["val"]["maa"], b["test"]["maa"], b["test"]["first_accuracy"], "-")
                for n, b in base.items()]
        results[task] = {"baselines": {n: {s: b[s]["maa"] for s in b} for n, b in base.items()}, "models": {}}
        for model in models:
            config = BENCH_CONFIGS[model]
            variants = [("no context", config)]
            if task == "skip":
                variants.append(("context", {**config, "use_context": True}))
            print(f"[model_quality] synthetic {task} {model}", file=sys.stderr, flush=True)
            r = train_select_test(task, model, variants, data_dir, protocol, epochs, cache_dir)
            results[task]["models"][model] = {"variant": r["variant"], "val": r["val"]["maa"], "test": r["test"]["maa"],
                                              "tried": r["tried"]}
            paper = (PAPER_SKIP if task == "skip" else PAPER_SEQ).get(model, "-")
            print(f"[row] synthetic {task} {model} ({r['variant']}): val {r['val']['maa']:.4f} test {r['test']['maa']:.4f}",
                  file=sys.stderr, flush=True)
            rows.append((f"`{model}` ({r['variant']})", f"{r['parameters']:,}", r["val"]["maa"], r["test"]["maa"],
                         r["test"]["first_accuracy"], paper))
        best_baseline = max(b["val"]["maa"] for n, b in base.items()) if task == "skip" else base["most_popular"]["val"]["maa"]
        lines += [f"**Synthetic, {task} task ({protocol} protocol, {epochs} epochs)**", "",
                  "| method | parameters | val MAA | test MAA | test first-position acc | paper test MAA (real MSSD) |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {fmt(c)} | {fmt(d)} | {fmt(e)} | {fmt(f)} |" for a, b, c, d, e, f in rows]
        reference = "best baseline" if task == "skip" else "most_popular"
        lines += ["", f"Val MAA of the {reference}: {best_baseline:.3f}.", ""]
    return lines, results


def sample_tables(sample_dir, models, epochs, cache_dir):
    lines = ["**Real MSSD sample (`log_sample.csv.gz`, 4,156 sessions), skip task**", ""]
    results = {}
    for protocol in ("challenge", "paper"):
        base = baselines("skip", sample_dir, protocol)
        for n, b in base.items():
            print(f"[row] sample {protocol} baseline {n}: val {b['val']['maa']:.4f} test {b['test']['maa']:.4f} "
                  f"first {b['test']['first_accuracy']:.4f}", file=sys.stderr, flush=True)
        rows = [(f"baseline `{n}`", b["val"]["maa"], b["test"]["maa"], b["test"]["first_accuracy"]) for n, b in base.items()]
        results[protocol] = {"baselines": {n: {s: b[s]["maa"] for s in b} for n, b in base.items()}, "models": {}}
        for model in models:
            for context in (True, False):
                print(f"[model_quality] sample {protocol} {model} context={context}", file=sys.stderr, flush=True)
                # with context: also the options that help on this small sample (see benchmarks/sample_cv.py)
                config = {**BENCH_CONFIGS[model], **(SAMPLE_CONTEXT if context else {"use_context": False})}
                r = train_select_test("skip", model, [("", config)], sample_dir, protocol, epochs, cache_dir)
                name = f"`{model}` {'with' if context else 'without'} context"
                rows.append((name, r["val"]["maa"], r["test"]["maa"], r["test"]["first_accuracy"]))
                print(f"[row] sample {protocol} {name}: val {r['val']['maa']:.4f} test {r['test']['maa']:.4f} "
                      f"first {r['test']['first_accuracy']:.4f} ({r['tried'][0]['seconds']:.0f} s)", file=sys.stderr, flush=True)
                results[protocol]["models"][f"{model}{'+context' if context else ''}"] = {
                    "val": r["val"]["maa"], "test": r["test"]["maa"]}
        lines += [f"*{protocol} protocol*", "", "| method | val MAA | test MAA | test first-position acc |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {a} | {fmt(b)} | {fmt(c)} | {fmt(d)} |" for a, b, c, d in rows]
        lines.append("")
    lines += [f"References: paper Table 1 (3.3M 20-track sessions, ids + skips only): LSTM 0.611, BiGRU 0.613, "
              f"LSTM-word2vec 0.614, Transformer 0.571 test MAA. {SAMPLE_REFERENCE}. WSDM Cup winners (130M sessions, "
              "all features): 0.651.", ""]
    return lines, results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=Path, help="prepared synthetic dir (default: the embedded one)")
    parser.add_argument("--models", default="lstm,lstm_w2v,bigru,transformer,bert,bert_fused")
    parser.add_argument("--sample-models", default="lstm,transformer")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sample-epochs", type=int, default=5)
    parser.add_argument("--protocol", default="challenge", choices=["paper", "challenge"],
                        help="protocol of the synthetic part (the sample is run under both)")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/model_quality"))
    parser.add_argument("--out", type=Path, help="also write the markdown block here")
    args = parser.parse_args(argv)

    import ray
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    command = "python benchmarks/model_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["### Model quality (benchmarks/model_quality.py)", "", f"`{command.strip()}` on {machine()}; CPU, "
             "in-memory input, small configurations (`BENCH_CONFIGS` in the script), selection on val, test once.", ""]
    results = {}
    if not args.skip_synthetic:
        if args.synthetic is None:
            from data_pipeline.default import default_dataset

            args.synthetic = Path(default_dataset(show_progress=False))
        part, results["synthetic"] = synthetic_tables(args.synthetic, args.models.split(","), args.epochs,
                                                      args.work / "cache", args.protocol)
        lines += part
    if not args.skip_sample and (SAMPLE / "log_sample.csv.gz").exists():
        sample_dir = prepare_sample(args.work)
        part, results["sample"] = sample_tables(sample_dir, args.sample_models.split(","), args.sample_epochs,
                                                args.work / "cache")
        lines += part
    lines.append(f"Total time {time.perf_counter() - started:.0f} s.")
    block = "\n".join(lines)
    (args.work / "model_quality.json").write_text(json.dumps(results, indent=1))
    emit(block, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
