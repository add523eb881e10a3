"""The one-configuration trainer and the `python -m tuning.train` CLI on the tiny synthetic set."""

import json

import numpy as np
import pytest

from models.baselines import get_baseline
from models.metrics import evaluate_predictions
from tuning.train import main as train_main
from models.checkpoint import DATA_FILES
from tuning.batches import iter_split_batches
from tuning.evaluate import evaluate_baseline
from tuning.families import make_trainer
from tuning.trainer import Trainer

TINY_SKIP = {"lr": 3e-3, "hidden_size": 32, "embedding_dim": 32, "batch_size": 128}


@pytest.mark.parametrize("input_path", ["memory", "ray"])
def test_an_epoch_on_either_input_path_sees_every_training_session(synthetic_prepared, ray_session, input_path):
    trainer = make_trainer("skip", "lstm", TINY_SKIP, synthetic_prepared, protocol="challenge",
                           device="cpu", input_path=input_path)
    result = trainer.train_epoch()
    assert result["epoch"] == 1
    assert result["sessions"] == trainer.dataset.num_sessions("train")  # challenge keeps every session
    assert 0.0 < result["train_loss"] < 1.0  # binary cross-entropy starts near log 2
    assert result["sessions_per_s"] > 0
    assert trainer.history == [result]


def test_both_input_paths_give_the_same_first_epoch_when_the_shuffle_buffer_holds_the_split(synthetic_prepared, ray_session):
    # Ray's local shuffle and the in-memory path both draw one permutation from the seed, once the
    # Ray path streams its blocks in a fixed order (without preserve_order they arrive as reads finish)
    losses = []
    for input_path in ("memory", "ray"):
        trainer = make_trainer("skip", "lstm", {**TINY_SKIP, "preserve_order": True}, synthetic_prepared,
                               protocol="challenge",
                               device="cpu", input_path=input_path, seed=3)
        losses.append(trainer.train_epoch()["train_loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_restored_checkpoint_predicts_exactly_what_the_trainer_predicted(synthetic_prepared, tmp_path):
    trainer = make_trainer("seq", "lstm", {**TINY_SKIP, "lr": 1e-2}, synthetic_prepared, protocol="challenge",
                           device="cpu", input_path="memory")
    trainer.train_epoch()
    before = trainer.predict_batches(iter_split_batches(trainer.dataset, "val", "challenge", 256))
    trainer.save(tmp_path / "ckpt")

    for name in (*DATA_FILES, "checkpoint.pt", "trainer.json"):
        assert (tmp_path / "ckpt" / name).exists(), name
    state = json.loads((tmp_path / "ckpt" / "trainer.json").read_text())
    assert (state["task"], state["model"], state["epoch"]) == ("seq", "lstm", 1)
    assert state["data_fingerprint"] == trainer.dataset.fingerprint

    restored = Trainer.restore(tmp_path / "ckpt", device="cpu")
    after = restored.predict_batches(iter_split_batches(trainer.dataset, "val", "challenge", 256))
    np.testing.assert_array_equal(before["pred"], after["pred"])
    assert after["loss"] == pytest.approx(before["loss"])
    assert restored.epoch == 1 and restored.history == trainer.history
    assert restored.config_dict() == trainer.config_dict()

    # training goes on from the restored optimizer state
    assert restored.train_epoch()["epoch"] == 2
    # without the data directory the checkpoint still predicts (what tuning.predict does)
    alone = Trainer.restore(tmp_path / "ckpt", data_dir=None, device="cpu")
    assert alone.dataset is None
    again = alone.predict_batches(iter_split_batches(trainer.dataset, "val", "challenge", 256))
    np.testing.assert_array_equal(before["pred"], again["pred"])


def test_the_wide_term_is_fitted_on_the_train_split_once_before_the_first_epochs_first_step(synthetic_prepared, monkeypatch):
    from models.heads import OutputHead

    trainer = make_trainer("skip", "lstm", {**TINY_SKIP, "use_context": True}, synthetic_prepared, protocol="challenge",
                           device="cpu", input_path="memory")
    fitted, fit_wide = [], OutputHead.fit_wide

    def recording(head, batches, **kwargs):
        batches = list(batches)
        fitted.append((trainer.optimizer.state == {}, sum(len(b["length"]) for b in batches)))
        fit_wide(head, iter(batches), **kwargs)

    monkeypatch.setattr(OutputHead, "fit_wide", recording)
    trainer.train_epoch()
    trainer.train_epoch()
    assert fitted == [(True, trainer.dataset.num_sessions("train"))]  # once, before Adam's first step, every session


def test_evaluate_reports_every_metric_over_the_whole_split(synthetic_prepared):
    trainer = make_trainer("skip", "lstm", TINY_SKIP, synthetic_prepared, protocol="challenge",
                           device="cpu", input_path="memory")
    result = trainer.evaluate("val")
    assert result["sessions"] == trainer.dataset.num_sessions("val")
    assert set(result) == {"maa", "first_accuracy", "accuracy_at", "correct_histogram", "loss", "sessions"}
    assert len(result["accuracy_at"]) == 10 and sum(result["correct_histogram"]) == result["sessions"]


def test_evaluate_baseline_scores_the_fitted_baseline_on_the_split(synthetic_prepared):
    from data_pipeline.dataset import open_prepared

    dataset = open_prepared(synthetic_prepared)
    val = dataset.numpy_split("val", "paper")
    pred = get_baseline("skip", "copy_last_skip").fit(dataset.numpy_split("train", "paper")).predict(val)
    expected = evaluate_predictions(pred, val["out_skip_2"], val["out_mask"])
    assert evaluate_baseline("skip", "copy_last_skip", synthetic_prepared, "val", "paper") == expected


def test_unknown_config_keys_are_rejected_with_the_known_fields(synthetic_prepared):
    with pytest.raises(ValueError, match="d_model.*hidden_size"):
        make_trainer("skip", "lstm", {"d_model": 64}, synthetic_prepared, device="cpu", input_path="memory")


def test_train_cli_writes_metrics_and_a_checkpoint(synthetic_prepared, tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "best.json"  # the search's best_configs format
    config.write_text(json.dumps({"task": "skip", "model": "lstm", "config": {"hidden_size": 32, "embedding_dim": 32}}))
    code = train_main(["--data", str(synthetic_prepared), "--config", str(config), "--set", "lr=3e-3",
                       "--set", "batch_size=128", "--epochs", "2", "--device", "cpu", "--protocol", "challenge",
                       "--input-path", "memory", "--test", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["task"], metrics["model"], metrics["protocol"]) == ("skip", "lstm", "challenge")
    assert metrics["config"]["lr"] == 3e-3 and metrics["config"]["hidden_size"] == 32
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["final"]["val"] == metrics["epochs"][-1]["val"]
    assert 0.0 <= metrics["final"]["test"]["maa"] <= 1.0
    assert set(metrics["baselines"]) == {"all_skip", "no_skip", "session_majority", "copy_last_skip"}
    assert (out / "checkpoint" / "checkpoint.pt").exists()
    assert "| baseline copy_last_skip |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "skip", "--model", "nosuchmodel"], "unknown model 'nosuchmodel'"),
        (["--task", "skip", "--model", "lstm", "--data", "/nonexistent/prepared"], "/nonexistent/prepared"),
        (["--task", "skip", "--model", "lstm", "--set", "lr"], "expected key=value"),
    ],
)
def test_train_cli_fails_with_one_line_and_status_2(argv, message, capsys):
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_small_train_split_is_cached_in_the_object_store_once_and_reshuffled_per_epoch(synthetic_prepared, ray_session):
    cached = make_trainer("skip", "lstm", TINY_SKIP, synthetic_prepared, protocol="challenge", device="cpu",
                          input_path="ray", seed=3)
    first = [b["length"].clone() for b in cached.input.epoch(0)]
    assert cached.input.cached  # "auto": a 2.4K-session split fits
    split = cached.input._split()
    second = [b["length"].clone() for b in cached.input.epoch(1)]
    assert cached.input._split() is split  # read and split once
    assert sum(len(b) for b in second) == sum(len(b) for b in first) == cached.dataset.num_sessions("train")
    assert not all(len(a) == len(b) and bool((a == b).all()) for a, b in zip(first, second))  # a new order

    streamed = make_trainer("skip", "lstm", {**TINY_SKIP, "cache_train": "never"}, synthetic_prepared,
                            protocol="challenge", device="cpu", input_path="ray", seed=3)
    assert sum(len(b["length"]) for b in streamed.input.epoch(0)) == streamed.dataset.num_sessions("train")
    assert not streamed.input.cached  # streamed, not cached
    with pytest.raises(ValueError, match="cache_train = 'sometimes'"):
        make_trainer("skip", "lstm", {**TINY_SKIP, "cache_train": "sometimes"}, synthetic_prepared,
                     protocol="challenge", device="cpu", input_path="ray")


def test_train_cli_trains_a_family_with_its_own_training_loop_and_retrains_from_its_checkpoint(synthetic_prepared, tmp_path):
    first = tmp_path / "first"
    assert train_main(["--task", "skip", "--model", "gbdt", "--data", str(synthetic_prepared), "--epochs", "1",
                       "--set", "trees_per_epoch=10", "--protocol", "challenge", "--no-baselines", "--out", str(first)]) == 0
    again = tmp_path / "again"
    # a checkpoint folder is a config too (a search's best/<model>): its task, model and configuration
    assert train_main(["--config", str(first / "checkpoint"), "--data", str(synthetic_prepared), "--epochs", "1",
                       "--protocol", "challenge", "--no-baselines", "--out", str(again)]) == 0
    metrics = json.loads((again / "metrics.json").read_text())
    assert (metrics["model"], metrics["config"]["trees_per_epoch"]) == ("gbdt", 10)


def test_training_stops_with_one_line_the_moment_the_loss_is_not_finite(synthetic_prepared, tmp_path, capsys):
    import shutil

    import numpy as np

    from tuning.trainer import NonFiniteLoss

    damaged = tmp_path / "damaged"  # a prepared set whose track features were edited by hand: one infinite cell
    shutil.copytree(synthetic_prepared, damaged)
    features = np.load(damaged / "track_features.npy")
    features[4:, 0] = np.inf
    np.save(damaged / "track_features.npy", features)
    config = {**TINY_SKIP, "use_context": True}
    trainer = make_trainer("skip", "lstm", config, damaged, protocol="challenge", device="cpu", input_path="memory")
    with pytest.raises(NonFiniteLoss, match=r"lstm skip: the training loss became nan in epoch 1 after 0 sessions"):
        trainer.train_epoch()
    code = train_main(["--task", "skip", "--model", "lstm", "--data", str(damaged), "--set", "use_context=true",
                       "--set", "hidden_size=8", "--set", "embedding_dim=8", "--epochs", "1", "--input-path", "memory",
                       "--no-baselines", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "the training loss became nan" in err
