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

Two steps: ``read_track_features`` parses the files, ``build_track_features``
aligns the rows to the vocabulary and standardises them. Prepare runs each as
a Ray task beside its own work on the driver and the shards; a damaged file
ends the run before anything replaces the output folder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline import readers
from data_pipeline.schema import FIRST_TRACK_ID, MODE_VALUES, TRACK_FEATURE_COLUMNS, TRACK_FEATURE_NAMES

NUMERIC_NAMES = tuple(n for n in TRACK_FEATURE_COLUMNS if n != "track_id")
MODES = pa.array(list(MODE_VALUES), pa.string())
MODE_CODES = np.array(list(MODE_VALUES.values()), dtype=np.float64)


def _values(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A feature column as float64 (NaN where missing), and for ``mode`` which cells held an unknown value."""
    column = batch.column(name)
    if name != "mode":
        return pc.fill_null(column, np.nan).to_numpy(zero_copy_only=False).astype(np.float64), None
    index = pc.index_in(column, value_set=MODES)
    known = index.is_valid().to_numpy(zero_copy_only=False)
    values = np.where(known, MODE_CODES[pc.fill_null(index, 0).to_numpy(zero_copy_only=False)], np.nan)
    return values, ~known & column.is_valid().to_numpy(zero_copy_only=False)


@dataclass
class TrackFeatureRows:
    """The tf files read: one row per track id (its first row in file order) and what was set aside."""

    table: pa.Table  # track_id, rows (rows with this id), invalid_mode, then NUMERIC_NAMES as float64
    rows_read: int
    rows_without_track_id: int
    files: list[str]


def read_track_features(paths: list[Path], names: list[str]) -> TrackFeatureRows:
    """Parse every track-feature file (`names`: how the manifest names them). Raises RawInputError (file, line)."""
    parts, rows_read, without_id = [], 0, 0
    for path in paths:
        for batch in readers.iter_track_feature_batches(path):
            rows_read += batch.num_rows
            valid = batch.column("track_id").is_valid()
            without_id += batch.num_rows - int(pc.sum(valid).as_py() or 0)
            batch = batch.filter(valid)
            columns = {"track_id": batch.column("track_id")}
            for name in NUMERIC_NAMES:
                columns[name], unknown = _values(batch, name)
                if unknown is not None:
                    columns["invalid_mode"] = unknown
            parts.append(pa.table(columns))
    schema = pa.schema([("track_id", pa.string()), *[(n, pa.float64()) for n in NUMERIC_NAMES], ("invalid_mode", pa.bool_())])
    table = pa.concat_tables([schema.empty_table(), *[p.select(schema.names).cast(schema) for p in parts]])
    codes = pc.dictionary_encode(table.column("track_id").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)  # codes number ids by first appearance
    table = table.take(pa.array(np.sort(first)))
    table = table.append_column("rows", pa.array(np.bincount(codes, minlength=len(first)).astype(np.int64)))
    return TrackFeatureRows(table, rows_read, without_id, names)


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


def build_track_features(rows: TrackFeatureRows, vocab_ids: pa.Array) -> tuple[np.ndarray, dict]:
    """float32 [vocab, 30] aligned to vocabulary ids (see schema.TRACK_FEATURE_NAMES) and its manifest entry."""
    vocab_size, width = len(vocab_ids), len(NUMERIC_NAMES)
    table = rows.table
    index = pc.index_in(table.column("track_id"), value_set=vocab_ids.slice(FIRST_TRACK_ID))
    found = index.is_valid().to_numpy(zero_copy_only=False)
    per_track = table.column("rows").to_numpy()
    vocab_row = pc.fill_null(index, 0).to_numpy(zero_copy_only=False)[found].astype(np.int64) + FIRST_TRACK_ID
    raw = np.zeros((vocab_size, width), dtype=np.float64)
    have = np.zeros(vocab_size, dtype=bool)
    for j, name in enumerate(NUMERIC_NAMES):
        raw[vocab_row, j] = table.column(name).to_numpy()[found]
    have[vocab_row] = True
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
        "files": rows.files,
        "rows_read": rows.rows_read,
        "rows_outside_vocabulary": int(per_track[~found].sum()),
        "rows_without_track_id": rows.rows_without_track_id,
        "duplicate_rows": int((per_track[found] - 1).sum()),
        "tracks_with_features": int(have[FIRST_TRACK_ID:].sum()),
        "missing": int((~have[FIRST_TRACK_ID:]).sum()),
        "nan_cells_imputed": {n: int(c) for n, c in zip(NUMERIC_NAMES, nan_cells) if c},
        "non_finite_cells_imputed": {n: int(c) for n, c in zip(NUMERIC_NAMES, infinite.sum(axis=0)) if c},
        "invalid_mode_values": int(table.column("invalid_mode").to_numpy(zero_copy_only=False)[found].sum()),
    }
    return matrix, info
