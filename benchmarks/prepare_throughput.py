"""Throughput of data_pipeline.prepare against a plain CSV read and a pandas baseline, in one run.

    python benchmarks/prepare_throughput.py [--out benchmarks/results/prepare_throughput.md]  # 600K sessions, ~10M rows
    python benchmarks/prepare_throughput.py --scale                                                # 3.3M sessions, peak memory

Default mode, all in one run, on the same rows written twice by the synth CLI
(kept in --work and reused when present): as uncompressed CSV (what the
official MSSD archives unpack to) and as ``.csv.gz``. For each format:

1. floor: ``pyarrow.csv.read_csv`` of every log file with the schema's column
   types (all threads);
2. ``prepare`` end to end (read, sessionize, vocabulary, encode, write,
   features) on a local Ray instance with every core. Ray's start-up (the
   instance and its worker processes with their imports) happens before the
   clock, is measured in the same run and reported beside the figure;
3. baseline: a single-process pandas script in the style of the paper's
   preprocessing (read_csv, value_counts vocabulary, groupby session_id, sort
   each group by position, lists of track ids and skips) on the first
   --pandas-files log files (its rate is per row, so a subset is a fair
   measure and keeps its memory bounded).

Steps 1 and 2 run alternately ``--repeats`` times (default 5) and the figures
are the medians: on a shared or virtualised machine a single read can take
anywhere from 2 to 5 s, and interleaving lets both feel the same moments.
The first ``prepare`` on the new instance is reported on its own row too: its
worker processes still grow their heaps (first-touch page faults, which cost
several seconds per GiB on some virtual machines), a one-off cost that a long
run does not notice and a short one does.

Every step reports wall seconds and CPU seconds per million rows: CPU time of
this process (all threads) and, for ``prepare``, of every Ray process too
(from /proc). CPU seconds hardly move with other load on the machine; wall
clock does, so the load average is printed before and after, and with
``--out`` the block is only written when the load average at the start is at
most the core count.

``--scale``: 3.3M sessions written as parquet, prepared with the default
object store; peak memory is the largest sum, sampled every second, of the
proportional set size (PSS, from /proc; Linux only) of this process and all
its descendants (Ray's GCS, raylet, object store and workers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model, descendants, emit_result, load_average  # noqa: E402

TARGET_VS_READ, GOAL_VS_READ, TARGET_VS_PANDAS = 0.4, 0.7, 10.0


def machine() -> str:
    memory = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        memory = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs (nproc), {cpu_model()}{memory}, {platform.system()}"


# ---------------------------------------------------------------------------
# CPU time and memory of a process tree, from /proc
# ---------------------------------------------------------------------------


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (Ray's daemons and workers)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in descendants(os.getpid()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, ValueError, IndexError):
            continue
    return total


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the PSS sum of this process tree every `interval` seconds in a thread."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(_pss_bytes(pid) for pid in descendants(os.getpid()))
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------
# The contenders
# ---------------------------------------------------------------------------


@dataclass
class Step:
    rows: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.rows / self.wall

    @property
    def cpu_per_million(self) -> float:
        return self.cpu / self.rows * 1e6


def generate(work: Path, sessions: int, tracks: int, days: int, fmt: str) -> Path:
    """The raw set for these knobs (the synth CLI, seed 0), generated once and reused."""
    raw = work / f"raw_{fmt}_{sessions}_{tracks}_{days}"
    marker = raw / "synth_done.json"
    if marker.exists():
        return raw
    shutil.rmtree(raw, ignore_errors=True)
    options = ["--gzip"] if fmt == "csv.gz" else ["--format", fmt]
    command = [sys.executable, "-m", "data_pipeline.synth", "--sessions", str(sessions), "--tracks", str(tracks),
               "--days", str(days), "--seed", "0", *options, "--out", str(raw), "--quiet"]
    print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    marker.write_text(json.dumps({"seconds": time.perf_counter() - started}))
    return raw


def log_files(raw: Path) -> list[Path]:
    return sorted(raw.glob("log_*.csv*"))


def plain_read(raw: Path) -> Step:
    """pyarrow.csv.read_csv of every log file with the schema's column types (all threads)."""
    import pyarrow.csv as pacsv

    from data_pipeline.schema import FALSE_VALUES, LOG_COLUMNS, TRUE_VALUES

    options = pacsv.ConvertOptions(column_types=LOG_COLUMNS, true_values=TRUE_VALUES, false_values=FALSE_VALUES)
    rows, started, cpu = 0, time.perf_counter(), time.process_time()
    for path in log_files(raw):
        rows += pacsv.read_csv(path, convert_options=options).num_rows
    return Step(rows, time.perf_counter() - started, time.process_time() - cpu)


def pandas_baseline(raw: Path, files: int, out: Path) -> Step:
    """The paper-style script: one process, groupby + per-session sort, track ids and skip_2 only."""
    import pandas as pd

    started, cpu = time.perf_counter(), time.process_time()
    frame = pd.concat([pd.read_csv(p) for p in log_files(raw)[:files]], ignore_index=True)
    counts = frame["track_id_clean"].value_counts()
    vocab = {track: i + 4 for i, track in enumerate(counts.index)}
    sessions = []
    for session_id, group in frame.groupby("session_id", sort=False):
        group = group.sort_values("session_position")
        if not 10 <= len(group) <= 20:
            continue
        sessions.append((session_id, [vocab.get(t, 3) for t in group["track_id_clean"]],
                         group["skip_2"].astype(int).tolist()))
    pd.DataFrame(sessions, columns=["session_id", "tracks", "skip_2"]).to_parquet(out)
    return Step(len(frame), time.perf_counter() - started, time.process_time() - cpu)


def start_ray(num_cpus: int, object_store_gib: float | None) -> float:
    """Start the local Ray instance and its worker processes (with prepare's imports); returns the seconds it took.

    A fresh instance spends seconds per worker starting Python and importing
    pyarrow and Ray Data; that fixed cost is reported beside the figures, not in them.
    """
    import numpy as np
    import ray.data

    from data_pipeline.ray_runtime import init_ray

    started = time.perf_counter()
    store = int(object_store_gib * 2**30) if object_store_gib else None
    init_ray(num_cpus=num_cpus, object_store_memory=store)

    def touch(batch):
        import data_pipeline.prepare  # noqa: F401  (the imports every prepare task needs)

        return {"id": np.asarray(batch["id"]) + 1}

    cpus = int(ray.cluster_resources().get("CPU", 1))
    ray.data.range(cpus * 4, override_num_blocks=cpus * 4).map_batches(touch, batch_format="pyarrow").materialize()
    return time.perf_counter() - started


def run_prepare(raw: Path, out: Path) -> tuple[dict, Step]:
    """Manifest and the wall / CPU seconds (driver + every Ray process) of one prepare run."""
    from data_pipeline.prepare import PrepareOptions, prepare

    shutil.rmtree(out, ignore_errors=True)
    started, cpu = time.perf_counter(), tree_cpu_seconds()
    manifest = prepare(PrepareOptions(raw=raw, out=out, show_progress=False))
    return manifest, Step(manifest["rows"]["read"], time.perf_counter() - started, tree_cpu_seconds() - cpu)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def median_step(steps: list[Step]) -> Step:
    """The run of median wall time (its CPU seconds with it)."""
    return sorted(steps, key=lambda step: step.wall)[len(steps) // 2]


def compare(fmt: str, args, work: Path) -> tuple[list[str], dict]:
    raw = generate(work, args.sessions, args.tracks, args.days, fmt)
    reads, prepares = [], []
    for run in range(args.repeats):  # interleaved, so both feel the same moments of the machine
        print(f"[{fmt}] run {run + 1}/{args.repeats}: plain read, prepare ...", file=sys.stderr, flush=True)
        reads.append(plain_read(raw))
        manifest, step = run_prepare(raw, work / f"prepared_{fmt}")
        prepares.append(step)
    print(f"[{fmt}] pandas on {args.pandas_files} file(s) ...", file=sys.stderr, flush=True)
    baseline = pandas_baseline(raw, args.pandas_files, work / f"pandas_{fmt}.parquet")
    floor, prepared = median_step(reads), median_step(prepares)
    size = sum(p.stat().st_size for p in log_files(raw))
    rows = [
        (f"plain `pyarrow.csv.read_csv` (floor, all threads; median of {args.repeats})", floor),
        (f"`prepare` end to end (Ray Data, {args.num_cpus} CPUs; median of {args.repeats})", prepared),
        ("`prepare`, its first run on the new Ray instance", prepares[0]),
        (f"pandas groupby script (1 process, {args.pandas_files} file(s))", baseline),
    ]
    lines = [f"**{fmt}**: {len(log_files(raw))} files, {size / 2**30:.2f} GiB, {floor.rows:,} rows", "",
             "| step | rows | wall s | rows/s | vs plain read | vs pandas | CPU s per 1M rows |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, step in rows:
        lines.append(f"| {name} | {step.rows:,} | {step.wall:.1f} | {step.rate:,.0f} | {step.rate / floor.rate:.2f}x | "
                     f"{step.rate / baseline.rate:.1f}x | {step.cpu_per_million:.2f} |")
    timing = manifest["timing"]
    lines += ["", f"every run, wall s: plain read {', '.join(f'{s.wall:.1f}' for s in reads)}; "
              f"prepare {', '.join(f'{s.wall:.1f}' for s in prepares)}",
              f"prepare's own clock (last run): read + sessionize {timing['read_and_sessionize_s']} s of "
              f"{timing['total_s']} s; {manifest['sessions']['kept']:,} sessions kept", ""]
    return lines, {"vs_read": prepared.rate / floor.rate, "vs_pandas": prepared.rate / baseline.rate,
                   "cpu_vs_read": floor.cpu_per_million / prepared.cpu_per_million,
                   "first_vs_read": prepares[0].rate / floor.rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=600_000, help="sessions to generate (default 600K: ~10M rows)")
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=10, help="days = log files (default 10: ~1M rows each)")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench_prepare", help="where raw/prepared data go")
    parser.add_argument("--formats", nargs="+", default=["csv", "csv.gz"], choices=["csv", "csv.gz"],
                        help="raw formats to compare on (default both)")
    parser.add_argument("--pandas-files", type=int, default=1, help="log files the pandas baseline reads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="plain read and prepare alternately, N times each; "
                        "the figures are the medians, the first prepare is shown too (default 5)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--object-store-gib", type=float, help="Ray object store size (default: Ray's)")
    parser.add_argument("--scale", action="store_true", help="3.3M sessions, parquet raw, peak memory vs 12 GiB")
    parser.add_argument("--out", type=Path, help="write the result block here too (refused on a loaded machine)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load_at_start = load_average()
    command = "python benchmarks/prepare_throughput.py " + " ".join(sys.argv[1:])
    lines = [f"### prepare throughput{' (scale)' if args.scale else ''}", "", f"- command: `{command}`",
             f"- machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]

    if args.scale:
        sessions = 3_300_000 if args.sessions == 600_000 else args.sessions
        raw = generate(args.work, sessions, args.tracks, args.days, "parquet")
        start_up = start_ray(args.num_cpus, args.object_store_gib)
        with PeakMemory() as memory:
            manifest, step = run_prepare(raw, args.work / "prepared_scale")
        lines += [
            f"- raw: {sessions:,} sessions, {step.rows:,} rows, parquet, {len(list(raw.glob('log_*')))} files",
            f"- prepare: {step.wall:.1f} s, {step.rate:,.0f} rows/s, {step.cpu_per_million:.2f} CPU s per 1M rows, "
            f"{manifest['sessions']['kept']:,} sessions kept (Ray start-up before the clock: {start_up:.1f} s)",
            f"- peak memory (PSS, driver + Ray processes): {memory.peak / 2**30:.2f} GiB "
            f"({'under' if memory.peak < 12 * 2**30 else 'OVER'} the 12 GiB budget)",
        ]
    else:
        for fmt in args.formats:  # generate first: the synth CLI's load must not overlap the measurements
            generate(args.work, args.sessions, args.tracks, args.days, fmt)
        start_up = start_ray(args.num_cpus, args.object_store_gib)
        lines += [f"- Ray start-up (instance and worker processes, before every clock): {start_up:.1f} s", ""]
        ratios = {}
        for fmt in args.formats:
            block, ratios[fmt] = compare(fmt, args, args.work)
            lines += block
        first = ratios[args.formats[0]]
        met = first["vs_read"] >= TARGET_VS_READ and first["vs_pandas"] >= TARGET_VS_PANDAS
        lines += [f"- targets on {args.formats[0]}: >= {TARGET_VS_READ}x the plain read (goal {GOAL_VS_READ}x), "
                  f">= {TARGET_VS_PANDAS:.0f}x pandas: {'met' if met else 'NOT met'} "
                  f"({first['vs_read']:.2f}x, {first['vs_pandas']:.1f}x; by CPU seconds {first['cpu_vs_read']:.2f}x "
                  f"the plain read; the first prepare on the new instance alone: {first['first_vs_read']:.2f}x)"]
    load_at_end = load_average()
    lines.append(f"- load average (1 min): {load_at_start:.1f} at the start, {load_at_end:.1f} at the end, "
                 f"on {os.cpu_count()} cores")
    emit_result(lines, args.out, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
