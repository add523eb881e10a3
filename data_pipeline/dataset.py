"""Open a prepared dataset and turn its sessions into task batches.

A prepared directory (written by ``data_pipeline.prepare``) holds sessions of
10..20 tracks. An *evaluation protocol* picks sessions and cuts each into an
input half and an output half:

- ``paper``: sessions of exactly 20 tracks with no out-of-vocabulary track;
  the first 10 are the input, the next 10 the output (T = 10).
- ``challenge`` (WSDM Cup 2019): every session; the output half is the
  positions p (1-based) with ``2 * p > L``, so ``T = ceil(L/2)`` (5..10) and
  the input half has ``floor(L/2)`` tracks.

Both halves come out left-aligned and padded to ``HALF_LENGTH`` with a boolean
mask (``in_mask`` / ``out_mask``); padding never counts in a metric.

Batch keys (numpy arrays, row = session), the same on the Ray Data path
(``PreparedDataset.ray_dataset``) and the in-memory path
(``PreparedDataset.numpy_split``, for tests and small data):

- ``length`` int64 [B], ``n_in`` / ``n_out`` int64 [B]
- ``in_mask`` / ``out_mask`` bool [B, 10]
- ``in_<col>`` / ``out_<col>`` [B, 10] for every column of
  ``schema.SEQUENCE_COLUMN_NAMES`` (``in_tracks``, ``out_tracks``,
  ``in_skip_2``, ``out_skip_2``, ``in_reason_start`` ...), int64.

The prepared directory may be a local path or a URI that pyarrow resolves
(``s3://bucket/prepared``, ``gs://bucket/prepared``, ``file:///abs/path``):
every file is read through the ``pyarrow.fs`` filesystem that
``FileSystem.from_uri`` gives for the root, so every node of a cluster can
read the same data with the same code.
"""

from __future__ import annotations

import json
import os
from functools import cached_property, partial
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from data_pipeline.schema import (
    FORMAT_VERSION,
    MAX_SESSION_LENGTH,
    PREPARED_FILES,
    READABLE_FORMAT_VERSIONS,
    SEQUENCE_COLUMN_NAMES,
    SPLITS,
    UNK_ID,
    SchemaError,
    from_shard_table,
)

HALF_LENGTH = MAX_SESSION_LENGTH // 2
PROTOCOLS = ("paper", "challenge")


def is_uri(path: str | Path) -> bool:
    """True for a URI such as ``s3://bucket/x`` or ``file:///x`` (read through pyarrow.fs)."""
    return isinstance(path, str) and "://" in path


def local_cache_root() -> Path:
    """Node-local folder for caches of data held at a URI: ``$MSSD_CACHE_DIR`` or ``~/.cache/mssd-hpsearch``."""
    return Path(os.environ.get("MSSD_CACHE_DIR") or "~/.cache/mssd-hpsearch").expanduser()


def _as_matrix(column: np.ndarray) -> np.ndarray:
    """A per-position column as a 2-D array, whatever the batch format made of it."""
    if column.dtype == object:
        return np.stack([np.asarray(v) for v in column]) if len(column) else np.zeros((0, MAX_SESSION_LENGTH), np.int64)
    return column


def split_halves(batch: dict[str, np.ndarray], protocol: str, compact: bool = False) -> dict[str, np.ndarray]:
    """Filter a batch of prepared sessions by `protocol` and cut them into halves.

    `batch` maps the prepared column names to arrays (per-position columns as
    [B, 20] arrays or arrays of lists). Returns the batch keys described in the
    module docstring; ``session_id`` and ``date`` pass through. Integer columns
    are int64, or with `compact` keep their stored types (int8/int16/int32: a
    fifth of the bytes to move through Ray; the consumer widens them).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    length = np.asarray(batch["length"]).astype(np.int64)
    columns = {name: _as_matrix(np.asarray(batch[name])) for name in SEQUENCE_COLUMN_NAMES}
    if not compact:
        columns = {name: matrix.astype(np.int64) for name, matrix in columns.items()}
    if protocol == "paper":
        keep = (length == MAX_SESSION_LENGTH) & ~(columns["tracks"] == UNK_ID).any(axis=1)
        n_in = np.full(int(keep.sum()), HALF_LENGTH, dtype=np.int64)
    else:
        keep = np.ones(len(length), dtype=bool)
        n_in = length // 2
    length = length[keep]
    n_out = length - n_in
    offsets = np.arange(HALF_LENGTH)
    in_mask = offsets[None, :] < n_in[:, None]
    out_mask = offsets[None, :] < n_out[:, None]
    out_index = np.minimum(n_in[:, None] + offsets[None, :], MAX_SESSION_LENGTH - 1)
    out: dict[str, np.ndarray] = {
        "length": length,
        "n_in": n_in,
        "n_out": n_out,
        "in_mask": in_mask,
        "out_mask": out_mask,
    }
    for name in ("session_id", "date"):
        if name in batch:
            out[name] = np.asarray(batch[name])[keep]
    for name, matrix in columns.items():
        matrix = matrix[keep]
        zero = matrix.dtype.type(0)  # keeps the column's type
        out[f"in_{name}"] = np.where(in_mask, matrix[:, :HALF_LENGTH], zero)
        out[f"out_{name}"] = np.where(out_mask, np.take_along_axis(matrix, out_index, axis=1), zero)
    return out


class PreparedDataset:
    """A prepared directory: its splits, vocabulary, track features and categories.

    Every file is read through one ``pyarrow.fs`` filesystem and a base path
    (``FileSystem.from_uri`` resolves local paths as well as URIs), so local
    and remote data take the same code; only what callers see differs: a local
    root stays a ``Path``, a URI a string.
    """

    def __init__(self, root: str | Path):
        # A URI stays a string (Path would fold "s3://" into "s3:/").
        self.root: Path | str = root.rstrip("/") if is_uri(root) else Path(root)
        try:
            self._fs, self._base = pafs.FileSystem.from_uri(
                self.root if is_uri(self.root) else str(Path(self.root).absolute()))
        except (pa.ArrowException, ValueError) as error:
            raise SchemaError(f"{self.root}: cannot open this URI ({error})") from None
        missing = [f for f in PREPARED_FILES if self._type(f) != pafs.FileType.File]
        missing += [f"sessions/{s}" for s in SPLITS if self._type(f"sessions/{s}") != pafs.FileType.Directory]
        if missing:
            raise SchemaError(
                f"{self.root}: not a complete prepared dataset (missing {', '.join(missing)}). "
                "Run `python -m data_pipeline.prepare --raw RAW_DIR --out "
                f"{self.root}` again."
            )
        self.manifest: dict = json.loads(self.read_bytes("manifest.json"))
        version = self.manifest.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise SchemaError(
                f"{self.root}: prepared with format version {version}, this code reads versions "
                f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))} (and writes {FORMAT_VERSION}). Prepare the raw data again with this version."
            )
        self.categories: dict[str, list[str]] = json.loads(self.read_bytes("categories.json"))

    # -- files ------------------------------------------------------------------

    @property
    def is_uri(self) -> bool:
        return is_uri(self.root)

    def _path(self, name: str) -> str:
        """File `name` ("/"-separated, relative to the root) as a path of the filesystem."""
        return f"{self._base.rstrip('/')}/{name}"

    def _type(self, name: str) -> pafs.FileType:
        return self._fs.get_file_info(self._path(name)).type

    def read_bytes(self, name: str) -> bytes:
        """The content of file `name` (relative to the root, "/"-separated)."""
        with self._fs.open_input_stream(self._path(name)) as stream:
            return stream.read()

    def file_path(self, name: str) -> Path | str:
        """File `name` as a local Path, or as a URI that pyarrow (pq.read_table, ParquetFile) opens."""
        return f"{self.root}/{name}" if self.is_uri else self.root / name

    @property
    def cache_dir(self) -> Path:
        """Where caches of pre-trained embeddings go: ``<root>/cache``, or node-local for a URI."""
        return local_cache_root() / self.fingerprint if self.is_uri else self.root / "cache"

    # -- contents --------------------------------------------------------------

    @cached_property
    def vocab(self) -> pa.Table:
        """Columns track_id, index, count; rows 0..3 are the reserved tokens."""
        return pq.read_table(self._path("vocab.parquet"), filesystem=self._fs)

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab"]["size"])

    @cached_property
    def track_features(self) -> np.ndarray:
        """float32 [vocab_size, F]; row = vocabulary id; see schema.TRACK_FEATURE_NAMES."""
        with self._fs.open_input_file(self._path("track_features.npy")) as source:
            return np.load(source)

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest["track_features"]["names"])

    @property
    def fingerprint(self) -> str:
        """Identifies this prepared dataset's content (for caches of pre-trained embeddings)."""
        return str(self.manifest["fingerprint"])

    def split_dir(self, split: str) -> Path | str:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
        return self.file_path(f"sessions/{split}")

    def _shard_names(self, split: str) -> list[str]:
        self.split_dir(split)  # checks the name
        selector = pafs.FileSelector(self._path(f"sessions/{split}"), allow_not_found=True)
        return sorted(
            info.base_name
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
        )

    def split_files(self, split: str) -> list[str]:
        """The split's parquet shards, sorted: local paths, or URIs when the root is a URI."""
        return [str(self.file_path(f"sessions/{split}/{name}")) for name in self._shard_names(split)]

    def num_sessions(self, split: str) -> int:
        return int(self.manifest["splits"][split]["sessions"])

    def ray_dataset(self, split: str, protocol: str = "paper", compact: bool = False, **read_kwargs):
        """The split as a Ray Dataset of task rows (see the module docstring; `compact`: see split_halves)."""
        import ray.data

        files = [self._path(f"sessions/{split}/{name}") for name in self._shard_names(split)]
        if not files:
            raise SchemaError(f"{self.split_dir(split)}: no parquet shards; prepare the data again.")
        read_kwargs.setdefault("filesystem", self._fs)
        return ray.data.read_parquet(files, **read_kwargs).map_batches(
            partial(_split_table, protocol=protocol, compact=compact), batch_format="pyarrow"
        )

    def numpy_split(self, split: str, protocol: str = "paper") -> dict[str, np.ndarray]:
        """The whole split in memory as one batch (no Ray): for tests and small data."""
        tables = [pq.read_table(self._path(f"sessions/{split}/{name}"), filesystem=self._fs)
                  for name in self._shard_names(split)]
        if not tables:
            return split_halves(_empty_batch(), protocol)
        return split_halves(table_to_batch(pa.concat_tables(tables)), protocol)


def table_to_batch(table: pa.Table) -> dict[str, np.ndarray]:
    """Prepared-session rows (as read from a shard) as numpy: per-position columns become [N, 20] arrays."""
    table = from_shard_table(table)
    batch: dict[str, np.ndarray] = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
            values = column.flatten().to_numpy(zero_copy_only=False)
            batch[name] = values.reshape(len(column), MAX_SESSION_LENGTH)
        else:
            batch[name] = column.to_numpy(zero_copy_only=False)
    return batch


def _split_table(table: pa.Table, protocol: str, compact: bool = False) -> dict[str, np.ndarray]:
    return split_halves(table_to_batch(table), protocol, compact)


def _empty_batch() -> dict[str, np.ndarray]:
    batch = {name: np.zeros((0, MAX_SESSION_LENGTH), np.int64) for name in SEQUENCE_COLUMN_NAMES}
    batch["length"] = np.zeros(0, np.int64)
    return batch


def iter_numpy_batches(
    data: dict[str, np.ndarray], batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of an in-memory split, optionally shuffled with `seed`."""
    n = len(data["length"])
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield {k: v[index] for k, v in data.items()}


def open_prepared(root: str | Path) -> PreparedDataset:
    """Open a prepared directory, failing clearly when it is incomplete or from another version."""
    return PreparedDataset(root)
