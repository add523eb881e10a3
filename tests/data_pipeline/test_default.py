"""The embedded default dataset is built once, reused while current, rebuilt when not."""

from __future__ import annotations

import json

import pytest

import data_pipeline.default as default
from data_pipeline.dataset import open_prepared
from data_pipeline.synth import SynthConfig


@pytest.fixture
def small_default(monkeypatch):
    # The real default (20K sessions) takes a minute; the mechanism is the same at any size.
    monkeypatch.setattr(default, "DEFAULT_SYNTH", SynthConfig(sessions=300, tracks=60, days=1, seed=1))


def test_default_dataset_is_built_on_first_use_and_reused(small_default, tmp_path, ray_session):
    prepared = default.default_dataset(tmp_path, show_progress=False)
    assert prepared == tmp_path / "prepared"
    assert open_prepared(prepared).manifest["sessions"]["kept"] == 300
    stamp = (prepared / "manifest.json").stat().st_mtime_ns
    assert default.default_dataset(tmp_path, show_progress=False) == prepared
    assert (prepared / "manifest.json").stat().st_mtime_ns == stamp


def test_incomplete_prepared_default_is_rebuilt(small_default, tmp_path, ray_session):
    prepared = default.default_dataset(tmp_path, show_progress=False)
    (prepared / "vocab.parquet").unlink()
    default.default_dataset(tmp_path, show_progress=False)
    assert open_prepared(prepared).vocab_size > 0


def test_raw_made_with_another_generator_config_is_regenerated(small_default, tmp_path, ray_session, monkeypatch):
    default.default_dataset(tmp_path, show_progress=False)
    monkeypatch.setattr(default, "DEFAULT_SYNTH", SynthConfig(sessions=200, tracks=60, days=1, seed=1))
    prepared = default.default_dataset(tmp_path, show_progress=False)
    assert json.loads((tmp_path / "raw" / default.CONFIG_FILE).read_text())["sessions"] == 200
    assert open_prepared(prepared).manifest["sessions"]["kept"] == 200
