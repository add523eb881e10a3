"""The MSSD schema: header validation and the prepared format's shape."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from data_pipeline.schema import (
    CATEGORICAL_SEQUENCE_COLUMNS,
    CATEGORICAL_VALUES,
    LOG_COLUMNS,
    MAX_SESSION_LENGTH,
    PREPARED_SESSION_SCHEMA,
    SEQUENCE_COLUMNS,
    SHARD_SCHEMA,
    TRACK_FEATURE_COLUMNS,
    TRACK_FEATURE_NAMES,
    SchemaError,
    from_shard_table,
    to_shard_table,
    validate_log_columns,
    validate_track_feature_columns,
)


def test_log_schema_has_the_21_mssd_columns():
    assert len(LOG_COLUMNS) == 21
    assert list(LOG_COLUMNS)[:4] == ["session_id", "session_position", "session_length", "track_id_clean"]


def test_valid_headers_pass_in_any_order():
    validate_log_columns("log_0.csv", list(reversed(LOG_COLUMNS)))
    validate_track_feature_columns("tf_0.csv", list(TRACK_FEATURE_COLUMNS))


def test_missing_log_column_is_named_with_the_file():
    columns = [c for c in LOG_COLUMNS if c != "date"]
    with pytest.raises(SchemaError, match=r"log_0\.csv: not an MSSD session log file: missing column\(s\) date"):
        validate_log_columns("log_0.csv", columns)


def test_extra_track_feature_column_is_named_with_the_file():
    with pytest.raises(SchemaError, match=r"tf_0\.csv: .*unexpected column\(s\) 'genre'"):
        validate_track_feature_columns("tf_0.csv", [*TRACK_FEATURE_COLUMNS, "genre"])


def test_empty_header_says_the_file_is_empty():
    with pytest.raises(SchemaError, match=r"log_0\.csv: the file is empty"):
        validate_log_columns("log_0.csv", [])


def test_every_log_column_but_the_session_keys_is_kept_per_position():
    sources = {c.source for c in SEQUENCE_COLUMNS}
    assert set(LOG_COLUMNS) - sources == {"session_id", "session_position", "session_length", "date"}


def test_prepared_per_position_columns_are_fixed_lists_of_20():
    for column in SEQUENCE_COLUMNS:
        field = PREPARED_SESSION_SCHEMA.field(column.name)
        assert pa.types.is_fixed_size_list(field.type) and field.type.list_size == MAX_SESSION_LENGTH


def test_shard_layout_round_trips_every_per_position_column_without_a_copy():
    rng = np.random.default_rng(0)
    n = 9
    columns = {"session_id": [f"s{i}" for i in range(n)], "date": ["2018-07-15"] * n,
               "length": np.full(n, 12, np.int8)}
    for column in SEQUENCE_COLUMNS:
        values = rng.integers(-100, 100, n * MAX_SESSION_LENGTH).astype(column.dtype.to_pandas_dtype())
        columns[column.name] = pa.FixedSizeListArray.from_arrays(pa.array(values), MAX_SESSION_LENGTH)
    table = pa.table(columns, schema=PREPARED_SESSION_SCHEMA).slice(2, 5)  # an offset, as in a sliced block
    shard = to_shard_table(table)
    assert shard.schema.equals(SHARD_SCHEMA)
    assert shard.column("tracks").type == pa.binary(4 * MAX_SESSION_LENGTH)
    back = from_shard_table(shard)
    assert back.equals(table)
    assert from_shard_table(table).equals(table)  # version 1's lists pass through
    tracks = table.column("tracks").chunk(0).flatten()
    assert back.column("tracks").chunk(0).flatten().buffers()[1].address == tracks.buffers()[1].address + 4 * tracks.offset


def test_track_features_are_29_numeric_plus_missing_indicator():
    assert len(TRACK_FEATURE_NAMES) == 30 and TRACK_FEATURE_NAMES[-1] == "features_missing"
    assert "track_id" not in TRACK_FEATURE_NAMES and "mode" in TRACK_FEATURE_NAMES


def test_categorical_columns_map_to_known_value_lists():
    for name, source in CATEGORICAL_SEQUENCE_COLUMNS.items():
        assert name in {c.name for c in SEQUENCE_COLUMNS}
        assert len(set(CATEGORICAL_VALUES[source])) == len(CATEGORICAL_VALUES[source]) > 0
