"""What the benchmark scripts say about the machine they ran on, and how they hand over their tables."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(block: str, out: Path | None) -> None:
    """Print a benchmark's markdown block and, when `out` is given, write it there too."""
    print(block)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(block + "\n")


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def describe_machine(load_at_start: float) -> str:
    """One line for a result block: cores, CPU, Python, and the load average at the start and now."""
    return (f"{os.cpu_count()} CPU cores, {cpu_model()}, Python {platform.python_version()}; load average (1 min) "
            f"{load_at_start:.1f} at the start, {load_average():.1f} at the end")


def emit_result(lines: list[str], out: Path | None, load_at_start: float) -> None:
    """Print a benchmark's result block; write it to `out` too only when the run started on a quiet machine
    (otherwise the block says why it was not written)."""
    if out and not quiet(load_at_start):
        lines = [*lines, "", f"NOT WRITTEN to {out}: the load average at the start ({load_at_start:.1f}) was above the "
                 f"{os.cpu_count()} cores, so other work shared the CPUs and slowed every wall-clock figure; rerun on "
                 "a quiet machine."]
        out = None
    emit("\n".join(lines), out)


def quiet(load_at_start: float) -> bool:
    """Whether a run that started at this load average measured a quiet machine (load at most the cores).

    On a machine shared with other jobs the figures measure the other jobs too: benchmarks refuse to
    write such a run as a result.
    """
    return load_at_start <= (os.cpu_count() or 1)


def descendants(root: int) -> list[int]:
    """`root` and every live process below it, from /proc (Linux)."""
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
