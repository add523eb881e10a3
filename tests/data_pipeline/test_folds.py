"""Cross-validation folds of the hash split (`prepare --fold k`): disjoint held-out slices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from data_pipeline.prepare import PrepareOptions
from data_pipeline.schema import SchemaError
from data_pipeline.splits import SplitRule, stable_hash


@pytest.fixture(scope="module")
def hashes() -> np.ndarray:
    return stable_hash([f"session_{i}" for i in range(20_000)])


def test_fold_zero_is_the_default_split(hashes):
    dates = pa.array(["2018-07-15"] * len(hashes))
    np.testing.assert_array_equal(SplitRule(fold=0).assign(hashes, dates), SplitRule().assign(hashes, dates))


def test_five_folds_test_every_session_exactly_once_and_keep_the_fractions(hashes):
    dates = pa.array(["2018-07-15"] * len(hashes))
    splits = np.stack([SplitRule(0.1, 0.2, fold=k).assign(hashes, dates) for k in range(5)])  # (5, N)
    np.testing.assert_array_equal((splits == 2).sum(0), np.ones(len(hashes)))  # tested once
    np.testing.assert_array_equal((splits == 1).sum(0) <= 1, np.ones(len(hashes), bool))  # val at most once
    for k in range(5):
        assert (splits[k] == 2).mean() == pytest.approx(0.2, abs=0.01)
        assert (splits[k] == 1).mean() == pytest.approx(0.1, abs=0.01)
        # a fold's val slice lies in the next fold's test slice
        assert (splits[(k + 1) % 5][splits[k] == 1] == 2).all()


def test_a_fold_past_the_last_disjoint_slice_is_refused_naming_the_range(tmp_path):
    options = PrepareOptions(raw=tmp_path, out=tmp_path / "out", val_fraction=0.1, test_fraction=0.2, fold=5)
    with pytest.raises(SchemaError, match="--fold 5: folds run from 0 to 4"):
        options.validate()
    with pytest.raises(SchemaError, match="--fold 10: folds run from 0 to 9"):
        PrepareOptions(raw=tmp_path, out=tmp_path / "out", fold=10).validate()
    with pytest.raises(SchemaError, match="--fold -1"):
        PrepareOptions(raw=tmp_path, out=tmp_path / "out", fold=-1).validate()
    PrepareOptions(raw=tmp_path, out=tmp_path / "out", fold=9).validate()
