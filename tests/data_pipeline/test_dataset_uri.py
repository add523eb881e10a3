"""A prepared dataset opened by URI (pyarrow.fs) reads exactly what the local path reads.

No cloud here: ``file://`` URIs go through the same ``pyarrow.fs.FileSystem.from_uri`` path
as ``s3://`` and ``gs://`` ones (LocalFileSystem instead of S3FileSystem / GcsFileSystem).
"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_pipeline.dataset import PreparedDataset, local_cache_root, open_prepared
from data_pipeline.schema import SchemaError


def as_uri(path) -> str:
    return path.resolve().as_uri()  # file:///...


def assert_same_batch(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    order_a, order_b = np.argsort(a["session_id"]), np.argsort(b["session_id"])
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key][order_a], b[key][order_b]), key


def test_a_file_uri_opens_the_same_manifest_vocab_features_and_categories_as_the_path(synthetic_prepared):
    local, remote = open_prepared(synthetic_prepared), open_prepared(as_uri(synthetic_prepared))
    assert remote.is_uri and not local.is_uri
    assert remote.root == as_uri(synthetic_prepared)  # kept as a string, not folded by Path
    assert remote.manifest == local.manifest and remote.fingerprint == local.fingerprint
    assert remote.categories == local.categories
    assert remote.vocab.equals(local.vocab)
    assert np.array_equal(remote.track_features, local.track_features)
    assert remote.track_features.dtype == np.float32


def test_split_files_of_a_uri_are_uris_that_pyarrow_opens_in_the_same_order(synthetic_prepared):
    local, remote = open_prepared(synthetic_prepared), open_prepared(as_uri(synthetic_prepared))
    for split in ("train", "val", "test"):
        uris, paths = remote.split_files(split), local.split_files(split)
        assert len(uris) == len(paths) > 0
        assert [u.rsplit("/", 1)[1] for u in uris] == [p.rsplit("/", 1)[1] for p in paths]
        assert all(u.startswith("file:///") for u in uris)
        # what the trainer and the pre-training do with them
        assert pq.ParquetFile(uris[0]).metadata.num_rows == pq.ParquetFile(paths[0]).metadata.num_rows


@pytest.mark.parametrize("protocol", ["paper", "challenge"])
def test_in_memory_split_through_a_uri_equals_the_local_one(synthetic_prepared, protocol):
    local, remote = open_prepared(synthetic_prepared), open_prepared(as_uri(synthetic_prepared))
    for split in ("train", "val"):
        assert_same_batch(remote.numpy_split(split, protocol), local.numpy_split(split, protocol))


def test_ray_data_path_through_a_uri_equals_the_local_in_memory_path(synthetic_prepared, ray_session):
    local, remote = open_prepared(synthetic_prepared), open_prepared(as_uri(synthetic_prepared))
    stream = remote.ray_dataset("val", "challenge")
    batches = list(stream.iter_batches(batch_size=None, batch_format="numpy"))
    ray_path = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    assert_same_batch(ray_path, local.numpy_split("val", "challenge"))


def test_a_uri_dataset_caches_pretrained_embeddings_in_a_node_local_folder(synthetic_prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("MSSD_CACHE_DIR", str(tmp_path / "cache"))
    remote = open_prepared(as_uri(synthetic_prepared))
    assert local_cache_root() == tmp_path / "cache"
    assert remote.cache_dir == tmp_path / "cache" / remote.fingerprint
    assert open_prepared(synthetic_prepared).cache_dir == synthetic_prepared / "cache"


def test_an_incomplete_dataset_at_a_uri_names_the_missing_files_and_the_fix(synthetic_prepared, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_prepared, broken)
    (broken / "vocab.parquet").unlink()
    shutil.rmtree(broken / "sessions" / "test")
    uri = as_uri(broken)
    with pytest.raises(SchemaError) as error:
        PreparedDataset(uri)
    message = str(error.value)
    assert message.startswith(f"{uri}: not a complete prepared dataset (missing ")
    assert "vocab.parquet" in message and "sessions/test" in message
    assert f"python -m data_pipeline.prepare --raw RAW_DIR --out {uri}" in message


def test_a_uri_pyarrow_cannot_resolve_fails_with_the_uri_in_the_message():
    with pytest.raises(SchemaError, match=r"^nosuchscheme://bucket/prepared: cannot open this URI"):
        open_prepared("nosuchscheme://bucket/prepared")


def test_prepare_refuses_uris_at_once_with_one_line_naming_the_copy_command(tmp_path, capsys):
    from data_pipeline.prepare import main as prepare_main

    assert prepare_main(["--raw", str(tmp_path), "--out", "s3://bucket/prepared", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: --out s3://bucket/prepared: prepare writes to a local or shared path; copy the result with ")
    assert "aws s3 sync DIR s3://bucket/prepared" in err

    assert prepare_main(["--raw", "gs://bucket/raw", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: --raw gs://bucket/raw: prepare reads from a local or shared path; copy the raw files down")
    assert not (tmp_path / "out").exists()
