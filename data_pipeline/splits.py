"""Which split a session goes to: a stable hash of its id, or its date.

The hash (``stable_hash``) is FNV-1a over the id's UTF-8 bytes with the
murmur3 finaliser: the same on every machine, run and Python version, so a
session lands in the same split whenever the data is prepared again, and
vectorised over Arrow's string buffer. ``SplitRule`` turns hashes (and dates)
into split indices into ``schema.SPLITS``; ``--fold`` rotates the held-out
slices for cross-validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class SplitRule:
    """Deterministic split by a stable hash of session_id, or test by date.

    Each session's hash maps to u in [0, 1): test is u < test_fraction, val the
    next val_fraction. `fold` k shifts both slices by k * test_fraction, so the
    test slices of folds 0..n-1 (n = 1 / test_fraction) are disjoint and every
    session is tested exactly once: n-fold cross-validation (with --test-dates,
    the val slice moves by k * val_fraction instead).
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    test_dates: tuple[str, ...] = ()
    fold: int = 0

    def assign(self, hashes: np.ndarray, dates: pa.Array) -> np.ndarray:
        """Split index (0 train, 1 val, 2 test) per session (`dates`: ISO strings)."""
        u = (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # uniform in [0, 1)
        if self.fold:
            step = self.val_fraction if self.test_dates else self.test_fraction
            u = np.mod(u - self.fold * step, 1.0)
        split = np.zeros(len(hashes), dtype=np.int8)
        if self.test_dates:
            split[u < self.val_fraction] = 1
            dates = dates.dictionary_decode() if pa.types.is_dictionary(dates.type) else dates
            on_test_date = pc.fill_null(pc.is_in(dates, value_set=pa.array(self.test_dates, pa.string())), False)
            split[np.asarray(on_test_date.to_numpy(zero_copy_only=False), dtype=bool)] = 2
        else:
            split[u < self.test_fraction + self.val_fraction] = 1
            split[u < self.test_fraction] = 2
        return split


def stable_hash(ids: pa.Array | list[str]) -> np.ndarray:
    """64-bit hash of each id: FNV-1a over its UTF-8 bytes, then the murmur3 finaliser.

    Stable across runs, machines and Python versions (it decides the splits),
    and vectorised over the Arrow string buffer (a Python hash per id costs
    more than sessionizing the block).
    """
    ids = pa.array(ids, pa.string()) if isinstance(ids, list) else ids.cast(pa.string())
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset : ids.offset + n + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if ids.buffers()[2] is not None else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets)
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    uniform = bool((lengths == lengths[0]).all())
    for j in range(int(lengths.max())):
        if uniform:
            h = (h ^ data[starts + j].astype(np.uint64)) * prime
        else:
            active = np.flatnonzero(lengths > j)
            h[active] = (h[active] ^ data[starts[active] + j].astype(np.uint64)) * prime
    for shift, multiplier in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53), (33, None)):
        h ^= h >> np.uint64(shift)
        if multiplier:
            h *= np.uint64(multiplier)
    return h
