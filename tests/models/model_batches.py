"""Tiny batches and data for the model tests (a helper module, not a test file)."""

from __future__ import annotations

import numpy as np
import torch

from data_pipeline.dataset import split_halves
from data_pipeline.schema import FIRST_TRACK_ID, MAX_SESSION_LENGTH, SEQUENCE_COLUMN_NAMES, TRACK_FEATURE_NAMES
from models.data import DataInfo

VOCAB_SIZE = 40
CATEGORIES = {
    "context_type": ["<pad/unknown>", "editorial_playlist", "user_collection", "catalog", "radio", "personalized_playlist", "charts"],
    "hist_user_behavior_reason_start": ["<pad/unknown>"] + [f"r{i}" for i in range(11)],
    "hist_user_behavior_reason_end": ["<pad/unknown>"] + [f"r{i}" for i in range(11)],
}


def raw_sessions(n: int, protocol: str, seed: int = 0, vocab_size: int = VOCAB_SIZE) -> dict[str, np.ndarray]:
    """`n` random prepared sessions (columns as in the prepared parquet files)."""
    rng = np.random.default_rng(seed)
    length = np.full(n, MAX_SESSION_LENGTH) if protocol == "paper" else rng.integers(10, MAX_SESSION_LENGTH + 1, n)
    real = np.arange(MAX_SESSION_LENGTH)[None, :] < length[:, None]
    batch: dict[str, np.ndarray] = {"length": length}
    for name in SEQUENCE_COLUMN_NAMES:
        if name == "tracks":
            values = rng.integers(FIRST_TRACK_ID, vocab_size, (n, MAX_SESSION_LENGTH))
        elif name in ("n_seekfwd", "n_seekback"):
            values = rng.integers(0, 4, (n, MAX_SESSION_LENGTH))
        elif name == "hour_of_day":
            values = rng.integers(0, 24, (n, MAX_SESSION_LENGTH))
        elif name in ("context_type",):
            values = rng.integers(1, 7, (n, MAX_SESSION_LENGTH))
        elif name in ("reason_start", "reason_end"):
            values = rng.integers(1, 12, (n, MAX_SESSION_LENGTH))
        else:
            values = rng.integers(0, 2, (n, MAX_SESSION_LENGTH))
        batch[name] = np.where(real, values, 0)
    return batch


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v) for k, v in batch.items() if k not in ("session_id", "date")}


def make_batch(n: int = 6, protocol: str = "paper", seed: int = 0, vocab_size: int = VOCAB_SIZE) -> dict[str, torch.Tensor]:
    """A task batch of `n` random sessions under `protocol`, as torch tensors."""
    return to_torch(split_halves(raw_sessions(n, protocol, seed, vocab_size), protocol))


def make_info(vocab_size: int = VOCAB_SIZE, seed: int = 0, pretrained: dict | None = None) -> DataInfo:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(vocab_size, len(TRACK_FEATURE_NAMES))).astype(np.float32)
    features[:FIRST_TRACK_ID] = 0.0
    return DataInfo(vocab_size, features, CATEGORIES, dict(pretrained or {}))


def playlist_sessions(n: int, groups: int, tracks_per_group: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sessions of 20 tracks, each drawn from one of `groups` disjoint playlists, in playlist order
    from a random start: (tracks (n, 20), lengths (n,)). Track ids from FIRST_TRACK_ID."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, n)
    start = rng.integers(0, tracks_per_group, n)
    offsets = (start[:, None] + np.arange(MAX_SESSION_LENGTH)[None, :]) % tracks_per_group
    tracks = FIRST_TRACK_ID + group[:, None] * tracks_per_group + offsets
    return tracks.astype(np.int64), np.full(n, MAX_SESSION_LENGTH, dtype=np.int64)


def write_prepared(root, tracks: np.ndarray, lengths: np.ndarray, vocab_size: int, fingerprint: str = "test-fingerprint"):
    """A minimal prepared dataset directory holding `tracks` as its train split (other columns zero)."""
    import json
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_pipeline.dataset import open_prepared
    from data_pipeline.schema import FORMAT_VERSION, PREPARED_SESSION_SCHEMA, SPLITS, to_shard_table

    root = Path(root)
    n = len(lengths)
    columns = {"session_id": [f"s{i}" for i in range(n)], "date": ["2018-07-15"] * n, "length": lengths.astype(np.int8)}
    for name in SEQUENCE_COLUMN_NAMES:
        values = tracks if name == "tracks" else np.zeros_like(tracks)
        columns[name] = list(values)
    table = pa.Table.from_pydict(columns, schema=PREPARED_SESSION_SCHEMA)
    for split in SPLITS:
        (root / "sessions" / split).mkdir(parents=True, exist_ok=True)
    pq.write_table(to_shard_table(table), root / "sessions" / "train" / "part-0.parquet")
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "vocab": {"size": vocab_size},
        "splits": {"train": {"sessions": n}, "val": {"sessions": 0}, "test": {"sessions": 0}},
        "track_features": {"names": list(TRACK_FEATURE_NAMES)},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "categories.json").write_text(json.dumps(CATEGORIES))
    np.save(root / "track_features.npy", make_info(vocab_size).track_features)
    ids = np.arange(vocab_size)
    pq.write_table(pa.table({"track_id": [f"t{i}" for i in ids], "index": ids, "count": np.ones(vocab_size, np.int64)}), root / "vocab.parquet")
    return open_prepared(root)


# Tiny versions of every family (pre-training off unless a test supplies it).
TINY_CONFIGS = {
    "lstm": dict(embedding_dim=16, hidden_size=24),
    "lstm_w2v": dict(embedding_dim=16, hidden_size=24, use_pretrained=False),
    "bigru": dict(embedding_dim=16, hidden_size=24, use_pretrained=False),
    "transformer": dict(embedding_dim=16, num_heads=2, ffn_dim=32),
    "bert": dict(embedding_dim=16, num_layers=2, num_heads=2, ffn_dim=32, use_pretrained=False),
    "bert_fused": dict(
        embedding_dim=16, num_heads=2, ffn_dim=32, use_pretrained=False,
        bert_embedding_dim=16, bert_num_layers=1, bert_num_heads=2, bert_ffn_dim=32,
    ),
}
# The families that decode the second half step by step (every one but BERT).
DECODER_MODELS = ("lstm", "lstm_w2v", "bigru", "transformer", "bert_fused")


def tiny_model(name: str, task: str, info: DataInfo | None = None, seed: int = 0, **overrides):
    """A tiny model of family `name` for `task`, built under torch.manual_seed(seed)."""
    from models.registry import get_model

    spec = get_model(name)
    config = spec.make_config({**TINY_CONFIGS[name], **overrides})
    torch.manual_seed(seed)
    return spec.build(config, task, info or make_info())
