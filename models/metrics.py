"""The evaluation metrics of the paper and the WSDM Cup 2019, on numpy arrays.

Every function takes per-position arrays of shape [B, T] (T = 10 here): the
predictions, the truth, and a boolean mask that is True where a position is to
be predicted. Positions where the mask is False never count: a session's
positions are its unmasked ones, in order.

Mean average accuracy (MAA), per session:

    AA = (1/T) * sum_i A(i) * L(i)

where T is the number of unmasked positions, L(i) is 1 when the i-th of them is
predicted right, and A(i) is the accuracy over the first i of them. MAA is the
mean of AA over the sessions with T > 0. Worked example: truth 11111 with one
error at position 1/2/3/4/5 gives AA 0.543/0.643/0.710/0.760/0.800 (an error at
position 1 costs most: every later A(i) counts it).

Ranking metrics for the ``seq`` task (``ranking_metrics``), the convention of
RecBole and Transformers4Rec: at each second-half position the model ranks
the whole vocabulary for the next track, given the first half and the true
tracks before that position; Recall@K is the share of positions whose true
track is in the top K, NDCG@K averages 1 / log2(1 + rank) over them (0 beyond
K), MRR@K averages 1 / rank (0 beyond K). Averaged over every real position.
"""

from __future__ import annotations

import numpy as np

HISTOGRAM_BINS = 11  # 0..10 correct predictions in a session
RANK_CUTOFF = 10  # K of Recall@K, NDCG@K, MRR@K


def _check_shapes(**arrays: np.ndarray) -> None:
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        detail = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"metrics expect arrays of one shape [B, T]; got {detail}")


def average_accuracy(correct: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-session average accuracy AA, float64 [B]; NaN for a session with no unmasked position."""
    correct = np.asarray(correct, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    _check_shapes(correct=correct, mask=mask)
    hit = (correct & mask).astype(np.float64)  # (B, T)
    rank = np.cumsum(mask, axis=1)  # i: how many unmasked positions up to here
    accuracy_so_far = np.cumsum(hit, axis=1) / np.maximum(rank, 1)  # A(i)
    count = mask.sum(axis=1)  # T per session
    total = (accuracy_so_far * hit).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def mean_average_accuracy(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """MAA over the sessions that have at least one unmasked position (0.0 when none has)."""
    pred, truth, mask = np.asarray(pred), np.asarray(truth), np.asarray(mask, dtype=bool)
    _check_shapes(pred=pred, truth=truth, mask=mask)
    aa = average_accuracy(pred == truth, mask)
    aa = aa[~np.isnan(aa)]
    return float(aa.mean()) if len(aa) else 0.0


def ranking_metrics(top: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """Recall@K, NDCG@K and MRR@K over the unmasked positions; `top` [B, T, K] holds each
    position's K best-ranked ids, best first (K = ``top.shape[2]``)."""
    top, truth, mask = np.asarray(top), np.asarray(truth), np.asarray(mask, dtype=bool)
    _check_shapes(truth=truth, mask=mask, top=top[..., 0])
    k = top.shape[2]
    hit = top == truth[..., None]  # (B, T, K): at most one True per position (ids are distinct)
    found = hit.any(axis=2) & mask
    rank = np.argmax(hit, axis=2) + 1  # 1-based rank where found
    count = int(mask.sum())
    if count == 0:
        return {f"recall_at_{k}": 0.0, f"ndcg_at_{k}": 0.0, f"mrr_at_{k}": 0.0}
    return {
        f"recall_at_{k}": float(found.sum() / count),
        f"ndcg_at_{k}": float(np.where(found, 1.0 / np.log2(1.0 + rank), 0.0).sum() / count),
        f"mrr_at_{k}": float(np.where(found, 1.0 / rank, 0.0).sum() / count),
    }


def evaluate_predictions(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, loss: float | None = None, top: np.ndarray | None = None
) -> dict:
    """Every metric of the paper for one set of predictions, as plain Python values.

    Returns ``maa``, ``first_accuracy`` (accuracy at the first unmasked position),
    ``accuracy_at`` (list of T: accuracy at position t over the sessions that have
    it; NaN where no session has it), ``correct_histogram`` (list of 11: number
    of sessions with k correct predictions, k = 0..10), ``sessions`` (sessions
    with at least one unmasked position), ``loss`` when one is given, and the
    ranking metrics of `top` (see `ranking_metrics`) when it is given.
    """
    pred, truth, mask = np.asarray(pred), np.asarray(truth), np.asarray(mask, dtype=bool)
    _check_shapes(pred=pred, truth=truth, mask=mask)
    correct = (pred == truth) & mask
    aa = average_accuracy(correct, mask)
    scored = ~np.isnan(aa)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy_at = correct.sum(axis=0) / mask.sum(axis=0)
    first = np.argmax(mask, axis=1)  # index of the first unmasked position
    first_correct = correct[np.arange(len(correct)), first][scored]
    n_correct = correct.sum(axis=1)[scored]
    histogram = np.bincount(np.minimum(n_correct, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
    result = {
        "maa": float(aa[scored].mean()) if scored.any() else 0.0,
        "first_accuracy": float(first_correct.mean()) if scored.any() else 0.0,
        "accuracy_at": [float(a) for a in accuracy_at],
        "correct_histogram": [int(c) for c in histogram],
        "sessions": int(scored.sum()),
    }
    if loss is not None:
        result["loss"] = float(loss)
    if top is not None:
        result.update(ranking_metrics(top, truth, mask))
    return result


def gather_predictions(parts: list[dict]) -> dict:
    """Join per-batch predictions (pred, truth, mask, loss_sum, weight[, top]) into one run with the mean loss.

    What every trainer's ``predict_batches`` returns: pred, truth, mask
    ([N, T] each), loss (the weighted mean) and top ([N, T, K]) when every
    part has it.
    """
    if not parts:
        empty = np.zeros((0, 10), np.int64)
        return {"pred": empty, "truth": empty, "mask": empty.astype(bool), "loss": float("nan")}
    weight = sum(p["weight"] for p in parts)
    run = {
        "pred": np.concatenate([p["pred"] for p in parts]),
        "truth": np.concatenate([p["truth"] for p in parts]),
        "mask": np.concatenate([p["mask"] for p in parts]),
        "loss": sum(p["loss_sum"] for p in parts) / max(weight, 1),
    }
    if all("top" in p for p in parts):
        run["top"] = np.concatenate([p["top"] for p in parts])
    return run
