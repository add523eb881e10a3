"""Property: whatever a raw file holds, prepare ends in a manifest that adds up or in one error line naming it.

Hypothesis builds MSSD log and track-feature files and damages them: cells of
the wrong type or non-finite, missing / extra / repeated / reordered columns,
rows deleted, repeated, swapped or cut short, stray quotes, blank lines, CRLF,
a byte-order mark, Latin-1 or UTF-16 text, gzip (whole or truncated), empty
or header-only files. For every file:

- *in process* (many examples; the functions prepare's Ray tasks run): either
  a ``SchemaError`` of one line naming the file (and a line that exists), or
  every data row the file holds (counted independently with the csv module)
  is read and accounted for: kept, dropped by reason, or held as a fragment
  that the merge turns into a session or a counted drop; track features come
  out finite;
- *end to end* (fewer examples with sound headers, through ``main`` and the session's Ray):
  exit 0 with a manifest whose counts add up to the rows in the files and a
  finite ``track_features.npy``, or exit 2 with exactly one ``error:`` line
  naming the file, and no traceback.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from data_pipeline import readers
from data_pipeline.features import build_track_features, read_track_features
from data_pipeline.prepare import main
from data_pipeline.schema import FIRST_TRACK_ID, RESERVED_TOKENS, TRACK_FEATURE_COLUMNS, SchemaError
from data_pipeline.sessions import COUNTS_COLUMN, DROPPED, FRAGMENT, KEPT, merge_fragments, read_counts, sessionize_files
from data_pipeline.splits import SplitRule
from tests.data_pipeline.mssd_rows import HEADER, feature_row, session_rows

CELLS = ["", "nan", "NaN", "inf", "-inf", "1e309", "1e300", "1.5", "-1", "0", "7", "99999999999", "true", "False",
         "abc", "caf\u00e9", "t_1", '"', "a,b", "2018-07-15", "15-07-18", "2018-02-30", " 1", "NULL"]
FEATURE_CELLS = ["", "nan", "inf", "-inf", "1e309", "-1e309", "1e300", "-1e300", "0.5", "abc", "major", "minor",
                 "Major", "1e-320"]


@dataclass
class RawFile:
    name: str
    data: bytes
    records: int | None  # data rows a CSV reader finds in it; None when it is not UTF-8 text

    @classmethod
    def of(cls, name: str, data: bytes) -> "RawFile":
        """Count the records independently of Arrow: the csv module on the (decompressed) UTF-8 text."""
        try:
            text = (gzip.decompress(data) if name.endswith(".gz") else data).decode("utf-8-sig")
        except (OSError, EOFError, UnicodeDecodeError):
            return cls(name, data, None)
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
        return cls(name, data, max(len(rows) - 1, 0))


ROW_DAMAGE = ["cell", "cell", "cell", "delete", "repeat", "swap", "short", "long", "quote", "blank"]
ANY_DAMAGE = ROW_DAMAGE + ["drop_column", "extra_column", "repeat_column", "reorder"]


@st.composite
def table_text(draw, header: list[str], rows: list[list[str]], cells: list[str], damage: list[str]) -> str:
    """CSV text of header + rows after a few damages of the given kinds."""
    header, rows = list(header), [list(r) for r in rows]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(damage))
        if kind == "cell" and any(rows):
            row = draw(st.sampled_from([r for r in rows if r]))
            row[draw(st.integers(0, len(row) - 1))] = draw(st.sampled_from(cells) | st.text(max_size=6))
        elif kind == "delete" and rows:
            del rows[draw(st.integers(0, len(rows) - 1))]
        elif kind == "repeat" and rows:
            i = draw(st.integers(0, len(rows) - 1))
            rows.insert(draw(st.integers(0, len(rows))), list(rows[i]))
        elif kind == "swap" and len(rows) > 1:
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
            rows[i], rows[j] = rows[j], rows[i]
        elif kind == "short" and any(rows):
            row = draw(st.sampled_from([r for r in rows if r]))
            del row[draw(st.integers(0, len(row) - 1)):]
        elif kind == "long" and rows:
            rows[draw(st.integers(0, len(rows) - 1))].append("x")
        elif kind == "drop_column" and len(header) > 1:
            j = draw(st.integers(0, len(header) - 1))
            header.pop(j)
            for row in rows:
                if j < len(row):
                    row.pop(j)
        elif kind == "extra_column":
            header.append(draw(st.sampled_from(["user_id", "", "session_id "])))
            for row in rows:
                row.append("u")
        elif kind == "repeat_column":
            j = draw(st.integers(0, len(header) - 1))
            header.append(header[j])
            for row in rows:
                row.append(row[j] if j < len(row) else "")
        elif kind == "reorder":
            order = draw(st.permutations(range(len(header))))
            header = [header[j] for j in order]
            rows = [[row[j] for j in order if j < len(row)] for row in rows]
        elif kind == "quote" and any(rows):
            row = draw(st.sampled_from([r for r in rows if r]))
            j = draw(st.integers(0, len(row) - 1))
            row[j] = '"' + row[j]
        elif kind == "blank":
            rows.insert(draw(st.integers(0, len(rows))), [])
    lines = [",".join(header), *(",".join(row) for row in rows)]
    if damage is ANY_DAMAGE and draw(st.integers(0, 9)) == 0:
        lines = lines[1:]  # no header
    end = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    return end.join(lines) + (end if draw(st.booleans()) else "")


@st.composite
def raw_file(draw, name: str, header: list[str], rows: list[list[str]], cells: list[str],
             whole_file_damage: bool = True) -> RawFile:
    """A file of that table, then (`whole_file_damage`) written in some encoding, maybe compressed, maybe cut."""
    if not whole_file_damage:
        text = draw(table_text(header, rows, cells, ROW_DAMAGE))
        return RawFile.of(name, text.encode())
    shape = draw(st.sampled_from(["text"] * 12 + ["empty", "header_only"]))
    if shape == "text":
        text = draw(table_text(header, rows, cells, ANY_DAMAGE))
    else:
        text = "" if shape == "empty" else ",".join(header) + "\n"
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 7)) == 0:
        data = data[: draw(st.integers(1, max(len(data), 1)))]
    if draw(st.integers(0, 4)) == 0:
        data, name = gzip.compress(data, mtime=0), name + ".gz"
        if draw(st.integers(0, 3)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
    return RawFile.of(name, data)


def _log_rows(draw) -> list[list[str]]:
    rows = []
    for i in range(draw(st.integers(1, 3))):
        length = draw(st.sampled_from([10, 12, 20, 9, 21]))
        rows += [[row[c] for c in HEADER] for row in session_rows(f"s_{i}", length)]
    return rows


@st.composite
def damaged_log(draw, whole_file_damage: bool = True) -> RawFile:
    return draw(raw_file("log_0.csv", HEADER, _log_rows(draw), CELLS, whole_file_damage))


@st.composite
def damaged_features(draw, whole_file_damage: bool = True) -> RawFile:
    header = list(TRACK_FEATURE_COLUMNS)
    rows = [[feature_row(f"t_{p}", p)[c] for c in header] for p in range(1, 21)]
    return draw(raw_file("tf_0.csv", header, rows, FEATURE_CELLS, whole_file_damage))


def _assert_one_line_naming(error: Exception, raw: RawFile, path: Path) -> None:
    message = str(error)
    assert "\n" not in message and str(path) in message, message
    line = re.search(r": line (\d+)", message)
    if line:
        try:
            text = gzip.decompress(raw.data) if raw.name.endswith(".gz") else raw.data
        except (OSError, EOFError):  # a truncated stream: count what it holds
            text = gzip.GzipFile(fileobj=io.BytesIO(raw.data)).read1(1 << 30) if raw.data else b""
        assert 1 <= int(line.group(1)) <= text.count(b"\n") + 1, message


def _write(folder: Path, raw: RawFile) -> Path:
    path = folder / raw.name
    path.write_bytes(raw.data)
    return path


# More examples search harder (e.g. MSSD_PROPERTY_EXAMPLES=2000 MSSD_PROPERTY_E2E_EXAMPLES=200); the defaults fit CI.
EXAMPLES = int(os.environ.get("MSSD_PROPERTY_EXAMPLES", 120))
E2E_EXAMPLES = int(os.environ.get("MSSD_PROPERTY_E2E_EXAMPLES", 20))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clean(name: str, header: list[str], rows: list[list[str]]) -> RawFile:
    return RawFile.of(name, ("\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n").encode())


CLEAN_LOG = _clean("log_0.csv", HEADER, [[row[c] for c in HEADER] for row in session_rows("s_0", 12)])
CLEAN_FEATURES = _clean("tf_0.csv", list(TRACK_FEATURE_COLUMNS),
                        [[feature_row(f"t_{p}", p)[c] for c in TRACK_FEATURE_COLUMNS] for p in range(1, 21)])


@PROPERTY
@example(log=CLEAN_LOG)
@given(log=damaged_log())
def test_every_row_of_a_damaged_log_is_accounted_for_or_the_file_is_named(log):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), log)
        try:
            files = readers.find_raw_files(Path(folder))
            readers.check_headers(files)
            blocks = list(sessionize_files(pa.table({"file": [0]}), [str(path)], SplitRule()))
        except SchemaError as error:
            _assert_one_line_naming(error, log, path)
            return
        assert log.records is not None, "a file that is not readable text was read"
        rows_read = sum(counts.rows for block in blocks for counts in read_counts(block.column(COUNTS_COLUMN)))
        records = pa.concat_tables([b.drop_columns([COUNTS_COLUMN]) for b in blocks]) if blocks else None
        assert rows_read == log.records
        if records is None:
            return
        status = records.column("status").to_numpy()
        rows = records.column("rows").to_numpy()
        assert set(np.unique(status)) <= {KEPT, FRAGMENT, DROPPED}
        kept = status == KEPT
        assert (rows[kept] == records.column("length").to_numpy()[kept]).all()
        fragments = records.filter(pa.array(status == FRAGMENT))
        merge = merge_fragments(fragments, SplitRule())
        merged_rows = int(merge.merged.column("rows").to_numpy().sum()) if merge.merged.num_rows else 0
        assert merged_rows + sum(d["rows"] for d in merge.dropped.values()) == int(rows[status == FRAGMENT].sum())


@PROPERTY
@example(features=CLEAN_FEATURES)
@given(features=damaged_features())
def test_damaged_track_features_come_out_finite_or_the_file_is_named(features):
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), features)
        vocab = pa.array([*RESERVED_TOKENS, *[f"t_{p}" for p in range(1, 25)]])
        try:
            readers.check_headers(readers.RawFiles((), (path,)))
            rows = read_track_features([path], [path.name])
        except SchemaError as error:
            _assert_one_line_naming(error, features, path)
            return
        assert features.records is not None and rows.rows_read == features.records
        matrix, info = build_track_features(rows, vocab)
        assert np.isfinite(matrix).all() and matrix.shape == (len(vocab), 30)
        assert np.isfinite(info["mean"]).all() and np.isfinite(info["std"]).all()
        assert info["tracks_with_features"] + info["missing"] == len(vocab) - FIRST_TRACK_ID


# Whole-file damage (headers, encodings, compression) ends before Ray starts and is covered above: here the
# headers are sound, so every example runs the Ray passes.
@settings(max_examples=E2E_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@example(log=CLEAN_LOG, features=CLEAN_FEATURES)
@given(log=damaged_log(whole_file_damage=False), features=damaged_features(whole_file_damage=False))
def test_prepare_end_to_end_exits_0_with_books_that_add_up_or_2_with_one_line(log, features, ray_session, capfd):
    with tempfile.TemporaryDirectory() as folder:
        raw, out = Path(folder) / "raw", Path(folder) / "out"
        raw.mkdir()
        log_path, feature_path = _write(raw, log), _write(raw, features)
        good = [[row[c] for c in HEADER] for row in session_rows("s_good", 12)]
        (raw / "log_1.csv").write_text("\n".join([",".join(HEADER), *(",".join(r) for r in good)]) + "\n")
        code = main(["--raw", str(raw), "--out", str(out), "--quiet"])
        lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
        assert not any("Traceback" in line for line in lines), lines
        if code == 2:
            errors = [line for line in lines if line.startswith("error: ")]
            assert len(errors) == 1 and lines[-1] == errors[0], lines
            assert str(log_path) in errors[0] or str(feature_path) in errors[0], errors[0]
            assert not out.exists()
            return
        assert code == 0, lines
        assert log.records is not None and features.records is not None
        manifest = json.loads((out / "manifest.json").read_text(), parse_constant=lambda c: 1 / 0)
        assert manifest["rows"]["read"] == log.records + len(good)
        assert manifest["rows"]["kept"] + sum(manifest["rows"]["dropped"].values()) == manifest["rows"]["read"]
        assert manifest["sessions"]["kept"] + sum(manifest["sessions"]["dropped"].values()) == manifest["sessions"]["read"]
        assert sum(s["sessions"] for s in manifest["splits"].values()) == manifest["sessions"]["kept"]
        assert np.isfinite(np.load(out / "track_features.npy")).all()
        assert manifest["track_features"]["rows_read"] == features.records
