"""What the benchmark scripts say about the machine they ran on, and how they hand over their tables."""

from __future__ import annotations

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
