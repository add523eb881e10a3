"""tuning.report on experiment directories laid out as Tune and tuning.search write them.

The directories are written by hand here (the layout of a real run is covered by
test_search.py) so that interrupted and odd states can be built exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tuning.config_io import load_config_file
from tuning.report import generate, leaderboard, load_experiment, main


def _trial(exp: Path, trial_id: str, lr: float, val_maa: list[float], status: str, failures: int = 0, torn: bool = False):
    trial_dir = exp / f"lstm_{trial_id}"
    trial_dir.mkdir(parents=True)
    config = {"task": "skip", "model": "lstm", "lstm": {"lr": lr, "batch_size": 64}, "fixed": {"lstm": {"hidden_size": 16}}}
    (trial_dir / "params.json").write_text(json.dumps(config))
    lines = [
        json.dumps({"epoch": e, "val_maa": v, "val_loss": 1.0 - v, "train_loss": 1.1 - v, "num_parameters": 1234,
                    "time_total_s": 2.0 * e, "trial_id": trial_id, "timestamp": 100 + e})
        for e, v in enumerate(val_maa, 1)
    ]
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"epoch": 9, "val_m'  # a driver killed mid-write
    (trial_dir / "result.json").write_text(text)
    return (json.dumps({"trial_id": trial_id, "status": status}), json.dumps({"num_failures": failures}))


def make_experiment(tmp_path: Path) -> Path:
    exp = tmp_path / "skip-lstm"
    exp.mkdir()
    (exp / "search.json").write_text(json.dumps({"options": {"task": "skip", "max_epochs": 3, "protocol": "paper"}}))
    states = [
        _trial(exp, "aaaa0001", 1e-3, [0.50, 0.58, 0.56], "TERMINATED"),  # best epoch is 2, not the last
        _trial(exp, "aaaa0002", 1e-7, [0.30], "TERMINATED"),  # stopped by ASHA
        _trial(exp, "aaaa0003", 1e-4, [0.40, 0.45], "RUNNING", failures=1, torn=True),  # interrupted
    ]
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": states}))
    baseline = {"maa": 0.55, "first_accuracy": 0.7, "accuracy_at": [0.7] * 10, "correct_histogram": [1] * 11}
    (exp / "baselines.json").write_text(json.dumps([{"name": "copy_last_skip", "val": baseline, "test": baseline, "seconds": 0.1}]))
    return exp


def test_trial_statuses_are_read_from_tune_state_and_epoch_counts(tmp_path):
    experiment = load_experiment(make_experiment(tmp_path))
    status = {t.trial_id: t.status for t in experiment.trials}
    assert status == {"aaaa0001": "finished", "aaaa0002": "stopped early", "aaaa0003": "interrupted"}
    interrupted = next(t for t in experiment.trials if t.trial_id == "aaaa0003")
    assert [r["epoch"] for r in interrupted.epochs] == [1, 2]  # the torn last line is skipped
    assert interrupted.failures == 1
    assert interrupted.config == {"lr": 1e-4, "batch_size": 64, "hidden_size": 16}


def test_without_test_results_the_winner_is_the_best_epoch_on_val_and_models_rank_with_baselines(tmp_path):
    rows = leaderboard(load_experiment(make_experiment(tmp_path)))
    assert [r["model"] for r in rows] == ["lstm", "baseline: copy_last_skip"]
    lstm = rows[0]
    assert (lstm["trial_id"], lstm["best_epoch"], lstm["val_maa"]) == ("aaaa0001", 2, 0.58)
    assert (lstm["trials"], lstm["stopped_early"], lstm["failed"]) == (3, 1, 0)
    assert lstm["test_maa"] is None  # the interrupted experiment never reached its test evaluation


def test_test_results_decide_the_winner_and_fill_the_position_and_histogram_columns(tmp_path):
    exp = make_experiment(tmp_path)
    (exp / "test_results").mkdir()
    test = {"maa": 0.57, "first_accuracy": 0.75, "accuracy_at": [0.1 * i for i in range(10)], "correct_histogram": list(range(11)), "loss": 0.4}
    (exp / "test_results" / "lstm.json").write_text(json.dumps({"trial_id": "aaaa0001", "epoch": 2, "test": test}))
    paths = generate(exp)
    with paths["leaderboard_csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    lstm = next(r for r in rows if r["model"] == "lstm")
    assert float(lstm["test_maa"]) == 0.57
    assert float(lstm["test_accuracy_at_10"]) == 0.9
    assert int(lstm["test_correct_10"]) == 10
    markdown = paths["leaderboard_md"].read_text()
    assert "| 1 | lstm | 0.5800 | 0.5700 | 0.7500 | 2 / 3 |" in markdown
    assert "| lstm | 0.0 | 10.0 | 20.0 |" in markdown  # accuracy by position, in percent


def test_best_configs_are_readable_by_tuning_train(tmp_path):
    paths = generate(make_experiment(tmp_path))
    config, task, model = load_config_file(paths["best_configs"] / "lstm.json")
    assert (task, model) == ("skip", "lstm")
    assert config == {"lr": 1e-3, "batch_size": 64, "hidden_size": 16}


def test_learning_curves_are_drawn_per_model_and_for_every_trial(tmp_path):
    paths = generate(make_experiment(tmp_path))
    assert (paths["learning_curves"] / "lstm.png").read_bytes()[:4] == b"\x89PNG"
    assert paths["learning_curves_overview"].read_bytes()[:4] == b"\x89PNG"


def test_the_cli_regenerates_from_a_directory_and_rejects_a_missing_one(tmp_path, capsys):
    exp = make_experiment(tmp_path)
    assert main([str(exp)]) == 0
    assert "# Leaderboard: skip task" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert "no such experiment directory" in capsys.readouterr().err
