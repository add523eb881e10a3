"""Finding, checking and reading raw MSSD files (session logs and track features).

Layout. The MSSD download unpacks into a ``training_set/`` folder of session
logs and a ``track_features/`` folder of track features (``data_pipeline.synth``
writes both kinds into one folder). ``find_raw_files`` takes any number of
files and folders, walks the folders, and tells the two kinds apart by name:

- session logs: ``log_*.csv``, ``log_*.csv.gz`` or ``log_*.parquet``
- track features: ``tf_*.csv``, ``tf_*.csv.gz`` or ``tf_*.parquet``

so ``--raw training_set track_features`` and ``--raw <the parent of both>``
find the same files. The WSDM Cup test halves (``log_input_*``,
``log_prehistory_*``) are not training logs: they are set aside with a note.
A directory or a dangling symbolic link with a data-file name, or an archive
that was not unpacked, is an error that says what to do: nothing named like
data is skipped without a word.

Checking. ``check_headers`` reads only the first line of every file (on the
driver, before any distributed work): empty files, non-UTF-8 text, compressed
files without ``.gz``, missing, extra or repeated columns. A UTF-8 byte-order
mark is accepted (Arrow skips it too); column order is free (columns are read
by name).

Reading. ``iter_log_tables`` streams one log file as tables of the schema's
column types, whatever its format. Every failure while reading (a cell of the
wrong type, a row with too many or too few fields, bytes that are not UTF-8, a
truncated gzip stream, a quoted field that swallows line ends, a date that is
not ``YYYY-MM-DD``) becomes one ``RawInputError`` naming the file and the
physical line: Arrow counts rows without blank lines, so
``physical_line`` re-scans the file to translate (only on the error path).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
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
DATA_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
LOG_PREFIX, FEATURE_PREFIX = "log_", "tf_"
# The WSDM Cup 2019 test set: half sessions, for scoring (tuning.predict), not for training.
TEST_HALF_PREFIXES = ("log_input_", "log_prehistory_")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# Bytes of CSV parsed per Arrow batch: small enough to stay in the CPU caches
# (4 MiB parses ~25% faster per row than 16 MiB on one core).
CSV_BLOCK_SIZE = 4 * 1024 * 1024
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_iso_date(text: str) -> bool:
    """True for a calendar date written YYYY-MM-DD."""
    if not ISO_DATE.match(text):
        return False
    try:
        date.fromisoformat(text)
        return True
    except ValueError:
        return False


class RawInputError(SchemaError):
    """A raw file that cannot be read as MSSD; the message names the file (and line) and what to do."""


# ---------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RawFiles:
    """The raw files under the given paths, each kind sorted by path."""

    logs: tuple[Path, ...]
    track_features: tuple[Path, ...]
    roots: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)  # one line each: what was set aside and why

    def name(self, path: Path) -> str:
        """`path` relative to the folder it was found in (its bare name for files found at the top)."""
        for root in self.roots:
            if root.is_dir() and path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name


def _kind(name: str) -> str | None:
    if name.startswith(LOG_PREFIX):
        return "log"
    if name.startswith(FEATURE_PREFIX):
        return "tf"
    return None


def _walk(root: Path) -> Iterator[Path]:
    """Every entry under `root`, sorted; linked folders are followed (once), hidden ones skipped.

    Folders named like data files come out too, so that they can be named in an error.
    """
    seen = set()
    for directory, subdirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a link back up the tree
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        here = Path(directory)
        for name in sorted(names) + [d for d in subdirs if _kind(d)]:
            yield here / name


def _check_entry(path: Path) -> bool:
    """True for a readable data file; raises for a folder or dangling link named like one; False otherwise."""
    if not path.name.endswith(DATA_SUFFIXES):
        return False
    if path.is_symlink() and not path.exists():
        raise SchemaError(
            f"{path}: a symbolic link to {os.readlink(path)}, which does not exist. "
            "Fix or remove the link and run again."
        )
    if path.is_dir():
        raise SchemaError(f"{path}: a folder named like a data file. Move it out of the raw folder or rename it.")
    return path.is_file()


def find_raw_files(raw: str | Path | Sequence[str | Path], test_halves: bool = False) -> RawFiles:
    """The log and track-feature files of `raw` (files and/or folders), failing clearly when there are no logs.

    WSDM test-set halves count as logs only with `test_halves` (scoring new data); prepare sets them aside.
    """
    roots = [Path(p) for p in ([raw] if isinstance(raw, (str, Path)) else raw)]
    logs, features, notes, archives, set_aside = [], [], [], [], []
    for root in roots:
        if root.is_file() or (root.is_symlink() and not root.exists()):
            entries = [root]
        elif root.is_dir():
            entries = list(_walk(root))
        else:
            raise SchemaError(
                f"{root}: no such file or folder. Pass the MSSD training_set and track_features folders "
                "(or the folder that holds both)."
            )
        for path in entries:
            if path.name.endswith(ARCHIVE_SUFFIXES):
                archives.append(path)
            kind = _kind(path.name)
            if kind is None or not _check_entry(path):
                continue
            if path.name.startswith(TEST_HALF_PREFIXES) and not test_halves:
                set_aside.append(path)
            elif kind == "log":
                logs.append(path)
            else:
                features.append(path)
    if set_aside:
        notes.append(
            f"set aside {len(set_aside)} WSDM test-set file(s) ({set_aside[0].name}, ...): they hold half "
            "sessions; score them with `python -m tuning.predict`"
        )
    if not logs:
        where = ", ".join(str(r) for r in roots)
        hint = (f" Unpack the archives first ({archives[0].name}: `tar xzf {archives[0].name}`)." if archives else
                " Pass the MSSD training_set folder, or generate data with `python -m data_pipeline.synth`.")
        raise SchemaError(f"{where}: no session log files (log_*.csv, log_*.csv.gz or log_*.parquet).{hint}")
    return RawFiles(tuple(sorted(set(logs))), tuple(sorted(set(features))), tuple(roots), tuple(notes))


def is_parquet(path: Path) -> bool:
    return path.name.endswith(PARQUET_SUFFIXES)


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------


def _describe_binary(path: Path, head: bytes) -> str:
    """Why a file's first bytes are not UTF-8 CSV text, and what to do."""
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: name it .csv.gz"
    if head.startswith(b"PAR1"):
        return "it is a parquet file: name it .parquet"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "it is UTF-16 text: save it as UTF-8"
    return "it is not UTF-8 text: save it as UTF-8 CSV"


def read_header(path: Path) -> list[str]:
    """The column names of a CSV or parquet file ([] for an empty file)."""
    if is_parquet(path):
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as error:
            raise RawInputError(f"{path}: not a readable parquet file ({error}). Re-create or remove it.") from None
    try:
        with open(path, "rb") as raw:
            head = raw.read(4)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            line = f.readline()
    except gzip.BadGzipFile:
        raise RawInputError(f"{path}: not a gzip file, although named .gz. Rename it to .csv or re-download it.") from None
    except UnicodeDecodeError:
        raise RawInputError(f"{path}: line 1 (the header): {_describe_binary(path, head)}.") from None
    except (OSError, EOFError) as error:
        raise RawInputError(f"{path}: cannot read the header line ({error}). Re-download or remove the file.") from None
    line = line.strip("\r\n")
    if not line:
        return []
    # the csv module, so quoted names ("session_id","track_id_clean",...) read as the pyarrow parser reads them;
    # not stripped: Arrow reads " session_id" as that, so the header check must see it too
    return next(csv.reader([line]))


def _check_repeated(path: Path, columns: list[str]) -> None:
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise RawInputError(f"{path}: line 1 (the header) names column(s) {', '.join(repeated)} more than once. "
                            "Keep one of each and run again.")


def check_headers(files: RawFiles) -> None:
    """Check every file's header (and parquet column types) before any distributed work."""
    for path in files.logs:
        columns = read_header(path)
        validate_log_columns(str(path), columns)
        _check_repeated(path, columns)
        if is_parquet(path):
            _validate_parquet_types(path, LOG_COLUMNS)
    for path in files.track_features:
        columns = read_header(path)
        validate_track_feature_columns(str(path), columns)
        _check_repeated(path, columns)
        if is_parquet(path):
            _validate_parquet_types(path, TRACK_FEATURE_COLUMNS)


def _compatible(have: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_dictionary(have):
        have = have.value_type
    return (
        have == want
        or (pa.types.is_integer(want) and pa.types.is_integer(have))
        or (pa.types.is_boolean(want) and pa.types.is_integer(have))
        or (pa.types.is_floating(want) and (pa.types.is_floating(have) or pa.types.is_integer(have)))
        or (pa.types.is_string(want) and (pa.types.is_string(have) or pa.types.is_large_string(have)
                                          or pa.types.is_date(have)))
    )


def _validate_parquet_types(path: Path, expected: dict[str, pa.DataType]) -> None:
    schema = pq.read_schema(path)
    for name, want in expected.items():
        have = schema.field(name).type
        if not _compatible(have, want):
            raise RawInputError(f"{path}: column {name} has type {have}, expected {want}. Rewrite the file with that type.")


# ---------------------------------------------------------------------------
# Reading logs
# ---------------------------------------------------------------------------

# Low-cardinality string columns (and track ids, which the sessions need as
# codes anyway) are parsed straight into dictionary arrays: cheaper than
# building strings and encoding them afterwards.
DICTIONARY_LOG_COLUMNS = (
    "track_id_clean",
    "date",
    "context_type",
    "hist_user_behavior_reason_start",
    "hist_user_behavior_reason_end",
)
STRING_DICTIONARY = pa.dictionary(pa.int32(), pa.string())
LOG_READ_TYPES = {name: STRING_DICTIONARY if name in DICTIONARY_LOG_COLUMNS else kind for name, kind in LOG_COLUMNS.items()}
LOG_READ_SCHEMA = pa.schema(list(LOG_READ_TYPES.items()))


def log_convert_options() -> pacsv.ConvertOptions:
    """Arrow CSV conversion for log files: the schema's types, both boolean spellings, empty cells null."""
    return pacsv.ConvertOptions(
        column_types=LOG_READ_TYPES,
        include_columns=list(LOG_COLUMNS),
        true_values=TRUE_VALUES,
        false_values=FALSE_VALUES,
        strings_can_be_null=True,
    )


def track_feature_convert_options() -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(column_types=TRACK_FEATURE_COLUMNS, include_columns=list(TRACK_FEATURE_COLUMNS),
                                strings_can_be_null=True)


def csv_read_options() -> pacsv.ReadOptions:
    # one thread per file: prepare runs one task per file on every core; row numbers in errors need it too
    return pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_SIZE)


def _open_csv(path: Path, convert_options: pacsv.ConvertOptions) -> pacsv.CSVStreamingReader | None:
    """A streaming reader of the file, or None for a file that holds only its header line."""
    stream = pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None)
    try:
        return pacsv.open_csv(stream, read_options=csv_read_options(), convert_options=convert_options)
    except pa.ArrowInvalid:
        if _only_a_header(path):  # Arrow cannot open a header without a line end
            return None
        raise


def _only_a_header(path: Path) -> bool:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:
            f.readline()
            return f.read(1) == ""
    except (OSError, EOFError):
        return False


def _string_data(array: pa.Array) -> np.ndarray:
    """The UTF-8 bytes of a string array's values (no copy)."""
    if len(array) == 0 or array.buffers()[2] is None:
        return np.zeros(0, np.uint8)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset: array.offset + len(array) + 1]
    return np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]


def _has_line_end(array: pa.Array) -> bool:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary
    data = _string_data(array)
    # one pass for any control character (ids never hold one; min allocates nothing), the exact test only then
    return bool(len(data)) and bool(data.min() < 14) and bool(((data == 10) | (data == 13)).any())


def _first_row_where(values: pa.Array, bad: pa.Array) -> int:
    """Index of the first element of `values` that is in `bad` (a dictionary column's bad entries)."""
    found = pc.is_in(values.dictionary_decode() if pa.types.is_dictionary(values.type) else values, value_set=bad)
    return int(np.flatnonzero(pc.fill_null(found, False).to_numpy(zero_copy_only=False))[0])


def _check_log_batch(path: Path, batch: pa.RecordBatch, rows_before: int) -> None:
    """What Arrow's conversion accepts but a log must not hold: dates that are not YYYY-MM-DD, line ends in values."""
    dates = batch.column("date").dictionary
    iso = np.array([is_iso_date(d) for d in dates.to_pylist()], dtype=bool)
    if not iso.all():
        bad = dates.filter(pa.array(~iso))
        row = _first_row_where(batch.column("date"), bad)
        line = physical_line(path, rows_before + row + 2)
        raise RawInputError(f"{path}: line {line}: column date holds {bad[0].as_py()!r}, not a date as YYYY-MM-DD. "
                            "Fix or remove that line and run again.")
    for name in ("session_id", *DICTIONARY_LOG_COLUMNS):
        column = batch.column(name)
        if _has_line_end(column):
            values = column.dictionary if pa.types.is_dictionary(column.type) else column
            bad = values.filter(pc.match_substring_regex(values, "[\r\n]"))
            row = _first_row_where(column, bad.slice(0, 1))
            line = physical_line(path, rows_before + row + 2)
            raise RawInputError(
                f"{path}: line {line}: column {name} holds a value that runs over several lines "
                f"(an unbalanced quote?): {bad[0].as_py()[:60]!r}. Fix that line and run again."
            )


def iter_log_tables(path: Path) -> Iterator[pa.Table]:
    """One log file as tables of ``LOG_READ_SCHEMA`` (the 21 columns, schema order), in file order.

    Raises RawInputError naming the file and line when a row cannot be read.
    """
    if is_parquet(path):
        yield from _iter_parquet_log(path)
        return
    rows_before = 0
    try:
        for batch in _open_csv(path, log_convert_options()) or ():
            _check_log_batch(path, batch, rows_before)
            rows_before += batch.num_rows
            yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError) as error:
        raise RawInputError(describe_csv_problem(path, LOG_COLUMNS) or f"{path}: cannot be read ({error}).") from None


def _iter_parquet_log(path: Path) -> Iterator[pa.Table]:
    try:
        source = pq.ParquetFile(path)
        rows_before = 0
        for batch in source.iter_batches(batch_size=262_144, columns=list(LOG_COLUMNS)):
            yield _conform_log_table(pa.Table.from_batches([batch]), path, rows_before)
            rows_before += batch.num_rows
    except (pa.ArrowInvalid, OSError) as error:
        raise RawInputError(f"{path}: cannot be read as an MSSD log ({error}). Re-create or remove it.") from None


def _conform_log_table(table: pa.Table, path: Path, rows_before: int = 0) -> pa.Table:
    """Any typed table of the 21 log columns -> ``LOG_READ_SCHEMA`` (parquet may use other widths or plain strings)."""
    columns = []
    for name, want in LOG_READ_TYPES.items():
        column = table.column(name)
        if pa.types.is_date(column.type) or (pa.types.is_dictionary(column.type)
                                             and pa.types.is_date(column.type.value_type)):
            column = pc.strftime(column.cast(pa.date32()) if pa.types.is_dictionary(column.type) else column,
                                 format="%Y-%m-%d")
        if column.type != want:
            try:
                # dictionary columns: decode whatever the file holds, then encode with the read type
                column = column.cast(pa.string()).dictionary_encode() if pa.types.is_dictionary(want) else column.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                row = _first_bad_cast(column, want)
                raise RawInputError(f"{path}: row {rows_before + row + 1}: column {name} holds "
                                    f"{column[row].as_py()!r}, which is not a valid {want} ({error}). "
                                    "Rewrite the file with valid values.") from None
        columns.append(column)
    out = pa.table(columns, schema=LOG_READ_SCHEMA)
    for batch in out.to_batches():
        _check_parquet_batch(path, batch, rows_before)
        rows_before += batch.num_rows
    return out


def _check_parquet_batch(path: Path, batch: pa.RecordBatch, rows_before: int) -> None:
    dates = batch.column("date").dictionary.to_pylist()
    for value in dates:
        if value is not None and not is_iso_date(value):
            row = _first_row_where(batch.column("date"), pa.array([value]))
            raise RawInputError(f"{path}: row {rows_before + row + 1}: column date holds {value!r}, "
                                "not a date as YYYY-MM-DD. Rewrite the file with ISO dates.")


def _first_bad_cast(values: pa.ChunkedArray | pa.Array, want: pa.DataType) -> int:
    """Index of the first element of `values` that does not cast to `want` (binary search)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values

    def ok(piece: pa.Array) -> bool:
        try:
            piece.cast(want.value_type if pa.types.is_dictionary(want) else want)
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False

    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(values.slice(lo, mid - lo)):
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------------
# Diagnosis: the exact line of a CSV problem (error path only)
# ---------------------------------------------------------------------------


def physical_line(path: Path, arrow_row: int) -> int:
    """The 1-based line number where Arrow's CSV row `arrow_row` (1 = the header) starts.

    Arrow skips empty lines and lets quoted fields span lines, so its row
    numbers drift from line numbers; this re-reads the text with the csv
    module, which counts both the same way.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:
            reader = csv.reader(f)
            rows, start = 0, 1
            for record in reader:
                if record:
                    rows += 1
                    if rows == arrow_row:
                        return start
                start = reader.line_num + 1
    except (OSError, EOFError, csv.Error):
        pass
    return arrow_row


def _csv_problem_in_batch(path: Path, batch: pa.RecordBatch, expected: dict, rows_before: int) -> str | None:
    for name, want in expected.items():
        values = batch.column(name)
        try:
            text = values.cast(pa.string())
        except pa.ArrowInvalid:
            row = _first_bad_cast(values, pa.string())
            line = physical_line(path, rows_before + row + 2)
            return f"{path}: line {line}: column {name} holds bytes that are not UTF-8. Save the file as UTF-8 and run again."
        if pa.types.is_string(want):
            continue
        check = _cast_check(want)
        if not check(text):
            lo, hi = 0, len(text)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if check(text.slice(lo, mid - lo)) else (lo, mid)
            line = physical_line(path, rows_before + lo + 2)
            return (f"{path}: line {line}: column {name} holds {text[lo].as_py()!r}, which is not a valid {want}. "
                    "Fix or remove that line and run again.")
    return None


def _cast_check(want: pa.DataType):
    allowed = pa.array(TRUE_VALUES + FALSE_VALUES + [""])

    def check(values: pa.Array) -> bool:
        if pa.types.is_boolean(want):
            return pc.all(pc.is_in(values, value_set=allowed), skip_nulls=True).as_py() is not False
        try:
            pc.cast(pc.if_else(pc.equal(values, ""), None, values), want)
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False

    return check


def describe_csv_problem(path: Path, expected: dict[str, pa.DataType]) -> str | None:
    """Re-read a CSV file cell by cell as bytes and describe its first bad line, or None if it reads cleanly."""
    ragged = []

    def on_invalid_row(row) -> str:
        ragged.append(row)
        return "error"

    options = pacsv.ConvertOptions(column_types={name: pa.binary() for name in expected}, include_columns=list(expected))
    stream = pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None)
    rows_before = 0
    try:
        reader = pacsv.open_csv(stream, read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 20),
                                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid_row),
                                convert_options=options)
        for batch in reader:
            problem = _csv_problem_in_batch(path, batch, expected, rows_before)
            if problem:
                return problem
            rows_before += batch.num_rows
    except pa.ArrowInvalid as error:
        if ragged:
            row = ragged[0]
            line = physical_line(path, row.number) if row.number else f"after line {rows_before + 1}"
            return (f"{path}: line {line}: {row.actual_columns} fields where the header has {row.expected_columns} "
                    f"({row.text[:80]!r}). The file may be truncated or damaged: fix or remove that line, or "
                    "re-download the file.")
        return f"{path}: after line {physical_line(path, rows_before + 1)}: malformed CSV ({error}). Fix the file and run again."
    except (OSError, EOFError) as error:
        return (f"{path}: unreadable after line {physical_line(path, rows_before + 1)} ({error}): the file is truncated "
                "or corrupt. Re-download it (or re-compress it) and run again.")
    return None


# ---------------------------------------------------------------------------
# Track features
# ---------------------------------------------------------------------------


def iter_track_feature_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream a track-feature file as record batches with the schema's types."""
    if is_parquet(path):
        schema = pa.schema([pa.field(n, t) for n, t in TRACK_FEATURE_COLUMNS.items()])
        try:
            for batch in pq.ParquetFile(path).iter_batches(columns=list(TRACK_FEATURE_COLUMNS)):
                table = pa.Table.from_batches([batch]).select(list(TRACK_FEATURE_COLUMNS))
                yield from table.cast(schema).to_batches()
        except (pa.ArrowInvalid, OSError) as error:
            raise RawInputError(f"{path}: cannot be read as a track-feature file ({error}). Re-create or remove it.") from None
        return
    try:
        yield from _open_csv(path, track_feature_convert_options()) or ()
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError):
        problem = describe_csv_problem(path, TRACK_FEATURE_COLUMNS)
        raise RawInputError(problem or f"{path}: cannot be read as a track-feature file.") from None


# ---------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------


def input_fingerprint(files: RawFiles) -> list[list]:
    """Per file: name (relative to its folder), size and a hash of its first and last MiB (cheap, content-based)."""
    rows = []
    for path in files.logs + files.track_features:
        size = path.stat().st_size
        digest = hashlib.blake2b(digest_size=8)
        with open(path, "rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), 2)
                digest.update(f.read(1 << 20))
        rows.append([files.name(path), size, digest.hexdigest()])
    return rows
