"""Throughput of data_pipeline.prepare against a plain CSV read and a pandas baseline.

    python benchmarks/prepare_throughput.py                 # 600K sessions, ~10M rows, 10 CSV files
    python benchmarks/prepare_throughput.py --scale         # 3.3M sessions, parquet raw, peak memory

Default mode, all in one run on the same files:
1. generate the raw set with the synth CLI (kept in --work and reused when its
   config matches);
2. floor: ``pyarrow.csv.read_csv`` of every log file (all cores, typed
   columns), rows/s;
3. ``prepare`` end to end (read, sessionize, vocabulary, encode, write,
   features) on a local Ray instance with every core, rows/s;
4. baseline: a single-process pandas script in the style of the paper's
   preprocessing (read_csv, value_counts vocabulary, groupby session_id,
   sort each group by position, lists of track ids and skips), on the first
   --pandas-files log files (its rate is rows/s, so a subset is a fair
   measure and keeps its memory in bounds).

``--scale``: 3.3M sessions written as parquet, prepared with a 12 GiB budget;
peak memory is the largest sum, sampled every second, of the proportional set
size (PSS, from /proc; Linux only) of this process and all its descendants
(Ray's GCS, raylet, object store and workers).

Prints a markdown block (command, machine, figures) and appends it to
``benchmarks/results/prepare.md`` with --write.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model  # noqa: E402


def machine() -> str:
    model = cpu_model()
    memory = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        memory = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs (nproc), {model}{memory}, {platform.system()}; load average at start {load:.1f}"


# ---------------------------------------------------------------------------
# Memory: PSS of a process tree, from /proc
# ---------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (Ray's daemons and workers)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
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
            total = sum(_pss_bytes(pid) for pid in _descendants(os.getpid()))
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------
# The three contenders
# ---------------------------------------------------------------------------


def generate(work: Path, sessions: int, tracks: int, days: int, fmt: str) -> Path:
    raw = work / f"raw_{fmt}_{sessions}_{tracks}_{days}"
    marker = raw / "synth_done.json"
    if marker.exists():
        return raw
    shutil.rmtree(raw, ignore_errors=True)
    command = [sys.executable, "-m", "data_pipeline.synth", "--sessions", str(sessions), "--tracks", str(tracks),
               "--days", str(days), "--seed", "0", "--format", fmt, "--out", str(raw)]
    print("$", " ".join(command[1:]), file=sys.stderr)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    marker.write_text(json.dumps({"seconds": time.perf_counter() - started}))
    return raw


def plain_read(raw: Path) -> tuple[int, float, float]:
    """Rows, wall seconds and CPU seconds (all threads) of reading every log file with pyarrow."""
    import pyarrow.csv as pacsv

    from data_pipeline.readers import log_convert_options

    rows, started, cpu = 0, time.perf_counter(), time.process_time()
    for path in sorted(raw.glob("log_*.csv*")):
        rows += pacsv.read_csv(path, convert_options=log_convert_options()).num_rows
    return rows, time.perf_counter() - started, time.process_time() - cpu


def pandas_baseline(raw: Path, files: int) -> tuple[int, float, float]:
    """The paper-style script: one process, groupby + per-session sort, track ids and skip_2 only."""
    import pandas as pd

    started, cpu = time.perf_counter(), time.process_time()
    frame = pd.concat([pd.read_csv(p) for p in sorted(raw.glob("log_*.csv*"))[:files]], ignore_index=True)
    counts = frame["track_id_clean"].value_counts()
    vocab = {track: i + 4 for i, track in enumerate(counts.index)}
    sessions = []
    for session_id, group in frame.groupby("session_id", sort=False):
        group = group.sort_values("session_position")
        if not 10 <= len(group) <= 20:
            continue
        sessions.append((session_id, [vocab.get(t, 3) for t in group["track_id_clean"]],
                         group["skip_2"].astype(int).tolist()))
    out = pd.DataFrame(sessions, columns=["session_id", "tracks", "skip_2"])
    out.to_parquet(raw.parent / "pandas_baseline.parquet")
    return len(frame), time.perf_counter() - started, time.process_time() - cpu


def warm_up() -> float:
    """Start Ray's worker processes (and their imports) before the clock starts; returns the seconds it took.

    A fresh Ray instance spends several seconds per worker starting Python and
    importing pyarrow/Ray Data; that fixed cost is reported separately.
    """
    import numpy as np
    import ray
    import ray.data

    started = time.perf_counter()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    def touch(batch):
        import pyarrow.csv  # noqa: F401  (the imports every prepare task needs)
        import pyarrow.dataset  # noqa: F401

        import data_pipeline.sessions  # noqa: F401

        return {"id": np.asarray(batch["id"]) + 1}

    ray.data.range(cpus * 4, override_num_blocks=cpus * 4).map_batches(touch, batch_format="pyarrow").materialize()
    global WARM_UP_SECONDS
    WARM_UP_SECONDS = time.perf_counter() - started
    return WARM_UP_SECONDS


WARM_UP_SECONDS = 0.0


def run_prepare(raw: Path, out: Path, num_cpus: int, object_store_gib: float) -> tuple[dict, float, float]:
    """Manifest, wall seconds and CPU seconds (driver + Ray processes) of one prepare run."""
    import ray

    from data_pipeline.prepare import PrepareOptions, prepare

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, object_store_memory=int(object_store_gib * 2**30), include_dashboard=False,
                 log_to_driver=False)
    warm_up()
    started, cpu = time.perf_counter(), tree_cpu_seconds()
    manifest = prepare(PrepareOptions(raw=raw, out=out, show_progress=False))
    return manifest, time.perf_counter() - started, tree_cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=600_000, help="sessions to generate (default 600K: ~10M rows)")
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=10, help="days = log files (default 10: ~1M rows each)")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench_prepare", help="where raw/prepared data go")
    parser.add_argument("--pandas-files", type=int, default=1, help="log files the pandas baseline reads (default 1)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--object-store-gib", type=float, default=0.5)
    parser.add_argument("--scale", action="store_true", help="3.3M sessions, parquet raw, peak memory vs 12 GiB")
    parser.add_argument("--write", action="store_true", help="append the figures to benchmarks/results/prepare.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/prepare_throughput.py " + " ".join(sys.argv[1:])
    lines = [f"### prepare throughput{' (scale)' if args.scale else ''}", "", f"- command: `{command}`",
             f"- machine: {machine()}"]

    if args.scale:
        sessions = 3_300_000 if args.sessions == 600_000 else args.sessions
        raw = generate(args.work, sessions, args.tracks, args.days, "parquet")
        with PeakMemory() as memory:
            manifest, seconds, _ = run_prepare(raw, args.work / "prepared_scale", args.num_cpus, args.object_store_gib)
        rows = manifest["rows"]["read"]
        lines += [
            f"- raw: {sessions:,} sessions, {rows:,} rows, parquet, {args.days} files",
            f"- prepare: {seconds:.1f} s, {rows / seconds:,.0f} rows/s, {manifest['sessions']['kept']:,} sessions kept "
            f"(Ray worker start-up before the clock: {WARM_UP_SECONDS:.1f} s)",
            f"- peak memory (PSS, driver + Ray processes): {memory.peak / 2**30:.2f} GiB "
            f"({'under' if memory.peak < 12 * 2**30 else 'OVER'} the 12 GiB budget)",
        ]
    else:
        raw = generate(args.work, args.sessions, args.tracks, args.days, "csv")
        size = sum(p.stat().st_size for p in raw.glob("log_*"))
        read_rows, read_seconds, read_cpu = plain_read(raw)
        manifest, prepare_seconds, prepare_cpu = run_prepare(raw, args.work / "prepared", args.num_cpus,
                                                             args.object_store_gib)
        pandas_rows, pandas_seconds, pandas_cpu = pandas_baseline(raw, args.pandas_files)
        per_million = lambda cpu, rows: cpu / rows * 1e6  # noqa: E731
        read_rate, prepare_rate, pandas_rate = (read_rows / read_seconds, manifest["rows"]["read"] / prepare_seconds,
                                                pandas_rows / pandas_seconds)
        lines += [
            f"- raw: {args.sessions:,} sessions, {read_rows:,} rows, {size / 2**30:.2f} GiB CSV in {args.days} files",
            "",
            "| step | rows | wall s | rows/s (wall) | vs plain read | vs pandas | CPU s per 1M rows |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| plain `pyarrow.csv.read_csv` (floor) | {read_rows:,} | {read_seconds:.1f} | {read_rate:,.0f} | 1.00x | "
            f"{read_rate / pandas_rate:.1f}x | {per_million(read_cpu, read_rows):.2f} |",
            f"| `prepare` end to end (Ray Data, {args.num_cpus} CPUs) | {manifest['rows']['read']:,} | "
            f"{prepare_seconds:.1f} | {prepare_rate:,.0f} | {prepare_rate / read_rate:.2f}x | {prepare_rate / pandas_rate:.1f}x | "
            f"{per_million(prepare_cpu, manifest['rows']['read']):.2f} |",
            f"| pandas groupby script (1 process, {args.pandas_files} file(s)) | {pandas_rows:,} | {pandas_seconds:.1f} | "
            f"{pandas_rate:,.0f} | {pandas_rate / read_rate:.2f}x | 1.0x | {per_million(pandas_cpu, pandas_rows):.2f} |",
            "",
            f"- prepare's own timing: read + sessionize {manifest['timing']['read_and_sessionize_s']} s of "
            f"{manifest['timing']['total_s']} s; Ray worker start-up before the clock: {WARM_UP_SECONDS:.1f} s",
            "- targets: >= 0.5x plain read, >= 5x pandas",
        ]
    block = "\n".join(lines) + "\n"
    print(block)
    if args.write:
        results = REPO / "benchmarks" / "results" / "prepare.md"
        results.parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a") as f:
            f.write("\n" + block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
