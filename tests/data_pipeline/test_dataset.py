"""The loader: protocols cut sessions into the right halves; the Ray path equals the in-memory path."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.dataset import HALF_LENGTH, iter_numpy_batches, open_prepared, split_halves
from data_pipeline.schema import MAX_SESSION_LENGTH, SEQUENCE_COLUMN_NAMES, UNK_ID


def _hand_batch() -> dict[str, np.ndarray]:
    """Three sessions of lengths 20, 11 and 10; track at position p of session s is 100*s + p."""
    lengths = np.array([20, 11, 10])
    batch = {name: np.zeros((3, MAX_SESSION_LENGTH), np.int64) for name in SEQUENCE_COLUMN_NAMES}
    for s, length in enumerate(lengths):
        batch["tracks"][s, :length] = 100 * (s + 1) + np.arange(1, length + 1)
        batch["skip_2"][s, :length] = np.arange(length) % 2
    batch["length"] = lengths
    batch["session_id"] = np.array(["a", "b", "c"])
    return batch


def test_challenge_protocol_second_half_is_positions_past_half_the_length():
    out = split_halves(_hand_batch(), "challenge")
    assert out["n_in"].tolist() == [10, 5, 5]
    assert out["n_out"].tolist() == [10, 6, 5]  # T = ceil(L / 2)
    assert out["in_mask"].sum(1).tolist() == [10, 5, 5]
    assert out["out_mask"].sum(1).tolist() == [10, 6, 5]
    assert out["in_tracks"][1].tolist() == [201, 202, 203, 204, 205, 0, 0, 0, 0, 0]
    assert out["out_tracks"][1].tolist() == [206, 207, 208, 209, 210, 211, 0, 0, 0, 0]
    assert out["out_tracks"][2].tolist() == [306, 307, 308, 309, 310, 0, 0, 0, 0, 0]
    assert out["out_skip_2"][1].tolist() == [1, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    assert out["session_id"].tolist() == ["a", "b", "c"]


def test_paper_protocol_keeps_full_20_track_sessions_without_unk():
    batch = _hand_batch()
    batch["tracks"] = np.vstack([batch["tracks"], batch["tracks"][:1]])
    batch["tracks"][3, 15] = UNK_ID
    for key in batch:
        if key not in ("tracks",):
            batch[key] = np.concatenate([batch[key], batch[key][:1]])
    out = split_halves(batch, "paper")
    assert out["session_id"].tolist() == ["a"]
    assert out["in_tracks"][0].tolist() == list(range(101, 111))
    assert out["out_tracks"][0].tolist() == list(range(111, 121))
    assert out["in_mask"].all() and out["out_mask"].all()


def test_unknown_protocol_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="paper, challenge"):
        split_halves(_hand_batch(), "weekly")


def test_protocols_on_prepared_data_give_right_lengths_and_masks(synthetic_prepared):
    dataset = open_prepared(synthetic_prepared)
    paper = dataset.numpy_split("train", "paper")
    challenge = dataset.numpy_split("train", "challenge")
    assert len(challenge["length"]) == dataset.num_sessions("train")
    expected_paper = (challenge["length"] == 20) & ~((challenge["in_tracks"] == UNK_ID).any(1) | (challenge["out_tracks"] == UNK_ID).any(1))
    assert len(paper["length"]) == int(expected_paper.sum()) > 0
    assert (paper["n_in"] == HALF_LENGTH).all() and paper["in_mask"].all() and paper["out_mask"].all()
    length = challenge["length"]
    assert (challenge["n_out"] == (length + 1) // 2).all() and (challenge["n_in"] == length // 2).all()
    assert (challenge["out_mask"].sum(1) == challenge["n_out"]).all()
    for name in SEQUENCE_COLUMN_NAMES:
        assert not challenge[f"in_{name}"][~challenge["in_mask"]].any()
        assert not challenge[f"out_{name}"][~challenge["out_mask"]].any()
    assert (challenge["in_tracks"][challenge["in_mask"]] > UNK_ID).all()
    assert challenge["in_tracks"].dtype == np.int64 and challenge["in_mask"].dtype == bool


@pytest.mark.parametrize("protocol", ["paper", "challenge"])
def test_ray_path_equals_in_memory_path(synthetic_prepared, ray_session, protocol):
    dataset = open_prepared(synthetic_prepared)
    memory = dataset.numpy_split("val", protocol)
    batches = list(dataset.ray_dataset("val", protocol).iter_batches(batch_size=None, batch_format="numpy"))
    ray_path = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    assert set(ray_path) == set(memory)
    a, b = np.argsort(memory["session_id"]), np.argsort(ray_path["session_id"])
    for key in memory:
        assert np.array_equal(memory[key][a], ray_path[key][b]), key
        assert memory[key].dtype == ray_path[key].dtype, key


def test_compact_ray_path_holds_the_same_values_in_the_stored_narrow_types(synthetic_prepared, ray_session):
    dataset = open_prepared(synthetic_prepared)
    memory = dataset.numpy_split("val", "challenge")
    batches = list(dataset.ray_dataset("val", "challenge", compact=True).iter_batches(batch_size=None, batch_format="numpy"))
    compact = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    a, b = np.argsort(memory["session_id"]), np.argsort(compact["session_id"])
    for key in memory:
        assert np.array_equal(memory[key][a], compact[key][b]), key
    assert compact["in_tracks"].dtype == np.int32 and compact["out_skip_2"].dtype == np.int8
    assert compact["in_mask"].dtype == bool and compact["length"].dtype == np.int64


def test_ray_dataset_streams_in_batches_without_materialising(synthetic_prepared, ray_session):
    import ray.data
    from ray.data.dataset import MaterializedDataset

    dataset = open_prepared(synthetic_prepared)
    stream = dataset.ray_dataset("train", "challenge")
    assert isinstance(stream, ray.data.Dataset) and not isinstance(stream, MaterializedDataset)
    sizes = []
    for batch in stream.iter_batches(batch_size=256, batch_format="numpy"):
        assert batch["in_tracks"].shape[1:] == (HALF_LENGTH,)
        sizes.append(len(batch["length"]))
    assert sum(sizes) == dataset.num_sessions("train") and max(sizes) == 256


def test_iter_numpy_batches_shuffles_reproducibly_and_covers_every_row(synthetic_prepared):
    data = open_prepared(synthetic_prepared).numpy_split("val", "challenge")
    first = [b["session_id"] for b in iter_numpy_batches(data, 64, shuffle=True, seed=3)]
    again = [b["session_id"] for b in iter_numpy_batches(data, 64, shuffle=True, seed=3)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert sorted(np.concatenate(first)) == sorted(data["session_id"])
    assert not np.array_equal(np.concatenate(first), data["session_id"])
