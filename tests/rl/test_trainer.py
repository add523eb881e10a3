"""RLTrainer: the Trainer interface for DDPG (train_epoch, evaluate, save/restore, predict) on a tiny dataset."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.dataset import HALF_LENGTH, open_prepared
from data_pipeline.schema import FIRST_TRACK_ID

TINY = {"hidden_size": 16, "embedding_size": 8, "batch_size": 32, "learning_starts": 40, "num_envs": 8,
        "sessions_per_epoch": 40, "training_intensity": 1.0, "negative_ratio": 9, "buffer_size": 2000}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_prepared, tmp_path_factory, ray_session):
    from tuning.families import make_trainer

    trainer = make_trainer("skip", "ddpg", TINY, tiny_prepared, device="cpu",
                           cache_dir=tmp_path_factory.mktemp("rl_cache"))
    result = trainer.train_epoch()
    yield trainer, result
    trainer.algo.stop()


def test_train_epoch_replays_sessions_per_epoch_sessions_and_reports_the_trainer_keys(trained):
    trainer, result = trained
    assert result["epoch"] == 1 == trainer.epoch
    assert result["sessions"] >= TINY["sessions_per_epoch"]
    assert np.isfinite(result["train_loss"]) and np.isfinite(result["policy_loss"])
    assert result["sessions_per_s"] > 0 and result["env_steps_per_s"] > 0 and result["updates_per_s"] > 0
    # every replayed session is a whole output half of 10 steps
    assert result["env_steps_per_s"] * result["seconds"] >= HALF_LENGTH * result["sessions"] - 1e-6
    assert trainer.num_parameters > 0


def test_evaluate_gives_the_supervised_metrics_on_every_val_session(trained):
    trainer, _ = trained
    metrics = trainer.evaluate("val")
    assert set(metrics) >= {"maa", "first_accuracy", "accuracy_at", "correct_histogram", "loss", "sessions"}
    assert metrics["sessions"] == 60 and sum(metrics["correct_histogram"]) == 60
    assert len(metrics["accuracy_at"]) == HALF_LENGTH and 0.0 <= metrics["maa"] <= 1.0
    assert -1.0 <= metrics["loss"] <= 1.0  # minus the mean dense reward per step


def test_skip_predictions_are_the_listen_score_below_the_fitted_threshold(trained):
    trainer, _ = trained
    data = trainer.split("val")
    run = trainer.rollout(data, trainer.skip_threshold)
    mask = data["out_mask"]
    np.testing.assert_array_equal(run["pred"][mask], (run["scores"][mask] <= trainer.skip_threshold).astype(int))
    # the first position's score is the actor's action on the first observation
    from rl.env import Replay

    replay = Replay(data, "skip", "dense", trainer.table)
    replay.start(np.arange(len(data["length"])))
    np.testing.assert_allclose(run["scores"][:, 0], trainer.actions(replay.observation())[:, 0], rtol=1e-6)


def test_checkpoint_round_trip_restores_the_same_actions_epoch_threshold_and_metrics(trained, tmp_path):
    from rl.trainer import RLTrainer

    trainer, _ = trained
    expected = trainer.evaluate("val")
    trainer.save(tmp_path / "ckpt")
    restored = RLTrainer.restore(tmp_path / "ckpt")  # "saved": the tiny dataset is still there, so it can train on
    try:
        obs = np.random.default_rng(0).normal(size=(5, restored.observation_size)).astype(np.float32)
        np.testing.assert_allclose(restored.actions(obs), trainer.actions(obs), rtol=1e-6)
        # the Learner's module has the trained weights too, not only the prediction actor
        np.testing.assert_allclose(
            restored.algo.get_module().forward_inference({"obs": __import__("torch").from_numpy(obs)})["actions"].numpy(),
            trainer.actions(obs), rtol=1e-5, atol=1e-6)
        assert restored.epoch == 1 and restored.skip_threshold == trainer.skip_threshold
        assert restored.evaluate("val")["maa"] == expected["maa"]
        assert restored.train_epoch()["epoch"] == 2
    finally:
        restored.algo.stop()


def test_a_checkpoint_predicts_without_the_dataset_and_without_importing_ray(trained, tmp_path):
    trainer, _ = trained
    trainer.evaluate("val")
    checkpoint = trainer.save(tmp_path / "ckpt")
    data = trainer.split("val")
    np.savez(tmp_path / "val.npz", **{k: v for k, v in data.items() if v.dtype != object})  # not session ids
    expected = trainer.predict_batches([data])["pred"]
    script = f"""
import json, sys
import numpy as np
from rl.trainer import RLTrainer
trainer = RLTrainer.restore({str(checkpoint)!r}, data_dir=None, device="cpu")
batch = dict(np.load({str(tmp_path / 'val.npz')!r}))
run = trainer.predict_batches([batch])
np.save({str(tmp_path / 'pred.npy')!r}, run["pred"])
print(json.dumps({{"ray": sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")),
                  "dataset": trainer.dataset is None, "algo": trainer.algo is None}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"ray": [], "dataset": True, "algo": True}
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), expected)


def test_seq_top_ranks_the_whole_vocabulary_by_the_actions_cosine(tiny_prepared, trained):
    from rl.trainer import RLTrainer

    trainer, _ = trained
    seq = RLTrainer(task="seq", config=TINY, data_dir=tiny_prepared, device="cpu",
                    cache_dir=open_prepared(tiny_prepared).cache_dir)
    try:
        seq.train_epoch()
        data = seq.split("val")
        run = seq.predict_batches([data])
        vocab = seq.dataset.vocab_size
        assert run["pred"].shape == (60, HALF_LENGTH) and run["top"].shape == (60, HALF_LENGTH, 10)
        assert run["top"].min() >= FIRST_TRACK_ID and run["top"].max() < vocab
        assert all(len(set(row)) == 10 for row in run["top"].reshape(-1, 10))  # ten distinct tracks
        # position 0: free-running and teacher-forced states agree, so top-1 is the prediction
        np.testing.assert_array_equal(run["top"][:, 0, 0], run["pred"][:, 0])
        # ... and the ranking is the action's dot product with the choice table, best first
        from rl.env import Replay

        replay = Replay(data, "seq", "dense", seq.table)
        replay.start(np.arange(60))
        scores = seq.actions(replay.observation()) @ seq.table.choice[FIRST_TRACK_ID:].T
        best = np.argsort(-scores, axis=1)[:, :10] + FIRST_TRACK_ID
        np.testing.assert_array_equal(run["top"][:, 0], best)
        metrics = seq.evaluate("val")
        assert {"recall_at_10", "ndcg_at_10", "mrr_at_10"} <= set(metrics) and 0.0 <= metrics["recall_at_10"] <= 1.0
    finally:
        seq.algo.stop()


def test_unknown_config_keys_are_rejected_with_the_known_ones(tiny_prepared):
    from rl.trainer import RLTrainer

    with pytest.raises(ValueError, match="unknown DDPG config key.*steps_per_iteration.*known keys: actor_lr"):
        RLTrainer(task="skip", config={"steps_per_iteration": 40}, data_dir=tiny_prepared)
