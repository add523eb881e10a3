"""Track features: the ``tf_*`` files -> ``track_features.npy``, one standardised row per vocabulary id.

Columns (``schema.TRACK_FEATURE_NAMES``): the 29 numeric features (``mode``
as minor 0 / major 1), standardised with the mean and standard deviation of
the vocabulary's tracks that have a row, then ``features_missing``: 1 for the
reserved ids and for tracks without a feature row (their other columns are 0).

Nothing non-finite is ever written. A cell that is empty, NaN, infinite
(``inf``, ``-inf``, or a number such as ``1e309`` that overflows) or an
unknown ``mode`` is imputed with the column mean (0 after standardising) and
counted in the manifest by column. Finite but huge values cannot overflow the
statistics either: when the plain mean or standard deviation would not be
finite, they are computed on the column divided by its largest magnitude.
The first row of a track wins; later rows for it are counted as duplicates.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline import readers
from data_pipeline.schema import FIRST_TRACK_ID, MODE_VALUES, TRACK_FEATURE_COLUMNS, TRACK_FEATURE_NAMES

NUMERIC_NAMES = tuple(n for n in TRACK_FEATURE_COLUMNS if n != "track_id")
MODES = pa.array(list(MODE_VALUES), pa.string())
MODE_CODES = np.array(list(MODE_VALUES.values()), dtype=np.float64)


def _column(batch: pa.RecordBatch, name: str, take: pa.Array) -> tuple[np.ndarray, int]:
    """A feature column's values at rows `take` as float64 (NaN where missing) and how many mode values were unknown."""
    column = batch.column(name).take(take)
    if name != "mode":
        return pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False).astype(np.float64), 0
    index = pc.index_in(column, value_set=MODES)
    known = index.is_valid().to_numpy(zero_copy_only=False)
    values = np.where(known, MODE_CODES[pc.fill_null(index, 0).to_numpy(zero_copy_only=False)], np.nan)
    return values, int((~known & column.is_valid().to_numpy(zero_copy_only=False)).sum())


def _statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: the mean and standard deviation to standardise with, and the scale they are in.

    Standardised = (values / scale - mean) / std. The scale is 1 unless the
    plain statistics overflow; then it is the column's largest magnitude.
    """
    columns = values.shape[1]
    if not len(values):
        return np.zeros(columns), np.ones(columns), np.ones(columns)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-missing column: handled below (mean 0)
        scale = np.ones(columns)
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        overflow = ~np.isfinite(mean) | ~np.isfinite(std)
        overflow &= ~np.isnan(values).all(axis=0)  # an all-missing column is not an overflow
        if overflow.any():
            scale[overflow] = np.nanmax(np.abs(values[:, overflow]), axis=0)
            scaled = values[:, overflow] / scale[overflow]
            mean[overflow], std[overflow] = np.nanmean(scaled, axis=0), np.nanstd(scaled, axis=0)
    mean = np.nan_to_num(mean)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return mean, std, scale


def build_track_features(paths: tuple[Path, ...], vocab_ids: pa.Array) -> tuple[np.ndarray, dict]:
    """float32 [vocab, 30] aligned to vocabulary ids (see schema.TRACK_FEATURE_NAMES) and its manifest entry."""
    vocab_size, width = len(vocab_ids), len(NUMERIC_NAMES)
    raw = np.zeros((vocab_size, width), dtype=np.float64)
    have = np.zeros(vocab_size, dtype=bool)
    rows_read = duplicates = outside = without_id = invalid_mode = 0
    tracks_only = vocab_ids.slice(FIRST_TRACK_ID)
    for path in paths:
        for batch in readers.iter_track_feature_batches(path):
            rows_read += batch.num_rows
            ids = batch.column("track_id")
            without_id += ids.null_count
            index = pc.index_in(ids, value_set=tracks_only)
            found = index.is_valid().to_numpy(zero_copy_only=False)
            outside += int((~found).sum()) - ids.null_count
            rows = pc.fill_null(index, 0).to_numpy(zero_copy_only=False)[found].astype(np.int64) + FIRST_TRACK_ID
            if not len(rows):
                continue
            unique_rows, first = np.unique(rows, return_index=True)
            fresh = ~have[unique_rows]
            duplicates += len(rows) - int(fresh.sum())
            take = pa.array(np.flatnonzero(found)[first[fresh]])
            for j, name in enumerate(NUMERIC_NAMES):
                values, unknown_modes = _column(batch, name, take)
                raw[unique_rows[fresh], j] = values
                invalid_mode += unknown_modes
            have[unique_rows[fresh]] = True
    with_features = raw[have]
    nan_cells = np.isnan(with_features).sum(axis=0)
    infinite = np.isinf(with_features)
    with_features[infinite] = np.nan  # treated as missing: imputed with the mean, counted
    mean, std, scale = _statistics(with_features)
    with np.errstate(all="ignore"):
        standardised = (with_features / scale - mean) / std
    standardised = np.nan_to_num(standardised, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    matrix = np.zeros((vocab_size, width + 1), dtype=np.float32)
    matrix[have, :width] = standardised
    matrix[~have, width] = 1.0  # features_missing: reserved ids and tracks without a row
    largest = np.finfo(np.float64).max
    info = {
        "names": list(TRACK_FEATURE_NAMES),
        "mean": [float(v) for v in np.clip(mean * scale, -largest, largest)],
        "std": [float(v) for v in np.clip(std * scale, -largest, largest)],
        "files": [p.name for p in paths],
        "rows_read": rows_read,
        "rows_outside_vocabulary": outside,
        "rows_without_track_id": without_id,
        "duplicate_rows": duplicates,
        "tracks_with_features": int(have[FIRST_TRACK_ID:].sum()),
        "missing": int((~have[FIRST_TRACK_ID:]).sum()),
        "nan_cells_imputed": {n: int(c) for n, c in zip(NUMERIC_NAMES, nan_cells) if c},
        "non_finite_cells_imputed": {n: int(c) for n, c in zip(NUMERIC_NAMES, infinite.sum(axis=0)) if c},
        "invalid_mode_values": invalid_mode,
    }
    return matrix, info
