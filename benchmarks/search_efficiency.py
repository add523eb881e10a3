"""Search efficiency of TPE + ASHA against random search, and the searcher's own overhead, on this machine.

    .venv/bin/python -m benchmarks.search_efficiency [--seeds 0 1 2] [--budget 40] [--max-epochs 5] [--out FILE]

Part 1, search efficiency. For each seed, two searches of one family (the LSTM,
skip task, its ``--budget small`` space) through the product's own
``tuning.search.run_search``, each limited to the same total budget of
trial-epochs (``--max-trial-epochs``), on a generated synthetic set
(``--sessions``, default 6,000; ``--data`` to use another prepared set):

- TPE + ASHA: the family's Optuna study with TPE, ASHA on the epoch counter
  (grace 1, reduction 3);
- random: Optuna's random sampler, no early stopping (every trial runs
  ``--max-epochs`` epochs).

Both start from the family's start configuration (the search's first point);
neither runs the paper's configuration. From every epoch reported (in the order
results arrived) it builds the anytime curve "best val MAA after k trial-epochs".
The measure, per seed: random search's best val MAA within the budget, the
trial-epochs random search needed to reach it, and the trial-epochs TPE + ASHA
needed to reach it; their ratio (target: at most 0.5, median over seeds).

Part 2, the searcher's overhead: trials per minute of a trivial trainable (one
report, no work) through ``tuning.searcher.FamilyStudies`` (one family's TPE
study in SQLite) against Tune's built-in random search, as many at once as the
CPUs allow.

Prints a markdown block with the command, the machine and the load average;
``--out FILE`` writes it too, unless the load average at the start was above the
core count (then the figures measure other jobs as well, and the block says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe_machine, emit_result, load_average


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
    return next((k for k, value in enumerate(curve, 1) if value >= target - 1e-12), None)


METHODS = {
    "TPE + ASHA": dict(searcher="optuna", scheduler="asha", grace_period=1, reduction_factor=3),
    "random, no early stopping": dict(searcher="random", scheduler="none"),
}


def run_efficiency(args, data_dir: Path, storage: Path) -> list[dict]:
    from tuning.options import SearchOptions
    from tuning.search import run_search

    rows = []
    for seed in args.seeds:
        curves = {}
        for method, settings in METHODS.items():
            name = f"{'tpe-asha' if settings['searcher'] == 'optuna' else 'random'}-seed{seed}"
            options = SearchOptions(
                task="skip", model="lstm", data=str(data_dir), storage=str(storage), name=name, seed=seed,
                budget="small", max_epochs=args.max_epochs, max_trial_epochs=args.budget,
                trials_per_family=args.budget, paper_configs=False, baselines=False, test=False, **settings,
            )
            exp_dir = run_search(options)
            curves[method] = anytime_curve(exp_dir)[: args.budget]
            print(f"[{method}] seed {seed}: {len(list(exp_dir.glob('*/result.json')))} trials, "
                  f"best val MAA {curves[method][-1]:.4f}", flush=True)
        tpe, rnd = curves["TPE + ASHA"], curves["random, no early stopping"]
        target = rnd[-1]
        reach_rnd, reach_tpe = epochs_to_reach(rnd, target), epochs_to_reach(tpe, target)
        rows.append({"seed": seed, "target": target, "random": reach_rnd, "tpe": reach_tpe,
                     "ratio": reach_tpe / reach_rnd if reach_tpe is not None else None,
                     "tpe_best": tpe[-1], "random_best": rnd[-1]})
    return rows


def trivial_trainable(config):
    from ray import tune

    tune.report({"val_maa": config["toy"]["x"], "epoch": 1})


def run_overhead(trials: int, storage: Path) -> dict[str, float]:
    import optuna
    import ray
    from ray import tune

    from tuning.searcher import FamilyStudies
    from tuning.spaces import FamilyPlan, SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    out = {}
    for label in ("Tune's random search (BasicVariantGenerator)", "FamilyStudies (one family's TPE study, SQLite)"):
        if label.startswith("Family"):
            plan = FamilyPlan("toy", SearchSpace("toy", {"x": ("uniform", 0.0, 1.0)}), [], None, trials)
            search_alg = FamilyStudies([plan], f"sqlite:///{storage / 'overhead.db'}", "overhead", max_epochs=1)
            param_space = {}
        else:
            search_alg, param_space = None, {"model": "toy", "toy": {"x": tune.uniform(0, 1)}}
        tuner = tune.Tuner(
            tune.with_resources(trivial_trainable, {"cpu": 1}),
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="val_maa", mode="max", num_samples=trials, search_alg=search_alg,
                                        max_concurrent_trials=cpus),
            run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
        )
        start = time.perf_counter()
        tuner.fit()
        out[label] = trials / ((time.perf_counter() - start) / 60)
        print(f"[overhead] {label}: {out[label]:.1f} trials/min", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_efficiency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=40, help="trial-epochs per search")
    parser.add_argument("--max-epochs", type=int, default=5, help="epochs of a trial that is not stopped")
    parser.add_argument("--overhead-trials", type=int, default=30)
    parser.add_argument("--data", type=Path, help="prepared dataset (default: a synthetic set of --sessions sessions)")
    parser.add_argument("--sessions", type=int, default=6000, help="size of the generated synthetic set")
    parser.add_argument("--skip-efficiency", action="store_true", help="only measure the searcher's overhead")
    parser.add_argument("--out", type=Path, help="write the result block here too (refused on a loaded machine)")
    args = parser.parse_args(argv)

    from data_pipeline.ray_runtime import init_ray

    load_at_start = load_average()
    init_ray(num_cpus=2, object_store_memory=512 * 1024**2)
    started = time.perf_counter()
    data_dir = args.data or small_dataset(Path(tempfile.mkdtemp(prefix="search-efficiency-data-")), args.sessions)
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as storage:
        rows = [] if args.skip_efficiency else run_efficiency(args, data_dir, Path(storage))
        overhead = run_overhead(args.overhead_trials, Path(storage))
    elapsed = time.perf_counter() - started

    command = "python -m benchmarks.search_efficiency " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "### Search efficiency: TPE + ASHA against random search, and the searcher's overhead",
        "",
        f"- command: `{command.strip()}` ({elapsed / 60:.1f} min)",
        f"- machine: {describe_machine(load_at_start)}; Ray 2.60 local, 2 CPUs",
        "",
    ]
    if rows:
        data = f"`{args.data}`" if args.data else f"{args.sessions:,} generated synthetic sessions"
        lines += [
            f"LSTM, skip task, its `--budget small` space, {data}; {args.budget} trial-epochs per search, trials of up "
            f"to {args.max_epochs} epochs, no paper-configuration trial. Target per seed: random search's best val "
            "MAA within the budget.",
            "",
            "| seed | random's best val MAA | trial-epochs random needed | trial-epochs TPE + ASHA needed | ratio | TPE + ASHA's best |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            ratio = "never" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(f"| {r['seed']} | {r['target']:.4f} | {r['random']} | {r['tpe'] or 'never'} | {ratio} "
                         f"| {r['tpe_best']:.4f} |")
        median = statistics.median([r["ratio"] if r["ratio"] is not None else float("inf") for r in rows])
        verdict = "met" if median <= 0.5 else "not met"
        lines += ["", f"Median ratio {median:.2f} (target: TPE + ASHA reaches random's best with at most 0.5x its "
                      f"trial-epochs): {verdict}.", ""]
    lines += [f"Overhead: {args.overhead_trials} trials of a trivial trainable (one report, no work), 2 at a time:",
              "", "| searcher | trials per minute |", "|---|---:|"]
    lines += [f"| {label} | {rate:.1f} |" for label, rate in overhead.items()]
    emit_result(lines, args.out, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
