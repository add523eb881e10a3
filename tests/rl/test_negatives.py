"""The negative sampler: never the positive, exactly `ratio` per positive, the chosen weighting."""

import numpy as np
import pytest

from data_pipeline.schema import FIRST_TRACK_ID
from rl.negatives import NegativeSampler


def test_negatives_never_include_the_positive_and_keep_the_ratio():
    counts = np.array([0, 0, 0, 0, 5, 1, 1, 1000, 3])
    sampler = NegativeSampler(counts, ratio=99, mode="popularity", seed=0)
    positives = np.array([7, 4, 8, 7, 5] * 40)  # 7 is by far the most popular: clashes are frequent
    negatives = sampler.sample(positives)
    assert negatives.shape == (200, 99)
    assert not (negatives == positives[:, None]).any()
    assert negatives.min() >= FIRST_TRACK_ID and negatives.max() < len(counts)


def test_popularity_sampling_follows_play_counts_and_uniform_does_not():
    counts = np.array([0, 0, 0, 0, 900, 90, 9])
    positives = np.full(2000, 6)
    popular = np.bincount(NegativeSampler(counts, 10, "popularity", seed=1).sample(positives).ravel(), minlength=7)
    uniform = np.bincount(NegativeSampler(counts, 10, "uniform", seed=1).sample(positives).ravel(), minlength=7)
    assert popular[4] / popular[5] == pytest.approx(901 / 91, rel=0.1)  # weights are count + 1
    assert uniform[4] / uniform[5] == pytest.approx(1.0, rel=0.1)
    assert popular[:4].sum() == uniform[:4].sum() == 0  # reserved ids are never drawn


def test_sampler_rejects_unknown_mode_and_bad_ratio():
    with pytest.raises(ValueError, match="popularity, uniform"):
        NegativeSampler(np.ones(10), mode="zipf")
    with pytest.raises(ValueError, match="at least 1"):
        NegativeSampler(np.ones(10), ratio=0)
