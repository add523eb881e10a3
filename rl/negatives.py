"""Negative sampling for the session-replay environment (paper section 2.3, point 2).

At each step of the paper formulation the environment scores a small candidate
set instead of the whole vocabulary: the logged (positive) track plus `ratio`
negatives (the paper uses 1:99). Negatives are drawn with replacement among the
real tracks (ids from ``FIRST_TRACK_ID``), either uniformly or in proportion to
their training play count ("popularity"), and are never the positive itself.

Drawing is vectorised: one uniform number per negative, looked up in the
cumulative distribution with ``searchsorted`` (O(log V) each), where
``Generator.choice(p=...)`` rebuilds an O(V) table on every call.
"""

from __future__ import annotations

import numpy as np

from data_pipeline.schema import FIRST_TRACK_ID

SAMPLING_MODES = ("popularity", "uniform")


def play_counts(vocab, vocab_size: int) -> np.ndarray:
    """Training play count per vocabulary id, float64 [vocab_size], from a prepared vocabulary table
    (``vocab.parquet``: ``index`` and ``count`` columns)."""
    counts = np.zeros(vocab_size)
    counts[vocab.column("index").to_numpy()] = vocab.column("count").to_numpy()
    return counts


class NegativeSampler:
    """Draws `ratio` negatives per positive track id.

    `counts` is the play count per vocabulary id (length = vocab size; the
    reserved ids below ``FIRST_TRACK_ID`` are never drawn, whatever their count).
    """

    def __init__(self, counts: np.ndarray, ratio: int = 99, mode: str = "popularity", seed: int = 0):
        if mode not in SAMPLING_MODES:
            raise ValueError(f"negative sampling mode {mode!r} is unknown: choose one of {', '.join(SAMPLING_MODES)}")
        if ratio < 1:
            raise ValueError(f"negative ratio must be at least 1 (negatives per positive), got {ratio}")
        counts = np.asarray(counts, dtype=np.float64)
        if len(counts) - FIRST_TRACK_ID < 2:
            raise ValueError(
                f"negative sampling needs at least 2 real tracks in the vocabulary, got {len(counts) - FIRST_TRACK_ID}; "
                "prepare a larger dataset"
            )
        weights = np.ones(len(counts)) if mode == "uniform" else np.maximum(counts, 0.0) + 1.0  # +1: unseen tracks stay drawable
        weights[:FIRST_TRACK_ID] = 0.0
        self.probabilities = weights / weights.sum()
        self.cumulative = np.cumsum(self.probabilities)
        self.ratio = int(ratio)
        self.mode = mode
        self.rng = np.random.default_rng(seed)

    def _draw(self, shape) -> np.ndarray:
        # side="right": a uniform draw u lands on the first id whose cumulative mass exceeds it, so the
        # reserved ids (zero mass) are never drawn; min() guards against rounding at the top end.
        ids = np.searchsorted(self.cumulative, self.rng.random(shape), side="right")
        return np.minimum(ids, len(self.cumulative) - 1)

    def sample(self, positives: np.ndarray) -> np.ndarray:
        """Negatives for each positive: int64 [B, ratio], none equal to its row's positive."""
        positives = np.asarray(positives, dtype=np.int64).reshape(-1)
        negatives = self._draw((len(positives), self.ratio))
        clash = negatives == positives[:, None]
        while clash.any():  # redraw only the clashing cells; terminates since >= 2 tracks have mass
            negatives[clash] = self._draw(int(clash.sum()))
            clash = negatives == positives[:, None]
        return negatives
