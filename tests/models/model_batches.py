"""Tiny batches and data for the model tests (a helper module, not a test file)."""

from __future__ import annotations

import numpy as np
import torch

from data_pipeline.dataset import split_halves
from data_pipeline.schema import FIRST_TRACK_ID, MAX_SESSION_LENGTH, SEQUENCE_COLUMN_NAMES, TRACK_FEATURE_NAMES
from models.common import DataInfo

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
