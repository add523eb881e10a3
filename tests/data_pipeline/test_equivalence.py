"""The prepared dataset does not depend on how the raw rows are laid out, nor on the implementation.

- Digests of whole prepared datasets (every session, slot, vocabulary entry,
  feature and category) on the real sample and on the conftest's synthetic
  set, recorded once with the per-session implementation that came before the
  vectorised one: the two give the same data, byte for byte, with the same
  fingerprints.
- The same rows cut into other files (sessions split across files, gzip and
  parquet mixed) or other chunks give the same dataset.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from data_pipeline import readers
from data_pipeline.prepare import PrepareOptions, prepare
from data_pipeline.schema import SEQUENCE_COLUMN_NAMES, SPLITS, from_shard_table
from data_pipeline.sessions import COUNTS_COLUMN, KEPT, read_counts, sessionize_file, sessionize_files
from data_pipeline.splits import SplitRule
from tests.data_pipeline.prepared_digest import prepared_digest

# Recorded with the implementation before the vectorised one (commit 7ee6b22).
SAMPLE_DEFAULT = {
    "fingerprint": "2874b71e66cdafb9ab0e15a6f316a33d",
    "train": "3286:090b000e55c3adc02e0042c6", "val": "432:2765d5b4ea382345c0fa55ff",
    "test": "438:f38934d69b919a0794d13211", "vocab": "22721:e271411779362a19dc0fa987",
    "track_features": "2fb5d3bcf0d5252c69e75fae", "categories": "d256b5a53d701287de76c028",
}
SAMPLE_BY_DATE_TOP_1000 = {
    "fingerprint": "c7c9fbd974e63389423c2a6020650f52",
    "train": "2660:6552015e82bf3e3b9e7d9446", "val": "318:4fc451a9898d849cf7f8f850",
    "test": "1178:ff8cbf5c04b505cfec40097f", "vocab": "1004:39f3b20fc51f944b30065605",
    "track_features": "cd588fe6d3d269317faf4540", "categories": "d256b5a53d701287de76c028",
}
SYNTHETIC_MIN_COUNT_1 = {
    "fingerprint": "39c3015e8142b5cf2412e04278ae0d55",
    "train": "2396:cfa25e7632f20c36424c1d85", "val": "297:3ea9e3b679570ee20a9ee042",
    "test": "307:037b53651341b57728a4b4a6", "vocab": "404:5dbbd9eabdf9c738259e730c",
    "track_features": "17c98c9c7d15cf42125a16ac", "categories": "d256b5a53d701287de76c028",
}
# Manifest entries that describe the layout (blocks, shards, file names), not the data.
LAYOUT_KEYS = {"fingerprint", "options", "inputs", "timing"}


def _digest_and_fingerprint(out: Path) -> dict:
    return {"fingerprint": json.loads((out / "manifest.json").read_text())["fingerprint"], **prepared_digest(out)}


@pytest.mark.parametrize("options, expected", [
    ({}, SAMPLE_DEFAULT),
    ({"test_dates": ["2018-07-14"], "top_k": 1000}, SAMPLE_BY_DATE_TOP_1000),
], ids=["defaults", "test-date-top-k"])
def test_the_real_sample_prepares_to_the_same_dataset_as_the_previous_implementation(
        mssd_sample_dir, tmp_path, ray_session, options, expected):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "log_sample.csv.gz").symlink_to(mssd_sample_dir / "log_sample.csv.gz")
    prepare(PrepareOptions(raw=raw, out=tmp_path / "out", show_progress=False, **options))
    assert _digest_and_fingerprint(tmp_path / "out") == expected


def test_the_synthetic_set_prepares_to_the_same_dataset_as_the_previous_implementation(synthetic_prepared):
    assert _digest_and_fingerprint(synthetic_prepared) == SYNTHETIC_MIN_COUNT_1


def _all_rows(raw: Path) -> pa.Table:
    return pa.concat_tables([pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(
        column_types={"session_id": pa.string(), "date": pa.string()})) for p in sorted(raw.glob("log_*.csv"))])


def _write_csv(table: pa.Table, path: Path) -> None:
    data = pa.BufferOutputStream()
    pacsv.write_csv(table, data)
    body = data.getvalue().to_pybytes()
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)


@pytest.fixture(scope="module")
def recut(synthetic_raw, tmp_path_factory) -> Path:
    """The synthetic rows in five files cut at arbitrary rows (sessions across files), csv, gzip and parquet."""
    rows = _all_rows(synthetic_raw)
    raw = tmp_path_factory.mktemp("recut")
    cuts = [0, 7, 9_001, 9_013, 30_333, rows.num_rows]
    names = ["log_a.csv", "log_b.csv.gz", "log_c.parquet", "log_d.csv", "log_e.csv"]
    for name, start, end in zip(names, cuts, cuts[1:]):
        part = rows.slice(start, end - start)
        if name.endswith(".parquet"):
            pq.write_table(part, raw / name)
        else:
            _write_csv(part, raw / name)
    shutil.copy(next(synthetic_raw.glob("tf_*.csv")), raw / "tf_000000000000.csv")
    return raw


@pytest.fixture(scope="module")
def recut_prepared(recut, tmp_path_factory, ray_session) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("recut_prepared")
    return prepare(PrepareOptions(raw=recut, out=out, min_count=1, show_progress=False)), out


def test_the_same_rows_cut_into_other_files_give_the_same_dataset(recut_prepared, synthetic_prepared):
    manifest, out = recut_prepared
    assert prepared_digest(out) == prepared_digest(synthetic_prepared)
    original = json.loads((synthetic_prepared / "manifest.json").read_text())
    assert manifest["sessions"]["split_across_files"] == 4 == manifest["sessions"]["merged_from_fragments"]
    for key in set(original) - LAYOUT_KEYS:
        if key == "sessions":
            for name in ("read", "kept", "dropped", "dropped_examples", "reordered"):
                assert manifest["sessions"][name] == original["sessions"][name], name
        elif key == "splits":
            for split in SPLITS:
                assert {k: v for k, v in manifest["splits"][split].items() if k != "files"} == \
                    {k: v for k, v in original["splits"][split].items() if k != "files"}
        else:
            assert manifest[key] == original[key], key


def test_sessions_merged_across_files_have_zeros_past_their_end(recut_prepared):
    _, out = recut_prepared
    for split in SPLITS:
        for shard in sorted((out / "sessions" / split).glob("*.parquet")):
            table = from_shard_table(pq.read_table(shard))
            length = table.column("length").to_numpy()
            padding = np.arange(20)[None, :] >= length[:, None]
            for name in SEQUENCE_COLUMN_NAMES:
                values = table.column(name).combine_chunks().flatten().to_numpy().reshape(-1, 20)
                assert not values[padding].any(), (shard, name)


def _kept_records(blocks: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(blocks)
    table = table.filter(pa.array(table.column("status").to_numpy() == KEPT))
    return table.sort_by("session_id")


def test_a_file_read_in_small_chunks_gives_the_same_sessions_as_in_one_chunk(synthetic_raw):
    path = sorted(synthetic_raw.glob("log_*.csv"))[0]
    whole = list(sessionize_file(path, 0, SplitRule()))
    pieces = (t.slice(i, 613) for t in readers.iter_log_tables(path) for i in range(0, t.num_rows, 613))
    small = list(sessionize_file(path, 0, SplitRule(), tables=pieces, chunk_rows=997))
    assert len(whole) == 1 and len(small) > 20
    a, b = _kept_records(whole), _kept_records(small)
    assert a.num_rows == b.num_rows == 1500
    for name in ("session_id", "line", "hash", "split", "length", "rows"):
        assert a.column(name).equals(b.column(name)), name
    valid = (np.arange(20)[None, :] < a.column("length").to_numpy()[:, None]).reshape(-1)
    for name in SEQUENCE_COLUMN_NAMES:  # dictionary columns: codes differ by block, values must not
        decoded = [t.column(name).combine_chunks().flatten() for t in (a, b)]
        decoded = [d.dictionary_decode() if pa.types.is_dictionary(d.type) else d for d in decoded]
        assert decoded[0].filter(pa.array(valid)).equals(decoded[1].filter(pa.array(valid))), name


def test_a_files_plays_per_track_travel_with_its_last_block_and_match_its_kept_rows(synthetic_raw):
    path = sorted(synthetic_raw.glob("log_*.csv"))[0]
    blocks = list(sessionize_files(pa.table({"file": [0]}), [str(path)], SplitRule(), chunk_rows=5000))
    counts = [c for block in blocks for c in read_counts(block.column(COUNTS_COLUMN))]
    assert len(counts) == len(blocks) > 1
    assert all(c.plays is None for c in counts[:-1]) and counts[-1].plays is not None
    # the same plays, counted from the raw rows of the kept sessions
    records = pa.concat_tables([b.drop_columns([COUNTS_COLUMN]) for b in blocks])
    kept = records.filter(pa.array(records.column("status").to_numpy() == KEPT))
    split_of = pa.table({"session_id": kept.column("session_id"),
                         "split": pa.array(np.asarray(SPLITS)[kept.column("split").to_numpy()])})
    rows = pa.concat_tables(readers.iter_log_tables(path)).select(["session_id", "track_id_clean"])
    rows = rows.join(split_of, "session_id", join_type="inner")
    rows = rows.append_column("track_id", rows.column("track_id_clean").cast(pa.string()))
    expected = rows.group_by(["track_id", "split"]).aggregate([("session_id", "count")]).to_pylist()
    plays = counts[-1].plays.to_pylist()
    got = {(r["track_id"], split): r[split] for r in plays for split in SPLITS if r[split]}
    assert got == {(r["track_id"], r["split"]): r["session_id_count"] for r in expected}


@pytest.mark.parametrize("vocab_size, dictionary_size", [(50, 400), (400, 50)])
def test_vocabulary_lookup_gives_each_dictionary_entry_its_id_whichever_side_is_hashed(vocab_size, dictionary_size):
    from data_pipeline.encoding import _lookup

    rng = np.random.default_rng(vocab_size)
    universe = [f"t_{i:05d}" for i in range(1000)]
    vocab = list(rng.choice(universe, vocab_size, replace=False))
    dictionary = list(rng.choice(universe, dictionary_size, replace=True))  # tracks outside the vocabulary too
    dictionary += [vocab[0], vocab[0]]  # blocks joined by Ray Data repeat values across their dictionaries
    ids = {track: i + 4 for i, track in enumerate(vocab)}
    got = _lookup(pa.array(dictionary), pa.array(vocab), 4, 3)
    assert got.tolist() == [ids.get(track, 3) for track in dictionary]
    assert (got == 3).any() and (got != 3).any() and len(set(dictionary)) < len(dictionary)
