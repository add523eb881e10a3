"""prepare on small synthetic data and on the real MSSD sample: counts, splits, vocabulary, features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.dataset import open_prepared
from data_pipeline.prepare import PrepareOptions, build_parser, prepare
from data_pipeline.sessions import DROP_REASONS
from data_pipeline.schema import (
    FIRST_TRACK_ID,
    MODE_VALUES,
    PREPARED_SESSION_SCHEMA,
    RESERVED_TOKENS,
    SHARD_SCHEMA,
    SPLITS,
    TRACK_FEATURE_NAMES,
    UNK_ID,
    from_shard_table,
)


def _raw_logs(raw: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(raw.glob("log_*.csv*"))], ignore_index=True)


def _split_ids(prepared: Path) -> dict[str, set]:
    dataset = open_prepared(prepared)
    return {
        split: {sid for f in dataset.split_files(split) for sid in pq.read_table(f, columns=["session_id"]).column(0).to_pylist()}
        for split in SPLITS
    }


@pytest.fixture(scope="module")
def raw_logs(synthetic_raw) -> pd.DataFrame:
    return _raw_logs(synthetic_raw)


def test_every_synthetic_row_and_session_is_kept_and_counted(synthetic_prepared, raw_logs):
    manifest = json.loads((synthetic_prepared / "manifest.json").read_text())
    assert manifest["rows"] == {"read": len(raw_logs), "kept": len(raw_logs), "dropped": {}}
    assert manifest["sessions"]["read"] == manifest["sessions"]["kept"] == raw_logs.session_id.nunique() == 3000
    assert sum(manifest["splits"][s]["sessions"] for s in SPLITS) == 3000
    assert sum(manifest["splits"][s]["rows"] for s in SPLITS) == len(raw_logs)
    for split in SPLITS:
        assert open_prepared(synthetic_prepared).num_sessions(split) == manifest["splits"][split]["sessions"]


def test_split_shares_follow_the_fractions(synthetic_prepared):
    manifest = json.loads((synthetic_prepared / "manifest.json").read_text())
    shares = {s: manifest["splits"][s]["sessions"] / 3000 for s in SPLITS}
    assert abs(shares["val"] - 0.1) < 0.03 and abs(shares["test"] - 0.1) < 0.03


def test_shards_have_the_shard_schema_and_read_back_as_prepared_sessions(synthetic_prepared):
    for split in SPLITS:
        for shard in open_prepared(synthetic_prepared).split_files(split):
            assert pq.read_schema(shard).equals(SHARD_SCHEMA)
            assert from_shard_table(pq.read_table(shard)).schema.equals(PREPARED_SESSION_SCHEMA)


def test_a_dataset_with_version_1_shards_reads_the_same(synthetic_prepared, tmp_path):
    """Version 1 wrote the per-position columns as parquet lists: such a dataset still opens and reads the same."""
    old = tmp_path / "v1"
    shutil.copytree(synthetic_prepared, old)
    for shard in (old / "sessions").glob("*/*.parquet"):
        pq.write_table(from_shard_table(pq.read_table(shard)), shard)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert pa.types.is_fixed_size_list(pq.read_schema(next((old / "sessions").glob("train/*.parquet"))).field("tracks").type)
    for split in SPLITS:
        now, before = open_prepared(synthetic_prepared).numpy_split(split), open_prepared(old).numpy_split(split)
        assert before.keys() == now.keys()
        for key in now:
            np.testing.assert_array_equal(before[key], now[key])


def test_splits_are_disjoint_and_stable_across_runs(synthetic_raw, synthetic_prepared, tmp_path, ray_session):
    first = _split_ids(synthetic_prepared)
    assert not (first["train"] & first["val"]) and not (first["train"] & first["test"]) and not (first["val"] & first["test"])
    again = tmp_path / "again"
    manifest = prepare(PrepareOptions(raw=synthetic_raw, out=again, min_count=1, show_progress=False))
    assert _split_ids(again) == first
    assert manifest["fingerprint"] == open_prepared(synthetic_prepared).fingerprint
    # vocabulary ids are stable too
    assert pq.read_table(again / "vocab.parquet").equals(pq.read_table(synthetic_prepared / "vocab.parquet"))
    assert np.array_equal(np.load(again / "track_features.npy"), np.load(synthetic_prepared / "track_features.npy"))


def test_vocabulary_is_reserved_tokens_then_training_tracks_by_count(synthetic_prepared, raw_logs):
    dataset = open_prepared(synthetic_prepared)
    vocab = dataset.vocab.to_pandas()
    assert vocab.track_id[:FIRST_TRACK_ID].tolist() == list(RESERVED_TOKENS)
    assert vocab["index"].tolist() == list(range(len(vocab)))
    train_ids = _split_ids(synthetic_prepared)["train"]
    counts = raw_logs[raw_logs.session_id.isin(train_ids)].track_id_clean.value_counts()
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    tracks = vocab.iloc[FIRST_TRACK_ID:]
    assert list(zip(tracks.track_id, tracks["count"])) == expected
    assert dataset.vocab_size == len(vocab) == FIRST_TRACK_ID + len(counts)


def test_sessions_hold_the_raw_rows_encoded(synthetic_prepared, raw_logs):
    dataset = open_prepared(synthetic_prepared)
    index = {t: i for i, t in enumerate(dataset.vocab.column("track_id").to_pylist())}
    table = from_shard_table(pq.read_table(dataset.split_files("val")[0])).slice(0, 20).to_pandas()
    reason_codes = dataset.categories["reason_start"]
    for session in table.itertuples():
        rows = raw_logs[raw_logs.session_id == session.session_id].sort_values("session_position")
        n = len(rows)
        assert session.length == n
        expected_tracks = [index.get(t, UNK_ID) for t in rows.track_id_clean]
        assert list(session.tracks[:n]) == expected_tracks and not session.tracks[n:].any()
        assert list(session.skip_2[:n]) == rows.skip_2.astype(int).tolist()
        assert list(session.n_seekback[:n]) == rows.hist_user_behavior_n_seekback.tolist()
        assert [reason_codes[c] for c in session.reason_start[:n]] == rows.hist_user_behavior_reason_start.tolist()
        assert session.date == rows.date.iloc[0]


def test_track_features_are_standardised_rows_aligned_to_vocabulary_ids(synthetic_raw, synthetic_prepared):
    dataset = open_prepared(synthetic_prepared)
    features = dataset.track_features
    assert features.shape == (dataset.vocab_size, len(TRACK_FEATURE_NAMES)) and features.dtype == np.float32
    assert dataset.feature_names == list(TRACK_FEATURE_NAMES)
    raw = pd.read_csv(next(synthetic_raw.glob("tf_*.csv"))).set_index("track_id")
    raw["mode"] = raw["mode"].map(MODE_VALUES)
    vocab = dataset.vocab.column("track_id").to_pylist()
    names = list(TRACK_FEATURE_NAMES[:-1])
    train_tracks = raw.loc[vocab[FIRST_TRACK_ID:], names]
    mean, std = train_tracks.mean().to_numpy(), train_tracks.std(ddof=0).replace(0, 1).to_numpy()
    for vocab_id in (FIRST_TRACK_ID, FIRST_TRACK_ID + 7, dataset.vocab_size - 1):
        expected = (raw.loc[vocab[vocab_id], names].to_numpy(dtype=float) - mean) / std
        np.testing.assert_allclose(features[vocab_id, :-1], expected, rtol=1e-4, atol=1e-4)
        assert features[vocab_id, -1] == 0.0
    assert (features[:FIRST_TRACK_ID] == np.eye(1, len(TRACK_FEATURE_NAMES), len(TRACK_FEATURE_NAMES) - 1)).all()


def test_top_k_caps_the_vocabulary_and_counts_unk_plays(synthetic_raw, tmp_path, ray_session):
    manifest = prepare(PrepareOptions(raw=synthetic_raw, out=tmp_path / "top", top_k=50, show_progress=False))
    dataset = open_prepared(tmp_path / "top")
    assert dataset.vocab_size == manifest["vocab"]["size"] == FIRST_TRACK_ID + 50
    train = dataset.numpy_split("train", "challenge")
    unk_in_train = int((train["in_tracks"] == UNK_ID).sum() + (train["out_tracks"] == UNK_ID).sum())
    assert unk_in_train == manifest["splits"]["train"]["unk_plays"] > 0
    assert manifest["vocab"]["unk_plays"] == sum(manifest["splits"][s]["unk_plays"] for s in SPLITS)


def test_test_dates_put_exactly_those_days_in_test(synthetic_raw, tmp_path, ray_session):
    manifest = prepare(PrepareOptions(raw=synthetic_raw, out=tmp_path / "by_date", test_dates=["2018-07-16"],
                                      show_progress=False))
    dataset = open_prepared(tmp_path / "by_date")
    test_dates = set(dataset.numpy_split("test", "challenge")["date"])
    other_dates = set(dataset.numpy_split("train", "challenge")["date"]) | set(dataset.numpy_split("val", "challenge")["date"])
    assert test_dates == {"2018-07-16"} and "2018-07-16" not in other_dates
    assert manifest["splits"]["test"]["sessions"] == 1500  # the generator spreads 3000 sessions over 2 days


def test_parquet_raw_gives_the_same_sessions_as_csv(synthetic_raw, synthetic_prepared, tmp_path, ray_session):
    raw = tmp_path / "raw_parquet"
    raw.mkdir()
    for path in synthetic_raw.glob("log_*.csv"):
        import pyarrow.csv as pacsv

        from data_pipeline.readers import log_convert_options

        pq.write_table(pacsv.read_csv(path, convert_options=log_convert_options()), raw / path.name.replace(".csv", ".parquet"))
    (raw / "tf_000000000000.csv").write_bytes(next(synthetic_raw.glob("tf_*.csv")).read_bytes())
    prepare(PrepareOptions(raw=raw, out=tmp_path / "from_parquet", min_count=1, show_progress=False))
    a = open_prepared(synthetic_prepared).numpy_split("val", "challenge")
    b = open_prepared(tmp_path / "from_parquet").numpy_split("val", "challenge")
    order_a, order_b = np.argsort(a["session_id"]), np.argsort(b["session_id"])
    for key in a:
        assert np.array_equal(a[key][order_a], b[key][order_b]), key


def test_cli_help_lists_every_option():
    text = build_parser().format_help()
    for flag in ("--raw", "--out", "--min-count", "--top-k", "--val-fraction", "--test-fraction", "--test-dates", "--address",
                 "--fold", "--quiet", "--verbose"):
        assert flag in text
    for reason in DROP_REASONS:
        assert reason in text


# ---------------------------------------------------------------------------
# The real MSSD sample
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_sample_prepared(mssd_sample_dir, tmp_path_factory, ray_session) -> tuple[dict, Path]:
    raw = tmp_path_factory.mktemp("sample_raw")
    (raw / "log_sample.csv.gz").symlink_to(mssd_sample_dir / "log_sample.csv.gz")
    out = tmp_path_factory.mktemp("sample_prepared")
    return prepare(PrepareOptions(raw=raw, out=out, show_progress=False)), out


def test_real_sample_prepares_and_its_manifest_adds_up(real_sample_prepared):
    manifest, _ = real_sample_prepared
    assert manifest["rows"] == {"read": 69_822, "kept": 69_822, "dropped": {}}
    assert manifest["sessions"]["read"] == manifest["sessions"]["kept"] == 4_156
    assert sum(manifest["splits"][s]["sessions"] for s in SPLITS) == 4_156
    assert sum(manifest["splits"][s]["rows"] for s in SPLITS) == 69_822
    assert manifest["vocab"]["tracks_seen_all_splits"] == 26_684
    assert manifest["track_features"]["missing"] == manifest["vocab"]["tracks"]  # the sample ships no tf file


def test_copy_last_skip_scores_053_on_the_real_sample_under_the_challenge_protocol(real_sample_prepared):
    from models.metrics import mean_average_accuracy

    _, out = real_sample_prepared
    dataset = open_prepared(out)
    parts = [dataset.numpy_split(split, "challenge") for split in SPLITS]
    batch = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    assert len(batch["length"]) == 4_156
    last_skip = batch["in_skip_2"][np.arange(len(batch["n_in"])), batch["n_in"] - 1]
    prediction = np.repeat(last_skip[:, None], batch["out_skip_2"].shape[1], axis=1)
    maa = mean_average_accuracy(prediction, batch["out_skip_2"], batch["out_mask"])
    assert maa == pytest.approx(0.53, abs=0.01)


def test_only_the_shards_the_write_tasks_reported_are_kept_and_named_in_order(tmp_path):
    from data_pipeline.prepare import _name_shards

    train = tmp_path / "sessions" / "train"
    train.mkdir(parents=True)
    reported = [train / "000001-000000000000-aaaa.parquet", train / "000000-000000000000-bbbb.parquet"]
    for path in reported + [train / "000000-000000000000-cccc.parquet"]:  # the last: a retried attempt's
        path.write_text(path.name)
    assert _name_shards(tmp_path / "sessions", [str(p) for p in reported]) == {"train": 2, "val": 0, "test": 0}
    assert sorted(p.name for p in train.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert (train / "part-00000.parquet").read_text() == "000000-000000000000-bbbb.parquet"
