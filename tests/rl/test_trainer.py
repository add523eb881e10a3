"""RLTrainer: the Trainer interface for DDPG (train_epoch, evaluate, save/restore) on a tiny dataset."""

import numpy as np
import pytest

from data_pipeline.dataset import HALF_LENGTH

TINY = {"hidden_size": 16, "embedding_size": 8, "batch_size": 16, "learning_starts": 20, "steps_per_iteration": 40,
        "iterations_per_epoch": 1, "env_steps_per_update": 10, "negative_ratio": 9, "buffer_size": 1000}


@pytest.fixture(scope="module")
def trained(tiny_prepared, tmp_path_factory, ray_session):
    from tuning.families import make_trainer

    trainer = make_trainer("skip", "ddpg", TINY, tiny_prepared, cache_dir=tmp_path_factory.mktemp("rl_cache"))
    result = trainer.train_epoch()
    return trainer, result


def test_train_epoch_runs_rllib_iterations_and_reports_the_trainer_keys(trained):
    trainer, result = trained
    assert result["epoch"] == 1 == trainer.epoch
    assert result["sessions"] >= 4  # 40 env steps = 4 sessions of 10 output tracks
    assert np.isfinite(result["train_loss"]) and result["sessions_per_s"] > 0
    assert result["env_steps_per_s"] > 0 and result["updates_per_s"] > 0
    assert trainer.num_parameters > 0


def test_evaluate_gives_the_supervised_metrics_on_every_val_session(trained, tiny_prepared):
    trainer, _ = trained
    metrics = trainer.evaluate("val")
    assert set(metrics) >= {"maa", "first_accuracy", "accuracy_at", "correct_histogram", "loss", "sessions"}
    assert metrics["sessions"] == 60 and sum(metrics["correct_histogram"]) == 60
    assert len(metrics["accuracy_at"]) == HALF_LENGTH and 0.0 <= metrics["maa"] <= 1.0
    assert -1.0 <= metrics["loss"] <= 1.0  # minus the mean reward per step


def test_seq_evaluation_predicts_real_tracks_over_the_whole_vocabulary(trained, tiny_prepared, tmp_path):
    from rl.trainer import RLTrainer

    trainer, _ = trained
    seq = RLTrainer(task="seq", config=TINY, data_dir=tiny_prepared, cache_dir=trainer.table_path.parent)
    data = seq.split("val")
    preds, _, _ = seq.rollout(data, threshold=0.0)
    assert preds.shape == (60, HALF_LENGTH) and preds.min() >= 4 and preds.max() < seq.dataset.vocab_size
    seq.algo.stop()


def test_checkpoint_restores_the_same_actions_epoch_and_threshold(trained, tmp_path):
    from rl.trainer import RLTrainer

    trainer, _ = trained
    trainer.evaluate("val")
    trainer.save(tmp_path / "ckpt")
    restored = RLTrainer.restore(tmp_path / "ckpt")
    obs = np.random.default_rng(0).normal(size=(5, restored.module.state_encoder[0].in_features)).astype(np.float32)
    np.testing.assert_allclose(restored.actions(obs), trainer.actions(obs), rtol=1e-6)
    assert restored.epoch == 1 and restored.skip_threshold == trainer.skip_threshold
    assert restored.evaluate("val")["maa"] == trainer.evaluate("val")["maa"]
    restored.algo.stop()


def test_unknown_config_keys_are_rejected_with_the_known_ones(tiny_prepared):
    from rl.trainer import RLTrainer

    with pytest.raises(ValueError, match="unknown DDPG config key.*lr.*known keys: actor_lr"):
        RLTrainer(task="skip", config={"lr": 0.1}, data_dir=tiny_prepared)
