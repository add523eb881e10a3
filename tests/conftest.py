"""Shared fixtures: one local Ray instance per test session, tiny synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A small real MSSD sample (log_sample.csv.gz, tf_small_covered.csv): MSSD_SAMPLE_DIR, else where CI keeps it.
SHARED_DATA = Path(os.environ.get("MSSD_SAMPLE_DIR") or REPO.parent / "shared" / "data" / "mssd_sample")


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance (2 CPUs, bounded object store), started once per session."""
    import ray

    from data_pipeline.ray_runtime import init_ray

    init_ray(num_cpus=2, object_store_memory=512 * 1024 * 1024)
    yield ray
    # Left running for the rest of the session; pytest exit shuts it down.


@pytest.fixture(scope="session")
def mssd_sample_dir() -> Path:
    """The real MSSD sample (MSSD_SAMPLE_DIR; skips when absent)."""
    if not (SHARED_DATA / "log_sample.csv.gz").exists():
        pytest.skip(f"real MSSD sample not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A tiny synthetic raw MSSD directory (log_*.csv per day, tf_*.csv)."""
    from data_pipeline.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synthetic_raw")
    generate(SynthConfig(sessions=3000, tracks=400, days=2, seed=7), out)
    return out


@pytest.fixture(scope="session")
def synthetic_prepared(synthetic_raw, tmp_path_factory, ray_session) -> Path:
    """The tiny synthetic set prepared with the default options (Ray Data path)."""
    from data_pipeline.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("synthetic_prepared")
    prepare(PrepareOptions(raw=synthetic_raw, out=out, min_count=1, show_progress=False))
    return out


os.environ.setdefault("RAY_DEDUP_LOGS", "0")
