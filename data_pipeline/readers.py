"""Finding, checking and reading raw MSSD files (session logs and track features).

Everything here runs on the driver and touches only file headers, except the
diagnosis helpers, which re-read one file after a failed distributed read to
say exactly which line is wrong.

Raw directory layout (as MSSD ships it, and as ``data_pipeline.synth`` writes it):

- session logs: ``log_*.csv``, ``log_*.csv.gz`` or ``log_*.parquet``
- track features: ``tf_*.csv``, ``tf_*.csv.gz`` or ``tf_*.parquet``
"""

from __future__ import annotations

import csv

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_pipeline.schema import (
    FALSE_VALUES,
    LOG_COLUMNS,
    TRACK_FEATURE_COLUMNS,
    TRUE_VALUES,
    SchemaError,
    validate_log_columns,
    validate_track_feature_columns,
)

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet",)
# Bytes of CSV parsed per batch; larger than Arrow's 1 MiB default for throughput.
CSV_BLOCK_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class RawFiles:
    """The raw files of one MSSD directory, sorted by name."""

    logs: tuple[Path, ...]
    track_features: tuple[Path, ...]

    @property
    def log_format(self) -> str:
        """'csv' or 'parquet' (a directory must not mix them)."""
        return "parquet" if self.logs[0].name.endswith(PARQUET_SUFFIXES) else "csv"


def _is_data_file(path: Path, prefix: str) -> bool:
    return path.is_file() and path.name.startswith(prefix) and path.name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)


def find_raw_files(raw: str | Path) -> RawFiles:
    """List the log and track-feature files of `raw`, failing clearly when there are none."""
    raw = Path(raw)
    if not raw.is_dir():
        raise SchemaError(f"{raw}: no such directory. Pass the folder that holds the MSSD log_*.csv[.gz] files.")
    logs = tuple(sorted(p for p in raw.iterdir() if _is_data_file(p, "log_")))
    features = tuple(sorted(p for p in raw.iterdir() if _is_data_file(p, "tf_")))
    if not logs:
        raise SchemaError(
            f"{raw}: no session log files (log_*.csv, log_*.csv.gz or log_*.parquet). "
            "Point --raw at the MSSD training_set folder, or generate data with `python -m data_pipeline.synth`."
        )
    kinds = {"parquet" if p.name.endswith(PARQUET_SUFFIXES) else "csv" for p in logs}
    if len(kinds) > 1:
        raise SchemaError(f"{raw}: mixes CSV and parquet log files; keep one format per directory.")
    return RawFiles(logs, features)


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_header(path: Path) -> list[str]:
    """The column names of a CSV or parquet file ([] for an empty file)."""
    if path.name.endswith(PARQUET_SUFFIXES):
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as error:
            raise SchemaError(f"{path}: not a readable parquet file ({error}). Re-create or remove it.") from None
    try:
        with _open_text(path) as f:
            line = f.readline()
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise SchemaError(f"{path}: cannot read the header line ({error}). Re-download or remove the file.") from None
    line = line.strip("\r\n")
    if not line:
        return []
    # the csv module, so quoted names ("session_id","track_id_clean",...) read as the pyarrow parser reads them
    return [c.strip() for c in next(csv.reader([line]))]


def validate_raw_files(files: RawFiles) -> None:
    """Check every file's header (and parquet column types) before any distributed work."""
    for path in files.logs:
        columns = read_header(path)
        validate_log_columns(str(path), columns)
        if path.name.endswith(PARQUET_SUFFIXES):
            _validate_parquet_types(path, LOG_COLUMNS)
    for path in files.track_features:
        validate_track_feature_columns(str(path), read_header(path))


def _validate_parquet_types(path: Path, expected: dict[str, pa.DataType]) -> None:
    schema = pq.read_schema(path)
    for name, want in expected.items():
        have = schema.field(name).type
        compatible = (
            have == want
            or (pa.types.is_integer(want) and pa.types.is_integer(have))
            or (pa.types.is_floating(want) and (pa.types.is_floating(have) or pa.types.is_integer(have)))
            or (pa.types.is_string(want) and (pa.types.is_string(have) or pa.types.is_large_string(have)
                                              or pa.types.is_date(have) or pa.types.is_dictionary(have)))
        )
        if not compatible:
            raise SchemaError(
                f"{path}: column {name} has type {have}, expected {want}. Rewrite the file with that type."
            )


# Low-cardinality string columns are parsed straight into dictionary arrays:
# cheaper than building strings and encoding them afterwards.
DICTIONARY_LOG_COLUMNS = (
    "track_id_clean",
    "date",
    "context_type",
    "hist_user_behavior_reason_start",
    "hist_user_behavior_reason_end",
)
LOG_READ_TYPES = {
    name: pa.dictionary(pa.int32(), pa.string()) if name in DICTIONARY_LOG_COLUMNS else kind
    for name, kind in LOG_COLUMNS.items()
}


def log_convert_options() -> pacsv.ConvertOptions:
    """Arrow CSV conversion for log files: the schema's types, both boolean spellings."""
    return pacsv.ConvertOptions(
        column_types=LOG_READ_TYPES,
        true_values=TRUE_VALUES,
        false_values=FALSE_VALUES,
        strings_can_be_null=True,
    )


def track_feature_convert_options() -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(column_types=TRACK_FEATURE_COLUMNS, strings_can_be_null=True)


def csv_read_options() -> pacsv.ReadOptions:
    return pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_SIZE)


def input_fingerprint(files: RawFiles) -> list[list]:
    """Per file: name, size and a hash of its first and last MiB (cheap, content-based)."""
    rows = []
    for path in files.logs + files.track_features:
        size = path.stat().st_size
        digest = hashlib.blake2b(digest_size=8)
        with open(path, "rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), 2)
                digest.update(f.read(1 << 20))
        rows.append([path.name, size, digest.hexdigest()])
    return rows


# ---------------------------------------------------------------------------
# Diagnosis: after a distributed read fails, find the file and line.
# ---------------------------------------------------------------------------


def _first_bad_row(values: pa.Array, check) -> int:
    """Index of the first element of `values` for which `check(slice)` fails (binary search)."""
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(values.slice(lo, mid - lo)):
            lo = mid
        else:
            hi = mid
    return lo


def _cast_ok(want: pa.DataType):
    allowed = pa.array(TRUE_VALUES + FALSE_VALUES + [""])

    def check(values: pa.Array) -> bool:
        if pa.types.is_boolean(want):
            return bool(pc.all(pc.is_in(values, value_set=allowed), skip_nulls=True).as_py() is not False)
        try:
            pc.cast(pc.if_else(pc.equal(values, ""), None, values), want)
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False

    return check


def diagnose_csv(path: Path, expected: dict[str, pa.DataType]) -> str | None:
    """Re-read a CSV file as text and describe its first bad line, or None if it reads cleanly."""
    options = pacsv.ConvertOptions(column_types={name: pa.string() for name in expected})
    stream = pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None)
    rows_before = 0
    try:
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=1 << 20), convert_options=options)
        for batch in reader:
            for name, want in expected.items():
                if pa.types.is_string(want):
                    continue
                values = batch.column(name)
                check = _cast_ok(want)
                if not check(values):
                    row = _first_bad_row(values, check)
                    line = rows_before + row + 2  # 1-based, after the header line
                    return (
                        f"{path}: line {line}: column {name} holds {values[row].as_py()!r}, "
                        f"which is not a valid {want}. Fix or remove that line and run again."
                    )
            rows_before += batch.num_rows
    except pa.ArrowInvalid as error:
        return f"{path}: after line {rows_before + 1}: malformed CSV ({error}). Fix or remove that line and run again."
    except (OSError, EOFError) as error:
        return (
            f"{path}: unreadable after line {rows_before + 1} ({error}): the file is truncated or corrupt. "
            "Re-download it (or re-compress it) and run again."
        )
    return None


def diagnose_parquet(path: Path) -> str | None:
    try:
        table = pq.read_table(path)
        table.select(list(LOG_COLUMNS)).cast(pa.schema([pa.field(n, t) for n, t in LOG_COLUMNS.items()]))
    except (pa.ArrowInvalid, OSError, KeyError) as error:
        return f"{path}: cannot be read as an MSSD log ({error}). Re-create or remove it."
    return None


def diagnose_logs(paths: list[Path]) -> str | None:
    """The first problem found in `paths` (checked in order), or None."""
    for path in paths:
        if path.name.endswith(PARQUET_SUFFIXES):
            problem = diagnose_parquet(path)
        else:
            problem = diagnose_csv(path, LOG_COLUMNS)
        if problem:
            return problem
    return None


# ---------------------------------------------------------------------------
# Track features
# ---------------------------------------------------------------------------


def iter_track_feature_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream a track-feature file as record batches with the schema's types."""
    if path.name.endswith(PARQUET_SUFFIXES):
        schema = pa.schema([pa.field(n, t) for n, t in TRACK_FEATURE_COLUMNS.items()])
        for batch in pq.ParquetFile(path).iter_batches():
            yield pa.Table.from_batches([batch]).select(list(TRACK_FEATURE_COLUMNS)).cast(schema).to_batches()[0]
        return
    stream = pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None)
    try:
        reader = pacsv.open_csv(stream, read_options=csv_read_options(), convert_options=track_feature_convert_options())
        yield from reader
    except (pa.ArrowInvalid, OSError, EOFError):
        problem = diagnose_csv(path, TRACK_FEATURE_COLUMNS)
        raise SchemaError(problem or f"{path}: cannot be read as a track-feature file.") from None
