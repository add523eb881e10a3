"""MAA and the other metrics on hand-computed cases."""

import numpy as np
import pytest

from models.metrics import average_accuracy, evaluate_predictions, mean_average_accuracy


@pytest.mark.parametrize(
    "error_position, expected",
    [(0, 0.543), (1, 0.643), (2, 0.710), (3, 0.760), (4, 0.800)],
)
def test_one_error_in_five_gives_the_facts_worked_example(error_position, expected):
    truth = np.ones((1, 5), dtype=int)
    pred = truth.copy()
    pred[0, error_position] = 0
    mask = np.ones((1, 5), dtype=bool)
    assert mean_average_accuracy(pred, truth, mask) == pytest.approx(expected, abs=5e-4)


def test_all_right_scores_one_and_all_wrong_scores_zero():
    truth = np.array([[1, 0, 1, 1], [0, 0, 1, 0]])
    mask = np.ones_like(truth, dtype=bool)
    assert mean_average_accuracy(truth, truth, mask) == 1.0
    assert mean_average_accuracy(1 - truth, truth, mask) == 0.0


def test_masked_positions_never_count():
    truth = np.array([[1, 1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 1, 1]])  # wrong in padding must not matter
    mask = np.array([[True, True, True, False, False]])
    # valid: right, wrong, right -> (1/1*1 + 0 + 2/3*1) / 3
    assert mean_average_accuracy(pred, truth, mask) == pytest.approx((1 + 2 / 3) / 3)


def test_a_mask_with_a_hole_counts_only_unmasked_positions_in_order():
    correct = np.array([[True, True, False, True]])
    mask = np.array([[True, False, True, True]])
    # unmasked: right, wrong, right -> (1 + 0 + 2/3) / 3
    assert average_accuracy(correct, mask)[0] == pytest.approx((1 + 2 / 3) / 3)


def test_sessions_without_positions_are_excluded_from_the_mean():
    truth = np.array([[1, 1], [1, 1]])
    pred = np.array([[1, 1], [0, 0]])
    mask = np.array([[True, True], [False, False]])
    assert np.isnan(average_accuracy(pred == truth, mask)[1])
    assert mean_average_accuracy(pred, truth, mask) == 1.0
    assert evaluate_predictions(pred, truth, mask)["sessions"] == 1


def test_sessions_of_different_lengths_weigh_equally():
    # challenge protocol: T = 5 and T = 10 sessions; each session's AA counts once
    truth = np.zeros((2, 10), dtype=int)
    pred = np.zeros((2, 10), dtype=int)
    pred[1, :] = 1  # second session all wrong
    mask = np.zeros((2, 10), dtype=bool)
    mask[0, :5] = True
    mask[1, :] = True
    assert mean_average_accuracy(pred, truth, mask) == 0.5


def test_evaluate_predictions_reports_positions_histogram_and_first_accuracy():
    truth = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1]])
    pred = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1]])
    mask = np.array([[True, True, True], [True, True, True], [True, True, False]])
    result = evaluate_predictions(pred, truth, mask, loss=0.25)
    # AA: 1.0; (0 + 1/2 + 2/3)/3; (0 + 0)/2
    assert result["maa"] == pytest.approx((1.0 + (0.5 + 2 / 3) / 3 + 0.0) / 3)
    assert result["first_accuracy"] == pytest.approx(1 / 3)
    assert result["accuracy_at"] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert result["correct_histogram"] == [1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert result["sessions"] == 3
    assert result["loss"] == 0.25
    assert all(type(v) is float for v in result["accuracy_at"])


def test_histogram_counts_ten_correct_and_track_id_ties():
    # track predictions: identical ids at several positions are each judged on their own
    truth = np.tile(np.arange(4, 14), (2, 1))
    pred = truth.copy()
    pred[1, :] = 4  # repeats one track: right only at position 1
    mask = np.ones_like(truth, dtype=bool)
    result = evaluate_predictions(pred, truth, mask)
    assert result["correct_histogram"][10] == 1
    assert result["correct_histogram"][1] == 1
    assert result["maa"] == pytest.approx((1.0 + 0.1) / 2)
    assert "loss" not in result


def test_mismatched_shapes_are_rejected_with_the_shapes():
    with pytest.raises(ValueError, match=r"pred \(2, 3\)"):
        mean_average_accuracy(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 4), bool))


def test_ranking_metrics_by_hand():
    from models.metrics import ranking_metrics

    # one session, three real positions, K = 3: truth at rank 1, at rank 3, not in the top 3; one padded position
    truth = np.array([[7, 8, 9, 0]])
    mask = np.array([[True, True, True, False]])
    top = np.array([[[7, 1, 2], [5, 6, 8], [1, 2, 3], [0, 4, 5]]])
    got = ranking_metrics(top, truth, mask)
    assert got["recall_at_3"] == pytest.approx(2 / 3)
    assert got["ndcg_at_3"] == pytest.approx((1.0 + 1.0 / np.log2(4.0) + 0.0) / 3)  # (1 + 0.5) / 3
    assert got["mrr_at_3"] == pytest.approx((1.0 + 1.0 / 3.0) / 3)


def test_ranking_metrics_count_every_real_position_once_across_sessions():
    from models.metrics import ranking_metrics

    truth = np.array([[4, 4], [5, 0]])
    mask = np.array([[True, True], [True, False]])
    top = np.array([[[4, 5], [5, 4]], [[6, 7], [0, 1]]])  # ranks 1, 2 and a miss; the padded hit never counts
    got = ranking_metrics(top, truth, mask)
    assert got["recall_at_2"] == pytest.approx(2 / 3)
    assert got["mrr_at_2"] == pytest.approx((1 + 0.5) / 3)
    assert got["ndcg_at_2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_evaluate_predictions_adds_ranking_metrics_only_when_given_a_ranking():
    from models.metrics import evaluate_predictions

    truth = np.array([[4, 5]])
    mask = np.array([[True, True]])
    plain = evaluate_predictions(truth, truth, mask)
    assert "recall_at_10" not in plain
    ranked = evaluate_predictions(truth, truth, mask, top=np.tile(truth[..., None], (1, 1, 10)) * 0 + np.arange(10) + 4)
    assert ranked["recall_at_10"] == 1.0 and ranked["mrr_at_10"] == pytest.approx((1 + 0.5) / 2)
