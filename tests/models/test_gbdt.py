"""The gradient-boosted peer: features from the first half only, it learns, and its checkpoint round-trips."""

import numpy as np
import pytest

from data_pipeline.dataset import open_prepared
from models.gbdt import GBDTTrainer, feature_names, session_features
from tuning.evaluate import evaluate_baseline
from tuning.families import make_trainer, restore_trainer


@pytest.fixture(scope="module")
def trained(synthetic_prepared):
    trainer = make_trainer("skip", "gbdt", {"trees_per_epoch": 40, "num_leaves": 7}, synthetic_prepared,
                           protocol="challenge")
    trainer.train_epoch()
    return trainer


def test_features_never_read_a_second_half_label(synthetic_prepared):
    dataset = open_prepared(synthetic_prepared)
    batch = dataset.numpy_split("val", "challenge")
    X, index = session_features(batch, dataset.track_features)
    assert X.shape == (int(batch["out_mask"].sum()), len(feature_names(dataset.track_features.shape[1])))
    flipped = dict(batch)
    for name in [k for k in batch if k.startswith("out_") and k not in ("out_mask", "out_tracks")]:
        flipped[name] = np.where(batch["out_mask"], 1 - np.clip(batch[name], 0, 1), batch[name])
    X2, index2 = session_features(flipped, dataset.track_features)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(index, index2)


def test_gbdt_beats_the_simple_skip_baselines_on_val(trained, synthetic_prepared):
    val = trained.evaluate("val")
    for baseline in ("copy_last_skip", "session_majority"):
        assert val["maa"] > evaluate_baseline("skip", baseline, synthetic_prepared, "val", "challenge")["maa"] + 0.01


def test_each_epoch_adds_trees_and_the_checkpoint_holds_no_pickle(trained, tmp_path):
    before = trained.booster.num_trees()
    trained.train_epoch()
    assert trained.booster.num_trees() == before + 40 and trained.epoch == 2
    saved = trained.save(tmp_path / "gbdt")
    assert (saved / "model.txt").read_text().startswith("tree")  # LightGBM's text format
    restored = restore_trainer(saved, data_dir=None)
    assert isinstance(restored, GBDTTrainer) and restored.epoch == 2
    batch = trained.dataset.numpy_split("test", "challenge")
    np.testing.assert_array_equal(restored.predict_batches([batch])["pred"], trained.predict_batches([batch])["pred"])


def test_gbdt_is_a_skip_only_family():
    with pytest.raises(ValueError, match="model 'gbdt' does not support task 'seq'"):
        make_trainer("seq", "gbdt", {}, None)
