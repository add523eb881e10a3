"""`tuning.search` with `--data` and `--storage` as URIs (pyarrow.fs), on a real local Ray instance.

No cloud here: ``file://`` URIs go through the same ``pyarrow.fs.FileSystem.from_uri`` path as
``s3://`` / ``gs://`` (Tune's storage too). The driver's local copy of a URI experiment goes to
``./experiments/<name>``, so each test runs from its own temporary folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuning.results import load_experiment
from tuning.search import main

TINY = ["--fix", "hidden_size=16", "--fix", "embedding_dim=16"]


def uri(path) -> str:
    return path.resolve().as_uri()


def test_bad_uris_fail_at_once_with_one_line(tmp_path, synthetic_prepared, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    nowhere = uri(tmp_path / "nowhere")
    assert main(["--task", "skip", "--model", "lstm", "--data", nowhere, "--storage", uri(tmp_path / "bucket")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{nowhere}: not a complete prepared dataset (missing manifest.json" in err

    data = uri(synthetic_prepared)
    assert main(["--task", "skip", "--model", "ddpg", "--data", data, "--storage", uri(tmp_path / "bucket")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"--model ddpg reads the prepared data only from a local or shared path, not from --data {data}" in err

    assert main(["--task", "skip", "--resume", "--storage", uri(tmp_path / "bucket")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tuning.search: error: --resume: no experiment of task 'skip' under {uri(tmp_path / 'bucket')}; name one with --name"
    assert not (tmp_path / "bucket").exists() and not (tmp_path / "experiments").exists()


def test_a_search_with_data_and_storage_at_uris_keeps_trials_at_the_uri_and_writes_the_report_locally(
    tmp_path, synthetic_prepared, ray_session, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    bucket = tmp_path / "bucket"
    args = ["--task", "skip", "--model", "lstm", "--data", uri(synthetic_prepared), "--storage", uri(bucket),
            "--name", "remote", "--trials-per-family", "1", "--no-paper-configs", "--max-epochs", "1", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    local = tmp_path / "experiments" / "remote"
    assert f"local copy and report: {local}" in out

    # at the storage URI: what --resume reads, Tune's trial with its result and checkpoint, the report copied up
    remote = bucket / "remote"
    meta = json.loads((remote / "search.json").read_text())
    assert meta["options"]["storage"] == uri(bucket) and meta["data_dir"] == uri(synthetic_prepared)
    (trial_dir,) = [p for p in remote.iterdir() if p.name.startswith("lstm_")]
    assert len((trial_dir / "result.json").read_text().splitlines()) == 1
    assert list(trial_dir.glob("checkpoint_*/trainer/checkpoint.pt"))
    for name in ("baselines.json", "leaderboard.md", "leaderboard.csv", "test_results/lstm.json", "optuna.db",
                 "report.html", "best/lstm/trainer.json"):
        assert (remote / name).is_file(), name

    # the local copy: every trial's results (no checkpoints) and the report, as printed
    leaderboard = (local / "leaderboard.md").read_text()
    assert leaderboard.split("\n## ")[0].rstrip() in out  # its main table, printed at the end
    assert "| lstm |" in leaderboard and "baseline: all_skip" in leaderboard
    (trial,) = load_experiment(local).trials
    assert trial.status == "finished" and not list(Path(trial.path).glob("checkpoint_*"))
    assert (local / "best" / "lstm" / "checkpoint.pt").is_file()  # the winner, copied down from the URI
    test_result = json.loads((local / "test_results" / "lstm.json").read_text())
    assert 0.0 < test_result["test"]["maa"] <= 1.0
    assert (remote / "leaderboard.md").read_text() == leaderboard

    # another machine (no local copy) resumes from the URI alone: a bare --resume finds the experiment there
    shutil.rmtree(tmp_path / "experiments")
    assert main(["--task", "skip", "--resume", "--storage", uri(bucket)]) == 0
    out = capsys.readouterr().out
    assert "resuming " in out and "search done: 1 trials" in out
    assert "| lstm |" in (local / "leaderboard.md").read_text()
    assert len(load_experiment(local).trials) == 1

    # tuning.report on the URI copies the experiment down and writes the report there
    from tuning.report import main as report_main

    assert report_main([uri(remote), "--local-dir", str(tmp_path / "copy")]) == 0
    assert "| lstm |" in (tmp_path / "copy" / "leaderboard.md").read_text()
    assert report_main([uri(tmp_path / "no-such-experiment")]) == 2
    assert "no such experiment folder" in capsys.readouterr().err


def test_a_trial_on_data_at_a_uri_caches_word2vec_node_locally_and_its_checkpoint_restores_from_the_uri(
    tmp_path, synthetic_prepared, monkeypatch
):
    from data_pipeline.dataset import open_prepared
    from models.checkpoint import DATA_FILES
    from tuning.families import make_trainer
    from tuning.trainer import Trainer

    monkeypatch.setenv("MSSD_CACHE_DIR", str(tmp_path / "node-cache"))
    data = uri(synthetic_prepared)
    shared_cache = synthetic_prepared / "cache"
    before = set(shared_cache.glob("*")) if shared_cache.exists() else set()
    config = {"lr": 3e-3, "hidden_size": 16, "embedding_dim": 16, "batch_size": 128, "w2v_epochs": 1}
    trainer = make_trainer("skip", "lstm_w2v", config, data, protocol="challenge", device="cpu", input_path="memory")
    fingerprint = open_prepared(synthetic_prepared).fingerprint
    assert list((tmp_path / "node-cache" / fingerprint).glob("word2vec-*.npy"))
    assert (set(shared_cache.glob("*")) if shared_cache.exists() else set()) == before  # nothing beside the data
    trainer.train_epoch()

    saved = trainer.save(tmp_path / "checkpoint")
    for name in DATA_FILES:
        assert (saved / name).read_bytes() == (synthetic_prepared / name).read_bytes(), name
    assert json.loads((saved / "trainer.json").read_text())["data_dir"] == data
    restored = Trainer.restore(saved, device="cpu")
    assert restored.data_dir == data and restored.epoch == 1
    assert restored.evaluate("val")["maa"] == pytest.approx(trainer.evaluate("val")["maa"])
