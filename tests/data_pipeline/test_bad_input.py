"""Bad raw input: every case ends in a clear error (file, line, what to do) or a counted drop."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.dataset import open_prepared
from data_pipeline.prepare import PrepareOptions, main, prepare
from data_pipeline.schema import FIRST_TRACK_ID, LOG_COLUMNS, SchemaError
from tests.data_pipeline.mssd_rows import HEADER, feature_row, session_rows, write_features, write_log

REPO = Path(__file__).resolve().parents[2]


def _prepare(raw: Path, out: Path, **kwargs) -> dict:
    return prepare(PrepareOptions(raw=raw, out=out, val_fraction=0.0, test_fraction=0.0, show_progress=False, **kwargs))


def _good_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    write_log(raw / "log_0.csv", session_rows("s_good", 10))
    write_features(raw / "tf_0.csv", [feature_row(f"t_{i}", i) for i in range(1, 11)])
    return raw


# ---------------------------------------------------------------------------
# Session-level problems: one raw directory, prepared once, one test per case.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, ray_session):
    raw = tmp_path_factory.mktemp("mixed_raw")
    split_rows = session_rows("s_split", 12)
    duplicate = session_rows("s_duplicate_position", 10, positions=[1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10])
    out_of_order = session_rows("s_out_of_order", 10, positions=[2, 1, 3, 4, 5, 6, 7, 8, 10, 9])
    inconsistent = session_rows("s_inconsistent", 10)
    inconsistent[4]["session_length"] = "11"
    null_cell = session_rows("s_null_cell", 10)
    null_cell[3]["track_id_clean"] = ""
    write_log(raw / "log_0_20180715.csv", [
        *session_rows("s_good_20", 20),
        *session_rows("s_good_10", 10, true="True", false="False"),  # the real sample's spelling
        *session_rows("s_missing_position", 12, positions=[1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]),
        *duplicate,
        *out_of_order,
        *session_rows("s_too_short", 9),
        *inconsistent,
        *null_cell,
        *split_rows[:6],
    ])
    write_log(raw / "log_1_20180716.csv.gz", [*split_rows[6:], *session_rows("s_good_last", 10, date="2018-07-16")])
    features = [feature_row(f"t_{i}", i) for i in range(1, 11)]  # t_11..t_20 have no feature row
    features[1]["tempo"] = ""  # a NaN cell
    write_features(raw / "tf_0.csv", features)
    out = tmp_path_factory.mktemp("mixed_prepared")
    manifest = _prepare(raw, out)
    return manifest, out


def test_accounting_adds_up_for_every_row_and_session(mixed):
    manifest, _ = mixed
    rows, sessions = manifest["rows"], manifest["sessions"]
    assert rows["read"] == 20 + 10 + 11 + 11 + 10 + 9 + 10 + 10 + 12 + 10
    assert rows["kept"] == 20 + 10 + 10 + 12 + 10
    assert rows["kept"] + sum(rows["dropped"].values()) == rows["read"]
    assert sessions["read"] == 10
    assert sessions["kept"] == 5
    assert sessions["kept"] + sum(sessions["dropped"].values()) == sessions["read"]


def test_session_with_missing_position_is_dropped_and_named(mixed):
    manifest, _ = mixed
    assert manifest["sessions"]["dropped"]["missing_positions"] == 1
    assert manifest["rows"]["dropped"]["missing_positions"] == 11
    assert manifest["sessions"]["dropped_examples"]["missing_positions"][0]["session_id"] == "s_missing_position"


def test_session_with_duplicated_position_is_dropped_and_named(mixed):
    manifest, _ = mixed
    assert manifest["rows"]["dropped"]["duplicate_positions"] == 11
    assert manifest["sessions"]["dropped_examples"]["duplicate_positions"][0]["session_id"] == "s_duplicate_position"


def test_session_outside_10_to_20_tracks_is_dropped(mixed):
    manifest, _ = mixed
    assert manifest["sessions"]["dropped"]["length_out_of_range"] == 1
    assert manifest["rows"]["dropped"]["length_out_of_range"] == 9


def test_rows_disagreeing_on_session_length_drop_their_session(mixed):
    manifest, _ = mixed
    assert manifest["rows"]["dropped"]["inconsistent_length"] == 10
    assert manifest["sessions"]["dropped_examples"]["inconsistent_length"][0]["session_id"] == "s_inconsistent"


def test_empty_cell_drops_its_session_as_missing_values(mixed):
    manifest, _ = mixed
    assert manifest["rows"]["dropped"]["missing_values"] == 10
    assert manifest["sessions"]["dropped_examples"]["missing_values"][0]["session_id"] == "s_null_cell"


def _session(out: Path, session_id: str) -> dict:
    data = open_prepared(out).numpy_split("train", "challenge")
    i = list(data["session_id"]).index(session_id)
    return {k: v[i] for k, v in data.items()}


def test_out_of_order_positions_are_sorted_and_counted(mixed):
    manifest, out = mixed
    assert manifest["sessions"]["reordered"] == 1
    session = _session(out, "s_out_of_order")
    vocab = open_prepared(out).vocab.column("track_id").to_pylist()
    tracks = [vocab[t] for t in session["in_tracks"][:5]] + [vocab[t] for t in session["out_tracks"][:5]]
    assert tracks == [f"t_{p}" for p in range(1, 11)]


def test_session_split_across_files_is_merged_and_reported(mixed):
    manifest, out = mixed
    assert manifest["sessions"]["split_across_files"] == 1
    example = manifest["sessions"]["split_across_files_examples"][0]
    assert example["session_id"] == "s_split"
    assert [Path(f).name for f in example["files"]] == ["log_0_20180715.csv", "log_1_20180716.csv.gz"]
    session = _session(out, "s_split")
    vocab = open_prepared(out).vocab.column("track_id").to_pylist()
    assert session["length"] == 12
    assert [vocab[t] for t in session["in_tracks"][:6]] + [vocab[t] for t in session["out_tracks"][:6]] == [
        f"t_{p}" for p in range(1, 13)
    ]
    assert list(session["out_skip_2"][:6]) == [p % 2 for p in range(7, 13)]


def test_true_false_and_lowercase_booleans_read_alike(mixed):
    _, out = mixed
    upper, lower = _session(out, "s_good_10"), _session(out, "s_good_last")
    assert list(upper["in_skip_2"][:5]) == list(lower["in_skip_2"][:5]) == [1, 0, 1, 0, 1]
    assert upper["in_premium"][0] == lower["in_premium"][0] == 1


def test_tracks_without_feature_row_get_zeros_and_missing_flag(mixed):
    manifest, out = mixed
    dataset = open_prepared(out)
    vocab = dataset.vocab.column("track_id").to_pylist()
    features = dataset.track_features
    assert manifest["track_features"]["tracks_with_features"] == 10
    assert manifest["track_features"]["missing"] == 10
    for track in ("t_11", "t_20"):
        row = features[vocab.index(track)]
        assert row[-1] == 1.0 and not row[:-1].any()
    assert (features[:FIRST_TRACK_ID, -1] == 1.0).all()
    assert features[vocab.index("t_1"), -1] == 0.0


def test_nan_feature_cell_is_imputed_with_the_mean_and_counted(mixed):
    manifest, out = mixed
    dataset = open_prepared(out)
    tempo = dataset.feature_names.index("tempo")
    assert manifest["track_features"]["nan_cells_imputed"] == {"tempo": 1}
    row = dataset.track_features[dataset.vocab.column("track_id").to_pylist().index("t_2")]
    assert row[tempo] == 0.0  # standardised mean
    assert np.isfinite(dataset.track_features).all()


# ---------------------------------------------------------------------------
# File-level problems: clear errors that name the file (and line).
# ---------------------------------------------------------------------------


def test_missing_column_is_an_error_naming_file_and_column(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    header = [c for c in HEADER if c != "skip_2"]
    write_log(raw / "log_0.csv", session_rows("s", 10), header=header)
    with pytest.raises(SchemaError, match=r"log_0\.csv: .*missing column\(s\) skip_2"):
        _prepare(raw, tmp_path / "out")


def test_extra_column_is_an_error_naming_it(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = session_rows("s", 10)
    for row in rows:
        row["user_id"] = "u1"
    write_log(raw / "log_0.csv", rows, header=[*HEADER, "user_id"])
    with pytest.raises(SchemaError, match=r"log_0\.csv: .*unexpected column\(s\) 'user_id'"):
        _prepare(raw, tmp_path / "out")


def test_empty_file_is_an_error_naming_it(tmp_path):
    raw = _good_raw(tmp_path)
    (raw / "log_1.csv").write_text("")
    with pytest.raises(SchemaError, match=r"log_1\.csv: the file is empty"):
        _prepare(raw, tmp_path / "out")


def test_wrong_type_names_file_line_and_column(tmp_path, ray_session):
    raw = _good_raw(tmp_path)
    rows = session_rows("s_bad", 10)
    rows[2]["session_position"] = "three"
    write_log(raw / "log_1.csv", rows)
    with pytest.raises(SchemaError, match=r"log_1\.csv: line 4: column session_position holds 'three'"):
        _prepare(raw, tmp_path / "out")


def test_truncated_gzip_names_the_file(tmp_path, ray_session):
    raw = _good_raw(tmp_path)
    rows = [r for i in range(200) for r in session_rows(f"s_{i}", 20)]
    data = gzip.compress(("\n".join([",".join(HEADER)] + [",".join(r[c] for c in HEADER) for r in rows]) + "\n").encode())
    (raw / "log_1.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError, match=r"log_1\.csv\.gz: .*truncated or corrupt"):
        _prepare(raw, tmp_path / "out")


def test_parquet_log_with_wrong_column_type_is_an_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    columns = {c: pa.array([r[c] for r in session_rows("s", 10)]) for c in LOG_COLUMNS}  # all strings
    pq.write_table(pa.table(columns), raw / "log_0.parquet")
    with pytest.raises(SchemaError, match=r"log_0\.parquet: column session_position has type string"):
        _prepare(raw, tmp_path / "out")


def test_no_log_files_is_an_error_saying_what_to_pass(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(SchemaError, match="no session log files"):
        _prepare(tmp_path / "raw", tmp_path / "out")


def test_refuses_to_overwrite_a_folder_that_is_not_a_prepared_dataset(tmp_path):
    raw = _good_raw(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SchemaError, match="refusing to overwrite"):
        _prepare(raw, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_log(raw / "log_0.csv", session_rows("s", 10), header=HEADER[:-1])
    result = subprocess.run(
        [sys.executable, "-m", "data_pipeline.prepare", "--raw", str(raw), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: ") and "hist_user_behavior_reason_end" in result.stderr


def test_cli_reports_a_bad_line_found_during_the_ray_read_in_one_line(tmp_path, ray_session, capsys):
    raw = _good_raw(tmp_path)
    rows = session_rows("s_bad", 10)
    rows[5]["hour_of_day"] = "noon"
    write_log(raw / "log_1.csv", rows)
    code = main(["--raw", str(raw), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "log_1.csv: line 7: column hour_of_day holds 'noon'" in err
    assert "\n" not in err


# ---------------------------------------------------------------------------
# Prepared directories that cannot be used.
# ---------------------------------------------------------------------------


def test_incomplete_prepared_directory_is_an_error_saying_what_to_run(mixed, tmp_path):
    _, out = mixed
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "vocab.parquet").unlink()
    with pytest.raises(SchemaError, match=r"missing vocab\.parquet.*python -m data_pipeline\.prepare"):
        open_prepared(broken)


def test_prepared_directory_of_another_format_version_is_an_error(mixed, tmp_path):
    _, out = mixed
    old = tmp_path / "old"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 0
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="format version 0.*Prepare the raw data again"):
        open_prepared(old)


def test_session_id_complete_in_two_files_drops_every_copy_and_its_plays(tmp_path, ray_session):
    raw = tmp_path / "raw"
    raw.mkdir()
    twice = session_rows("s_twice", 10, tracks=[f"t_dup_{p}" for p in range(1, 11)])
    write_log(raw / "log_0.csv", [*session_rows("s_a", 10), *twice])
    write_log(raw / "log_1.csv", [*twice, *session_rows("s_b", 12)])
    manifest = _prepare(raw, tmp_path / "out")
    assert manifest["sessions"]["dropped"] == {"duplicate_session_id": 2}
    assert manifest["rows"]["dropped"] == {"duplicate_session_id": 20}
    assert manifest["sessions"]["kept"] == 2 and manifest["rows"]["kept"] == 22
    assert manifest["sessions"]["dropped_examples"]["duplicate_session_id"][0]["session_id"] == "s_twice"
    vocab = open_prepared(tmp_path / "out").vocab.column("track_id").to_pylist()
    assert not any(t.startswith("t_dup_") for t in vocab)


def test_a_csv_with_quoted_header_and_values_reads_like_an_unquoted_one(tmp_path, ray_session):
    # spreadsheet and pandas exports quote every field; that is valid CSV, not bad input
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = session_rows("s_quoted", 12)
    lines = [",".join(f'"{c}"' for c in HEADER)] + [",".join(f'"{row.get(c, "")}"' for c in HEADER) for row in rows]
    (raw / "log_0.csv").write_text("\n".join(lines) + "\n")
    quoted = _prepare(raw, tmp_path / "quoted")
    plain_raw = tmp_path / "plain_raw"
    plain_raw.mkdir()
    write_log(plain_raw / "log_0.csv", rows)
    _prepare(plain_raw, tmp_path / "plain")
    assert quoted["sessions"]["kept"] == 1 and quoted["rows"]["kept"] == 12
    got, want = _session(tmp_path / "quoted", "s_quoted"), _session(tmp_path / "plain", "s_quoted")
    for key in ("in_skip_2", "out_skip_2", "in_tracks", "in_premium", "in_reason_end"):
        np.testing.assert_array_equal(got[key], want[key])
