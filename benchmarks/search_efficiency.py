"""Search efficiency of TPE + ASHA against random search, and Tune's own overhead, on this machine.

    .venv/bin/python benchmarks/search_efficiency.py [--seeds 0 1 2] [--budget 30] [--max-epochs 5]

Part 1, search efficiency. For each seed, two searches of the LSTM skip model
over its (small-budget) search space, through
the product's own `tuning.search.run_search`, each limited to the same total
budget of trial-epochs (``--max-trial-epochs``), on a generated synthetic set
(``--sessions``, default 6,000; ``--data`` to use another prepared set):

- TPE + ASHA: Optuna TPE, ASHA on the epoch counter (grace 1, reduction 3);
- random: Optuna's random sampler, no early stopping (every trial runs
  ``--max-epochs`` epochs).

From every epoch reported (in the order the results arrived) it builds the
anytime curve "best val MAA after k trial-epochs" and reports, per method: the
budget needed to reach the target val MAA and the best val MAA at the full
budget. The target is ``--target`` or, by default, the median over all runs of
both methods of the best val MAA at the full budget (the same target for both).

Part 2, Tune overhead: trials per minute of a trivial trainable (one report,
no work) with Tune's default random search and with OptunaSearch (TPE), as many
at once as the CPUs allow.

Prints a markdown block (command, machine) and writes benchmarks/results/search.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model  # noqa: E402


def machine() -> str:
    cpu = cpu_model()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{nproc} CPU cores (`nproc`), {cpu}, Python {platform.python_version()}, load average at the end {load} (shared machine)"


def small_dataset(root: Path, sessions: int) -> Path:
    """A synthetic MSSD set of `sessions` sessions, prepared: small enough for dozens of trials here."""
    from data_pipeline.prepare import PrepareOptions, prepare
    from data_pipeline.synth import SynthConfig, generate

    generate(SynthConfig(sessions=sessions, tracks=sessions // 10, days=2, seed=0), root / "raw")
    prepare(PrepareOptions(raw=root / "raw", out=root / "prepared", show_progress=False))
    return root / "prepared"


def anytime_curve(exp_dir: Path) -> list[float]:
    """Best val MAA after each reported trial-epoch, in arrival order."""
    reports = []
    for result_file in exp_dir.glob("*/result.json"):
        for line in result_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            reports.append((row.get("timestamp", 0), row.get("time_total_s", 0.0), row["val_maa"]))
    reports.sort()
    curve, best = [], float("-inf")
    for _, _, value in reports:
        best = max(best, value)
        curve.append(best)
    return curve


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    return next((k for k, value in enumerate(curve, 1) if value >= target), None)


def run_efficiency(args, data_dir: Path, storage: Path) -> dict:
    from tuning.search import SearchOptions, run_search

    methods = {
        "TPE + ASHA": dict(searcher="optuna", scheduler="asha", grace_period=1, reduction_factor=3),
        "random, no early stopping": dict(searcher="random", scheduler="none"),
    }
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in args.seeds:
        for method, settings in methods.items():
            name = f"{'tpe-asha' if settings['searcher'] == 'optuna' else 'random'}-seed{seed}"
            start = time.perf_counter()
            options = SearchOptions(
                task="skip", model="lstm", data=str(data_dir), storage=str(storage), name=name, seed=seed,
                budget="small", max_epochs=args.max_epochs, max_trial_epochs=args.budget,
                baselines=False, test=False, **settings,
            )
            exp_dir = run_search(options)
            curve = anytime_curve(exp_dir)
            trials = len(list(exp_dir.glob("*/result.json")))
            runs[method].append({"seed": seed, "curve": curve, "trials": trials, "seconds": time.perf_counter() - start})
            print(f"[{method}] seed {seed}: {trials} trials, {len(curve)} trial-epochs, best val MAA {curve[-1]:.4f}", flush=True)
    finals = [run["curve"][min(args.budget, len(run["curve"])) - 1] for rs in runs.values() for run in rs]
    target = args.target if args.target is not None else round(statistics.median(finals), 4)
    summary = {}
    for method, rs in runs.items():
        reach = [epochs_to_reach(r["curve"][: args.budget], target) for r in rs]
        at_budget = [r["curve"][min(args.budget, len(r["curve"])) - 1] for r in rs]
        summary[method] = {"reach": reach, "at_budget": at_budget, "trials": [r["trials"] for r in rs],
                           "seconds": [r["seconds"] for r in rs]}
    return {"target": target, "summary": summary}


def trivial_trainable(config):
    from ray import tune

    tune.report({"score": config["x"]})


def run_overhead(trials: int) -> dict[str, float]:
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    out = {}
    for label in ("Tune's random search (BasicVariantGenerator)", "OptunaSearch (TPE)"):
        search_alg = OptunaSearch(seed=0) if "Optuna" in label else None
        tuner = tune.Tuner(
            tune.with_resources(trivial_trainable, {"cpu": 1}),
            param_space={"x": tune.uniform(0, 1)},
            tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=trials, search_alg=search_alg,
                                        max_concurrent_trials=cpus),
            run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="tune-overhead-"), verbose=0),
        )
        start = time.perf_counter()
        tuner.fit()
        out[label] = trials / ((time.perf_counter() - start) / 60)
        print(f"[overhead] {label}: {out[label]:.1f} trials/min", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=30, help="trial-epochs per search")
    parser.add_argument("--max-epochs", type=int, default=5, help="epochs of a trial that is not stopped")
    parser.add_argument("--target", type=float, help="target val MAA (default: the median of all runs' best at the full budget)")
    parser.add_argument("--overhead-trials", type=int, default=30)
    parser.add_argument("--data", type=Path, help="prepared dataset (default: a synthetic set of --sessions sessions)")
    parser.add_argument("--sessions", type=int, default=6000, help="size of the generated synthetic set")
    parser.add_argument("--skip-efficiency", action="store_true", help="only measure Tune's overhead")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "search.md")
    args = parser.parse_args(argv)

    import ray

    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    started = time.perf_counter()
    data_dir = args.data or small_dataset(Path(tempfile.mkdtemp(prefix="search-efficiency-data-")), args.sessions)
    efficiency = None
    if not args.skip_efficiency:
        with tempfile.TemporaryDirectory(prefix="search-efficiency-") as storage:
            efficiency = run_efficiency(args, data_dir, Path(storage))
    overhead = run_overhead(args.overhead_trials)
    elapsed = time.perf_counter() - started

    command = "python benchmarks/search_efficiency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Search: TPE + ASHA against random search, and Tune's overhead",
        "",
        f"Command: `{command.strip()}` ({elapsed / 60:.1f} min). Machine: {machine()}; Ray 2.60 local, 2 CPUs.",
        "",
    ]
    if efficiency:
        seeds = ", ".join(map(str, args.seeds))
        lines += [
            f"LSTM skip model, `--budget small` search space, synthetic data "
            f"({'`' + str(args.data) + '`' if args.data else f'{args.sessions:,} generated sessions'}), "
            f"{args.budget} trial-epochs per search, trials of up to {args.max_epochs} epochs, seeds {seeds}. "
            f"Target val MAA {efficiency['target']:.4f}"
            + (" (the median over all runs, both methods, of the best val MAA at the full budget)." if args.target is None else "."),
            "",
            "| method | trial-epochs to reach the target, per seed | median | best val MAA at the full budget, per seed | mean | trials per search |",
            "|---|---|---:|---|---:|---|",
        ]
        for method, s in efficiency["summary"].items():
            reach = ["never" if r is None else str(r) for r in s["reach"]]
            finite = [r if r is not None else float("inf") for r in s["reach"]]
            median = statistics.median(finite)
            lines.append(
                f"| {method} | {', '.join(reach)} | {'never' if median == float('inf') else f'{median:g}'} "
                f"| {', '.join(f'{v:.4f}' for v in s['at_budget'])} | {statistics.mean(s['at_budget']):.4f} "
                f"| {', '.join(map(str, s['trials']))} |"
            )
        tpe, rnd = efficiency["summary"].values()
        med_tpe = statistics.median([r if r is not None else float("inf") for r in tpe["reach"]])
        med_rnd = statistics.median([r if r is not None else float("inf") for r in rnd["reach"]])
        if med_rnd != float("inf") and med_tpe != float("inf"):
            verdict = f"TPE + ASHA needs {med_tpe / med_rnd:.2f}x the trial-epochs of random search (median; target <= 0.5x)."
        elif med_tpe != float("inf"):
            verdict = f"TPE + ASHA reaches the target (median {med_tpe:g} trial-epochs); random search does not within {args.budget}."
        else:
            verdict = "TPE + ASHA does not reach the target within the budget (median)."
        lines += ["", verdict, ""]
    lines += [
        f"Tune's overhead: {args.overhead_trials} trials of a trivial trainable (one report, no work), 2 at a time:",
        "",
        "| searcher | trials per minute |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {rate:.1f} |" for label, rate in overhead.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
