"""The embedded default dataset: synthetic MSSD, generated and prepared on first use.

``default_dataset()`` returns ``<repo>/data/synthetic/prepared``, creating it
the first time (about a minute on 2 cores) and reusing it afterwards:

- ``data/synthetic/raw``: ``data_pipeline.synth`` with ``DEFAULT_SYNTH``
  (20,000 sessions over 3 days, 2,000 tracks, seed 0: about 336K log rows).
  Big enough that the models separate from the baselines, small enough that
  the main job's search over six model families finishes in minutes on 2 cores.
- ``data/synthetic/prepared``: ``data_pipeline.prepare`` with its defaults
  (vocabulary = every training track, 10% val and 10% test by session hash).

Reuse is checked, not assumed: the raw folder must carry the generator
config it was made with, and the prepared manifest's fingerprint must match
the raw files and options; anything else is rebuilt. A file lock keeps two
processes (e.g. two Tune trials) from building it at once, and both
generation and preparation write to a temporary folder renamed into place.

    python -m data_pipeline.default [--root DIR]    # build (if needed) and print the path
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
import uuid
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from data_pipeline import readers
from data_pipeline.prepare import PrepareOptions, fingerprint, prepare
from data_pipeline.schema import SchemaError
from data_pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / "data" / "synthetic"
DEFAULT_SYNTH = SynthConfig(sessions=20_000, tracks=2_000, days=3, seed=0)
CONFIG_FILE = "synth_config.json"  # written last into raw/: its presence means the raw folder is complete


@contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _raw_is_current(raw: Path) -> bool:
    marker = raw / CONFIG_FILE
    return marker.exists() and json.loads(marker.read_text()) == asdict(DEFAULT_SYNTH)


def _prepared_is_current(raw: Path, prepared: Path, options: PrepareOptions) -> bool:
    try:
        manifest = json.loads((prepared / "manifest.json").read_text())
        from data_pipeline.dataset import open_prepared

        open_prepared(prepared)
    except (OSError, ValueError, SchemaError):
        return False
    return manifest.get("fingerprint") == fingerprint(readers.find_raw_files(raw), options)


def _generate(raw: Path, show_progress: bool) -> None:
    staging = raw.with_name(f".{raw.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        generate(DEFAULT_SYNTH, staging, show_progress=show_progress)
        (staging / CONFIG_FILE).write_text(json.dumps(asdict(DEFAULT_SYNTH), indent=1))
        if raw.exists():
            shutil.rmtree(raw)
        staging.rename(raw)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def default_dataset(root: str | Path | None = None, show_progress: bool = True) -> Path:
    """The prepared default synthetic dataset under `root` (default ``<repo>/data/synthetic``)."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    raw, prepared = root / "raw", root / "prepared"
    options = PrepareOptions(raw=raw, out=prepared, show_progress=show_progress)
    if _raw_is_current(raw) and _prepared_is_current(raw, prepared, options):
        return prepared
    with _locked(root):
        if not _raw_is_current(raw):
            if show_progress:
                print(f"[default] generating the synthetic MSSD default dataset into {raw}", file=sys.stderr)
            _generate(raw, show_progress)
        if not _prepared_is_current(raw, prepared, options):
            if show_progress:
                print(f"[default] preparing it into {prepared}", file=sys.stderr)
            prepare(options)
    return prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline.default",
        description="Build the embedded synthetic default dataset if needed and print its prepared folder.",
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"where to keep it (default {DEFAULT_ROOT})")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        print(default_dataset(args.root, show_progress=not args.quiet))
    except SchemaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
