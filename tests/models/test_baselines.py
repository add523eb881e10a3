"""Each baseline's predictions and MAA on small hand-made sessions."""

import numpy as np
import pytest

from data_pipeline.dataset import split_halves
from data_pipeline.schema import MAX_SESSION_LENGTH, SEQUENCE_COLUMN_NAMES, UNK_ID
from models.baselines import BASELINES, get_baseline
from models.metrics import mean_average_accuracy


def make_batch(sessions, protocol="challenge"):
    """Task batch from (tracks, skips) pairs of equal-length lists."""
    n = len(sessions)
    columns = {name: np.zeros((n, MAX_SESSION_LENGTH), np.int64) for name in SEQUENCE_COLUMN_NAMES}
    length = np.zeros(n, np.int64)
    for row, (tracks, skips) in enumerate(sessions):
        length[row] = len(tracks)
        columns["tracks"][row, : len(tracks)] = tracks
        columns["skip_2"][row, : len(skips)] = skips
    return split_halves({"length": length, "session_id": np.arange(n).astype(str), **columns}, protocol)


def skips_session(skips, first_track=4):
    return (list(range(first_track, first_track + len(skips))), skips)


def test_constant_skip_baselines_predict_ones_and_zeros():
    batch = make_batch([skips_session([0] * 10 + [1, 1, 0, 1, 1, 0, 0, 0, 0, 0])])
    assert get_baseline("skip", "all_skip").fit(batch).predict(batch).tolist() == [[1] * 10]
    assert get_baseline("skip", "no_skip").fit(batch).predict(batch).tolist() == [[0] * 10]


def test_copy_last_skip_repeats_the_last_input_flag_under_the_challenge_protocol():
    # L = 15: 7 in (last one skipped), 8 out
    batch = make_batch([skips_session([0, 0, 0, 0, 0, 0, 1] + [1, 1, 0, 1, 1, 1, 1, 1])])
    pred = get_baseline("skip", "copy_last_skip").fit(batch).predict(batch)
    assert pred.tolist() == [[1] * 10]
    # out: 1 1 0 1 1 1 1 1 -> (1 + 1 + 0 + 3/4 + 4/5 + 5/6 + 6/7 + 7/8) / 8
    expected = (1 + 1 + 3 / 4 + 4 / 5 + 5 / 6 + 6 / 7 + 7 / 8) / 8
    assert mean_average_accuracy(pred, batch["out_skip_2"], batch["out_mask"]) == pytest.approx(expected)


def test_session_majority_takes_the_input_majority_and_breaks_ties_with_the_training_majority():
    train = make_batch([skips_session([0] * 10 + [1] * 7 + [0] * 3)])  # outputs mostly skipped
    batch = make_batch(
        [
            skips_session([1] * 6 + [0] * 4 + [0] * 10),  # majority skipped
            skips_session([1] * 3 + [0] * 7 + [0] * 10),  # majority kept
            skips_session([1] * 5 + [0] * 5 + [0] * 10),  # tie
        ]
    )
    pred = get_baseline("skip", "session_majority").fit(train).predict(batch)
    assert pred[:, 0].tolist() == [1, 0, 1]
    kept_train = make_batch([skips_session([0] * 10 + [0] * 7 + [1] * 3)])
    assert get_baseline("skip", "session_majority").fit(kept_train).predict(batch)[:, 0].tolist() == [1, 0, 0]


TRAIN_SEQ = [
    ([4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [0] * 10),
    ([4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [0] * 10),
    ([20, 5, 21, 22, 4, 4, 4, 4, 4, 4], [0] * 10),
]


def test_most_popular_repeats_the_most_played_training_track():
    train = make_batch(TRAIN_SEQ)
    model = get_baseline("seq", "most_popular").fit(train)
    assert model.track == 4  # 2 + 6 plays
    assert model.predict(make_batch([TRAIN_SEQ[0]])).tolist() == [[4] * 10]


def test_markov_chains_the_most_frequent_successor_and_falls_back_to_most_popular():
    train = make_batch(TRAIN_SEQ)
    model = get_baseline("seq", "markov").fit(train)
    # 5 -> 6 twice, 5 -> 21 once; 4 -> 5 twice, 4 -> 4 five times
    assert model.successor[5] == 6
    assert model.successor[4] == 4
    # chain from 8: 9 10 11 12 13, 13 has no successor -> 4 -> 4 ...
    query = make_batch([([30, 31, 32, 33, 8, 50, 51, 52, 53, 54], [0] * 10)])
    assert model.predict(query).tolist() == [[9, 10, 11, 12, 13, 4, 4, 4, 4, 4]]
    # an unseen or unknown last track starts from the most popular one
    unknown = make_batch([([30, 31, 32, 33, UNK_ID, 50, 51, 52, 53, 54], [0] * 10)])
    assert model.predict(unknown)[0, :5].tolist() == [4, 4, 4, 4, 4]


def test_markov_breaks_ties_towards_the_smaller_more_popular_id():
    train = make_batch([([7, 9, 10, 7, 8, 40, 41, 42, 43, 44], [0] * 10)])
    model = get_baseline("seq", "markov").fit(train)
    assert model.successor[7] == 8  # 7 -> 9 once, 7 -> 8 once


def test_session_knn_votes_for_what_follows_the_neighbours_last_shared_track():
    train_sessions = [
        ([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23], [0] * 20),
        ([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39], [0] * 20),
        ([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39], [0] * 20),
        ([60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79], [0] * 20),
    ]
    train = make_batch(train_sessions, protocol="paper")
    model = get_baseline("seq", "session_knn").fit(train)
    query = make_batch([train_sessions[0]], protocol="paper")
    # two neighbours continue with 30..39, one with 14..23: the pair wins every position
    assert model.predict(query).tolist() == [list(range(30, 40))]
    # a neighbour sharing the query's 7th input track votes for its 8th track onwards
    partial = make_batch([([90, 91, 92, 93, 94, 95, 62, 96, 97, 98] + [0] * 10, [0] * 20)], protocol="paper")
    assert model.predict(partial).tolist() == [list(range(63, 73))]
    # no shared track: most popular everywhere
    strangers = make_batch([([90 + i for i in range(10)] + [0] * 10, [0] * 20)], protocol="paper")
    assert model.predict(strangers).tolist() == [[model.popular] * 10]


def test_random_never_predicts_reserved_ids_and_covers_the_vocabulary():
    train = make_batch(TRAIN_SEQ)
    model = get_baseline("seq", "random").fit(train, vocab_size=50)
    pred = model.predict(make_batch([TRAIN_SEQ[0]] * 200))
    assert pred.min() >= 4 and pred.max() <= 49
    assert len(np.unique(pred)) == 46


def test_every_baseline_returns_int64_of_the_output_shape():
    batch = make_batch(TRAIN_SEQ + [skips_session([0, 1] * 8)])
    for task, family in BASELINES.items():
        for name in family:
            pred = get_baseline(task, name).fit(batch).predict(batch)
            assert pred.shape == batch["out_mask"].shape and pred.dtype == np.int64, (task, name)


def test_unknown_baseline_names_the_known_ones():
    with pytest.raises(ValueError, match="copy_last_skip"):
        get_baseline("skip", "oracle")


def test_markov_ranks_the_successors_of_the_true_previous_track_most_frequent_first():
    # 4 -> 5 twice, 4 -> 6 once; 5 -> 7; 6 -> 8
    train = make_batch([([4, 5, 7, 9, 10, 11, 12, 13, 14, 15], [0] * 10), ([4, 5, 7, 9, 10, 11, 12, 13, 14, 15], [0] * 10),
                        ([4, 6, 8, 9, 10, 11, 12, 13, 14, 15], [0] * 10)])
    markov = get_baseline("seq", "markov").fit(train, vocab_size=20)
    # input half ends on 4; the true output starts 6, 8: position 2 ranks 6's successors
    batch = make_batch([([20, 21, 22, 23, 4, 6, 8, 30, 31, 32], [0] * 10)])
    top = markov.rank(batch, 3)
    assert top.shape == (1, 10, 3)
    assert top[0, 0, :2].tolist() == [5, 6]  # 4 -> 5 (twice) before 4 -> 6 (once)
    assert top[0, 1, 0] == 8  # after the true 6 comes 8, whatever was predicted at position 1
    assert markov.predict(batch)[0, 0] == top[0, 0, 0]


def test_session_knn_and_most_popular_rank_their_point_prediction_first():
    train = make_batch([(list(range(4, 24)), [0] * 20), (list(range(4, 14)) + list(range(30, 40)), [0] * 20)], "paper")
    batch = make_batch([(list(range(4, 14)) + list(range(24, 34)), [0] * 20)], "paper")
    for name in ("session_knn", "most_popular"):
        baseline = get_baseline("seq", name).fit(train, vocab_size=50)
        top = baseline.rank(batch, 10)
        assert top.shape == (1, 10, 10)
        np.testing.assert_array_equal(top[..., 0], baseline.predict(batch))
    top = get_baseline("seq", "session_knn").fit(train, vocab_size=50).rank(batch, 10)
    assert set(top[0, 0, :2].tolist()) == {14, 30}  # both neighbours vote for what follows their last shared track
