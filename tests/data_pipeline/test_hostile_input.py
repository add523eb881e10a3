"""Issue #10, the data side: hostile raw input ends in one clear error line or a counted drop, never silently.

One test per case found by hand; ``test_malformed_files`` generates many more.
"""

from __future__ import annotations

import codecs
import gc
import gzip
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline import readers
from data_pipeline.dataset import open_prepared
from data_pipeline.prepare import PrepareOptions, main, prepare
from data_pipeline.schema import FIRST_TRACK_ID, LOG_COLUMNS, TRACK_FEATURE_NAMES, SchemaError, from_shard_table
from data_pipeline.encoding import sessions_from_raw
from tests.data_pipeline.mssd_rows import HEADER, feature_row, session_rows, write_features, write_log


def _prepare(raw, out: Path, **kwargs) -> dict:
    return prepare(PrepareOptions(raw=raw, out=out, val_fraction=0.0, test_fraction=0.0, show_progress=False, **kwargs))


def _raw(tmp_path: Path, *sessions: list[dict], features: bool = True) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    write_log(raw / "log_0.csv", [row for rows in sessions for row in rows] or session_rows("s_good", 10))
    if features:
        write_features(raw / "tf_0.csv", [feature_row(f"t_{i}", i) for i in range(1, 21)])
    return raw


def _lines(rows: list[dict], header: list[str] = HEADER) -> list[str]:
    return [",".join(header)] + [",".join(row[c] for c in header) for row in rows]


def _run_cli(args: list[str], capfd) -> tuple[int, list[str]]:
    code = main([*args, "--quiet"])
    captured = capfd.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


def _one_error_line(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert not any("Traceback" in line or "ray::" in line or "Exception" in line for line in lines), lines
    return errors[0]


# ---------------------------------------------------------------------------
# 5. non-finite track features
# ---------------------------------------------------------------------------


def test_non_finite_feature_cells_are_counted_and_imputed_and_nothing_non_finite_is_written(tmp_path, ray_session):
    raw = _raw(tmp_path, session_rows("s", 20))
    rows = [feature_row(f"t_{i}", i) for i in range(1, 21)]
    rows[0]["tempo"], rows[1]["tempo"], rows[2]["tempo"] = "inf", "-inf", "1e309"
    rows[3]["loudness"] = "nan"
    rows[4]["duration"], rows[5]["duration"] = "1e300", "-1e300"  # finite, but their squares overflow
    write_features(raw / "tf_0.csv", rows)
    manifest = _prepare(raw, tmp_path / "out")
    features = open_prepared(tmp_path / "out").track_features
    assert np.isfinite(features).all()
    info = manifest["track_features"]
    assert info["non_finite_cells_imputed"] == {"tempo": 3}
    assert info["nan_cells_imputed"] == {"loudness": 1}
    json.loads((tmp_path / "out" / "manifest.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    vocab = open_prepared(tmp_path / "out").vocab.column("track_id").to_pylist()
    tempo, duration = TRACK_FEATURE_NAMES.index("tempo"), TRACK_FEATURE_NAMES.index("duration")
    assert features[vocab.index("t_1"), tempo] == 0.0  # imputed with the mean
    assert features[vocab.index("t_5"), duration] > 1.0 > -1.0 > features[vocab.index("t_6"), duration]
    assert len(set(features[FIRST_TRACK_ID:, tempo].tolist())) > 2  # the rest of the column still varies


# ---------------------------------------------------------------------------
# 6. silent passes
# ---------------------------------------------------------------------------


def test_a_folder_named_like_a_log_file_is_an_error_naming_it(tmp_path):
    raw = _raw(tmp_path)
    (raw / "log_1.csv").mkdir()
    with pytest.raises(SchemaError, match=r"log_1\.csv: a folder named like a data file"):
        _prepare(raw, tmp_path / "out")


def test_a_dangling_symlink_named_like_a_log_file_is_an_error_naming_its_target(tmp_path):
    raw = _raw(tmp_path)
    (raw / "log_1.csv.gz").symlink_to(tmp_path / "gone.csv.gz")
    with pytest.raises(SchemaError, match=r"log_1\.csv\.gz: a symbolic link to .*gone\.csv\.gz, which does not exist"):
        _prepare(raw, tmp_path / "out")


@pytest.mark.parametrize("value", ["2018-13-01", "2018-02-30", "15-07-18", "yesterday"])
def test_test_dates_that_are_not_calendar_dates_are_refused(tmp_path, value):
    with pytest.raises(SchemaError, match=f"--test-dates {value}: not a date as YYYY-MM-DD"):
        PrepareOptions(raw=tmp_path, out=tmp_path / "out", test_dates=[value]).validate()


def test_test_dates_matching_no_session_fail_instead_of_an_empty_test_split(tmp_path, ray_session, capfd):
    raw = _raw(tmp_path, session_rows("s", 12, date="2018-07-15"))
    code, lines = _run_cli(["--raw", str(raw), "--out", str(tmp_path / "out"), "--test-dates", "2018-09-18"], capfd)
    assert code == 2 and "--test-dates 2018-09-18: no kept session has that date" in _one_error_line(lines)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["15-07-18", "2018-02-30", "2018/07/15"])
def test_a_date_cell_that_is_not_an_iso_date_is_an_error_naming_file_and_line(tmp_path, ray_session, value):
    rows = session_rows("s", 10)
    rows[6]["date"] = value
    raw = _raw(tmp_path, session_rows("s_first", 10), rows)
    with pytest.raises(SchemaError, match=rf"log_0\.csv: line 18: column date holds '{value}', not a date as YYYY-MM-DD"):
        _prepare(raw, tmp_path / "out")


def test_a_run_that_keeps_no_session_fails_saying_why(tmp_path, ray_session, capfd):
    raw = _raw(tmp_path, session_rows("s_short", 9), session_rows("s_gap", 12, positions=[1, 2, 3]))
    code, lines = _run_cli(["--raw", str(raw), "--out", str(tmp_path / "out")], capfd)
    error = _one_error_line(lines)
    assert code == 2 and "no session was kept: 12 rows read" in error
    assert "length_out_of_range 9" in error and "missing_positions 3" in error
    assert not (tmp_path / "out").exists()


def test_a_session_merged_across_files_has_zeros_past_its_end_in_every_column(tmp_path, ray_session):
    long_session = session_rows("s_long", 20)
    split = session_rows("s_split", 11)
    raw = _raw(tmp_path, long_session, split[:5])
    write_log(raw / "log_1.csv", [*split[5:], *session_rows("s_after", 20)])
    manifest = _prepare(raw, tmp_path / "out")
    assert manifest["sessions"]["merged_from_fragments"] == 1
    data = open_prepared(tmp_path / "out")
    table = pa.concat_tables([from_shard_table(pq.read_table(f)) for f in data.split_files("train")])
    row = table.to_pylist()[table.column("session_id").to_pylist().index("s_split")]
    assert row["length"] == 11
    for name in ("tracks", "skip_2", "premium", "n_seekfwd", "hour_of_day", "reason_start", "not_skipped"):
        assert any(row[name][:11]) and row[name][11:] == [0] * 9, name


# ---------------------------------------------------------------------------
# 7. hidden second halves (tuning.predict's raw reading)
# ---------------------------------------------------------------------------


def test_sessions_whose_second_half_has_empty_interaction_and_reason_cells_are_encoded(tmp_path):
    rows = session_rows("s_hidden", 12)
    hidden = [c for c in LOG_COLUMNS if c not in ("session_id", "session_position", "session_length",
                                                   "track_id_clean", "date")]
    for row in rows[6:]:
        for column in hidden:
            row[column] = ""
    write_log(tmp_path / "log_input.csv", rows)
    categories = {"context_type": ["<pad/unknown>", "editorial_playlist"],
                  "reason_start": ["<pad/unknown>", "trackdone", "fwdbtn", "clickrow"],
                  "reason_end": ["<pad/unknown>", "trackdone", "fwdbtn"]}
    new = sessions_from_raw([tmp_path / "log_input.csv"], pa.array(["t_1", "t_2"]), categories)
    assert new.sessions.num_rows == 1 and new.dropped == {} and new.rows == 12
    assert new.empty_label_cells == 6
    session = new.sessions.to_pylist()[0]
    assert session["tracks"][:3] == [FIRST_TRACK_ID, FIRST_TRACK_ID + 1, 3]
    assert session["reason_start"][:6] == [3, 2, 2, 2, 2, 2] and session["reason_start"][6:] == [0] * 14
    assert session["skip_2"][:6] == [1, 0, 1, 0, 1, 0] and session["skip_2"][6:] == [0] * 14
    assert session["context_type"][6:12] == [0] * 6 and session["hour_of_day"][6:12] == [0] * 6


# ---------------------------------------------------------------------------
# 8. header-only files
# ---------------------------------------------------------------------------


def test_a_log_file_with_only_a_header_adds_no_rows(tmp_path, ray_session):
    raw = _raw(tmp_path, session_rows("s", 10))
    (raw / "log_1.csv").write_text(",".join(HEADER) + "\n")
    manifest = _prepare(raw, tmp_path / "out")
    assert manifest["rows"]["read"] == manifest["rows"]["kept"] == 10
    assert manifest["inputs"]["logs"] == ["log_0.csv", "log_1.csv"]


def test_only_header_only_log_files_is_an_error_that_nothing_was_kept(tmp_path, ray_session):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "log_0.csv").write_text(",".join(HEADER))
    with pytest.raises(SchemaError, match="no session was kept: 0 rows read from 1 log file"):
        _prepare(raw, tmp_path / "out")


# ---------------------------------------------------------------------------
# 9. one line, whatever layer found the problem
# ---------------------------------------------------------------------------


def test_a_bad_row_found_inside_a_ray_task_prints_one_line_and_nothing_from_ray(tmp_path, ray_session, capfd):
    rows = session_rows("s_bad", 10)
    rows[5]["hour_of_day"] = "noon"
    raw = _raw(tmp_path, session_rows("s", 10), rows)
    code, lines = _run_cli(["--raw", str(raw), "--out", str(tmp_path / "out")], capfd)
    assert code == 2
    assert _one_error_line(lines).endswith("log_0.csv: line 17: column hour_of_day holds 'noon', which is not a "
                                           "valid int8. Fix or remove that line and run again.")
    assert len(lines) == 1


def test_verbose_adds_the_full_trace(tmp_path, ray_session, capfd):
    rows = session_rows("s_bad", 10)
    rows[5]["hour_of_day"] = "noon"
    raw = _raw(tmp_path, rows)
    assert main(["--raw", str(raw), "--out", str(tmp_path / "out"), "--quiet", "--verbose"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_a_damaged_track_feature_file_stops_the_run_with_one_line_before_anything_is_written(
        tmp_path, ray_session, capfd):
    raw = _raw(tmp_path, session_rows("s", 10))
    rows = [feature_row(f"t_{i}", i) for i in range(1, 21)]
    rows[12]["energy"] = "loud"
    write_features(raw / "tf_0.csv", rows)
    code, lines = _run_cli(["--raw", str(raw), "--out", str(tmp_path / "out")], capfd)
    assert code == 2 and "tf_0.csv: line 14: column energy holds 'loud'" in _one_error_line(lines)
    assert not (tmp_path / "out").exists()


def test_a_damaged_log_and_a_damaged_feature_file_end_in_one_line_and_nothing_after(
        tmp_path, ray_session, capfd, caplog):
    rows = session_rows("s_bad", 10)
    rows[5]["hour_of_day"] = "noon"
    raw = _raw(tmp_path, rows)
    features = [feature_row(f"t_{i}", i) for i in range(1, 21)]
    features[3]["energy"] = "loud"
    write_features(raw / "tf_0.csv", features)
    code, lines = _run_cli(["--raw", str(raw), "--out", str(tmp_path / "out")], capfd)
    gc.collect()  # Ray reports a failed task nobody read when its reference goes (through logging)
    time.sleep(2)
    later = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and "log_0.csv: line 7" in _one_error_line(lines) and later == []
    assert not [r for r in caplog.records if "Unhandled error" in r.getMessage()]


# ---------------------------------------------------------------------------
# 10. diagnostics that point at the right place
# ---------------------------------------------------------------------------


def _long_log(path: Path, bad_line: int, bad_text: bytes, blank_lines_before: int = 0) -> Path:
    """A log of ~1 MiB whose physical line `bad_line` is `bad_text`; blank lines come first when asked."""
    rows = [row for i in range(600) for row in session_rows(f"s_{i:04d}", 10)]
    lines = [line.encode() for line in _lines(rows)]
    lines[1:1] = [b""] * blank_lines_before
    lines[bad_line - 1] = bad_text
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_ragged_row_deep_in_a_file_is_reported_at_its_line(tmp_path, ray_session):
    raw = _raw(tmp_path)
    _long_log(raw / "log_1.csv", 5003, b"s_x,1,10,t_1,true")
    with pytest.raises(SchemaError, match=r"log_1\.csv: line 5003: 5 fields where the header has 21"):
        _prepare(raw, tmp_path / "out")


def test_a_bad_byte_deep_in_a_file_is_reported_at_its_line_counting_blank_lines(tmp_path, ray_session):
    raw = _raw(tmp_path)
    row = _lines(session_rows("s_latin", 10))[3].replace("t_3", "t_caf\xe9").encode("latin-1")
    _long_log(raw / "log_1.csv", 4001, row, blank_lines_before=3)
    with pytest.raises(SchemaError, match=r"log_1\.csv: line 4001: column track_id_clean holds bytes that are not UTF-8"):
        _prepare(raw, tmp_path / "out")


def test_a_csv_starting_with_a_byte_order_mark_reads_like_one_without(tmp_path, ray_session):
    raw = _raw(tmp_path, session_rows("s", 12))
    plain = _prepare(raw, tmp_path / "plain")
    (raw / "log_0.csv").write_bytes(codecs.BOM_UTF8 + (raw / "log_0.csv").read_bytes())
    with_bom = _prepare(raw, tmp_path / "bom")
    assert with_bom["rows"] == plain["rows"] and with_bom["sessions"]["kept"] == 1
    assert open_prepared(tmp_path / "bom").numpy_split("train", "challenge")["in_tracks"].tolist() == \
        open_prepared(tmp_path / "plain").numpy_split("train", "challenge")["in_tracks"].tolist()


def test_a_header_with_a_stray_space_names_the_column_visibly(tmp_path):
    raw = _raw(tmp_path)
    header = ["session_id", " session_position", *HEADER[2:]]
    (raw / "log_1.csv").write_text("\n".join([",".join(header), *_lines(session_rows("s", 10))[1:]]) + "\n")
    with pytest.raises(SchemaError, match=r"log_1\.csv: .*missing column\(s\) session_position; unexpected column\(s\) ' session_position'"):
        _prepare(raw, tmp_path / "out")


@pytest.mark.parametrize("name, data, message", [
    ("log_1.csv", gzip.compress(b"session_id\n"), "gzip-compressed: name it .csv.gz"),
    ("log_1.csv.gz", b"session_id,session_position\n", "not a gzip file, although named .gz"),
    ("log_1.csv", codecs.BOM_UTF16_LE + "session_id".encode("utf-16-le"), "UTF-16 text: save it as UTF-8"),
])
def test_files_in_the_wrong_encoding_say_what_they_are(tmp_path, name, data, message):
    raw = _raw(tmp_path)
    (raw / name).write_bytes(data)
    with pytest.raises(SchemaError, match=f"{name.replace('.', '[.]')}: .*{message}"):
        _prepare(raw, tmp_path / "out")


def test_columns_in_another_order_read_the_same(tmp_path, ray_session):
    raw = _raw(tmp_path, session_rows("s", 12))
    ordered = _prepare(raw, tmp_path / "ordered")
    shuffled = list(reversed(HEADER))
    (raw / "log_0.csv").write_text("\n".join(_lines(session_rows("s", 12), shuffled)) + "\n")
    reordered = _prepare(raw, tmp_path / "reordered")
    assert reordered["rows"] == ordered["rows"]
    a = open_prepared(tmp_path / "ordered").numpy_split("train", "challenge")
    b = open_prepared(tmp_path / "reordered").numpy_split("train", "challenge")
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_a_quote_that_swallows_a_line_end_is_an_error_not_a_lost_row(tmp_path, ray_session):
    raw = _raw(tmp_path)
    lines = _lines([*session_rows("s_a", 10), *session_rows("s_b", 10)])
    lines[4] = lines[4][: lines[4].rindex(",") + 1] + '"' + lines[4][lines[4].rindex(",") + 1:]
    lines[5] += '"'  # the quoted last field of line 5 runs to the end of line 6: 21 fields, one row fewer
    (raw / "log_1.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError, match=r"log_1\.csv: line 5: column hist_user_behavior_reason_end holds a value that "
                                          r"runs over several lines \(an unbalanced quote\?\)"):
        _prepare(raw, tmp_path / "out")


def test_a_quote_that_runs_to_the_end_of_the_file_names_the_line_where_it_opens(tmp_path, ray_session):
    raw = _raw(tmp_path)
    lines = _lines([*session_rows("s_a", 10), *session_rows("s_b", 10)])
    lines[4] = lines[4].replace("t_4", '"t_4')
    (raw / "log_1.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SchemaError, match=r"log_1\.csv: line 5: 4 fields where the header has 21 \('s_a,4,10,\"t_4"):
        _prepare(raw, tmp_path / "out")


def test_raw_training_set_and_track_features_folders_are_found_by_kind(tmp_path, ray_session, capfd):
    download = tmp_path / "mssd"
    (download / "training_set").mkdir(parents=True)
    (download / "track_features").mkdir()
    (download / "test_set").mkdir()
    write_log(download / "training_set" / "log_0_20180715_000000000000.csv", session_rows("s", 12))
    write_features(download / "track_features" / "tf_000000000000.csv", [feature_row(f"t_{i}", i) for i in range(1, 13)])
    write_log(download / "test_set" / "log_prehistory_20180715_000000000000.csv", session_rows("s_half", 6))
    both = _prepare([download / "training_set", download / "track_features"], tmp_path / "both")
    parent = _prepare(download, tmp_path / "parent")
    assert both["track_features"]["tracks_with_features"] == parent["track_features"]["tracks_with_features"] == 12
    assert parent["inputs"] == {"logs": ["training_set/log_0_20180715_000000000000.csv"],
                                "track_features": ["track_features/tf_000000000000.csv"]}
    assert both["sessions"]["kept"] == parent["sessions"]["kept"] == 1
    err = capfd.readouterr().err
    assert "set aside 1 WSDM test-set file(s) (log_prehistory_20180715_000000000000.csv, ...)" in err


def test_no_track_feature_file_is_said_in_one_line_naming_what_to_pass(tmp_path, ray_session, capfd):
    raw = _raw(tmp_path, session_rows("s", 10), features=False)
    code, lines = _run_cli(["--raw", str(raw), "--out", str(tmp_path / "out")], capfd)
    assert code == 0
    warnings = [line for line in lines if line.startswith("warning: no track-feature files")]
    assert len(warnings) == 1 and "--raw training_set track_features" in warnings[0]


def test_archives_that_were_not_unpacked_are_named_in_the_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "training_set_0.tar.gz").write_bytes(b"")
    with pytest.raises(SchemaError, match=r"no session log files .*Unpack the archives first \(training_set_0\.tar\.gz"):
        _prepare(raw, tmp_path / "out")


def test_a_linked_folder_is_followed_once_even_when_a_link_loops_back(tmp_path):
    elsewhere = tmp_path / "disk2" / "training_set"
    elsewhere.mkdir(parents=True)
    write_log(elsewhere / "log_0.csv", session_rows("s", 10))
    mssd = tmp_path / "mssd"
    mssd.mkdir()
    (mssd / "training_set").symlink_to(elsewhere)
    (mssd / "loop").symlink_to(mssd)
    files = readers.find_raw_files(mssd)
    assert [files.name(p) for p in files.logs] == ["training_set/log_0.csv"]
