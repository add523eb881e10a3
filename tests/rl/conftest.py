"""A tiny prepared dataset with a planted skip rule, for the RL tests.

Every track has a "quality" q = +1 or -1, stored as its first track feature;
a session's track is skipped exactly when q = -1 (so the rule is learnable from
the embedding table, which ends with the track features). Sessions are 20
tracks long (paper protocol).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.schema import (
    FIRST_TRACK_ID,
    FORMAT_VERSION,
    MAX_SESSION_LENGTH,
    PREPARED_SESSION_SCHEMA,
    SEQUENCE_COLUMN_NAMES,
    TRACK_FEATURE_NAMES,
    to_shard_table,
)

TRACKS = 40
SESSIONS = {"train": 240, "val": 60, "test": 40}


def write_tiny_prepared(out: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vocab_size = FIRST_TRACK_ID + TRACKS
    quality = np.where(np.arange(vocab_size) % 2 == 0, 1.0, -1.0)
    features = rng.normal(0.0, 0.3, size=(vocab_size, len(TRACK_FEATURE_NAMES))).astype(np.float32)
    features[:, 0] = quality
    features[:FIRST_TRACK_ID] = 0.0
    counts = np.zeros(vocab_size, dtype=np.int64)
    (out / "sessions").mkdir(parents=True)
    for split, n in SESSIONS.items():
        tracks = rng.integers(FIRST_TRACK_ID, vocab_size, size=(n, MAX_SESSION_LENGTH))
        counts += np.bincount(tracks.ravel(), minlength=vocab_size) if split == "train" else 0
        columns = {name: np.zeros((n, MAX_SESSION_LENGTH), dtype=np.int64) for name in SEQUENCE_COLUMN_NAMES}
        columns["tracks"] = tracks
        columns["skip_2"] = (quality[tracks] < 0).astype(np.int64)
        columns["context_type"][:] = 1 + rng.integers(0, 3, size=(n, 1))
        columns["hour_of_day"][:] = rng.integers(0, 24, size=(n, 1))
        table = {
            "session_id": [f"{split}-{i}" for i in range(n)],
            "date": ["2018-07-15"] * n,
            "length": np.full(n, MAX_SESSION_LENGTH, dtype=np.int8),
        }
        for field in PREPARED_SESSION_SCHEMA:
            if field.name in columns:
                table[field.name] = [list(row) for row in columns[field.name]]
        (out / "sessions" / split).mkdir()
        pq.write_table(to_shard_table(pa.table(table, schema=PREPARED_SESSION_SCHEMA)), out / "sessions" / split / "part-0.parquet")
    vocab = pa.table(
        {
            "track_id": ["<pad>", "<mask>", "<skip>", "<unk>"] + [f"t{i}" for i in range(TRACKS)],
            "index": np.arange(vocab_size, dtype=np.int64),
            "count": counts,
        }
    )
    pq.write_table(vocab, out / "vocab.parquet")
    np.save(out / "track_features.npy", features)
    (out / "categories.json").write_text(json.dumps({"context_type": ["<pad/unknown>", "a", "b", "c"]}))
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": f"tiny-rl-{seed}",
        "vocab": {"size": vocab_size},
        "track_features": {"names": list(TRACK_FEATURE_NAMES)},
        "splits": {split: {"sessions": n} for split, n in SESSIONS.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """The planted-rule dataset above (240 train / 60 val / 40 test sessions, 40 tracks)."""
    return write_tiny_prepared(tmp_path_factory.mktemp("rl_tiny_prepared"))


@pytest.fixture(scope="session")
def tiny_table(tiny_prepared, tmp_path_factory) -> Path:
    """A fixed embedding table for the tiny dataset: its track features (no word2vec needed)."""
    path = tmp_path_factory.mktemp("rl_table") / "table.npy"
    np.save(path, np.load(tiny_prepared / "track_features.npy"))
    return path
