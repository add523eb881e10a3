"""The report of a search, built from an experiment described in memory (real runs: test_search.py).

An `Experiment` holds what ``tuning.results`` reads back from Tune and the search's
files; building one by hand lets these tests set up winners, failures and baselines
exactly.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tuning.config_io import load_config_file
from tuning.report import leaderboard, leaderboard_markdown, main, paper_rows, report_html, verdicts, write_best_configs, write_csv
from tuning.results import Experiment, Trial


def _trial(model, number, values, status="finished", point=None, lr=1e-3, error=None):
    epochs = [{"epoch": e, "val_maa": v, "val_loss": 1 - v, "train_loss": 1.1 - v, "num_parameters": 1234,
               "time_total_s": 2.0 * e} for e, v in enumerate(values, 1)]
    return Trial(f"{model}{number:04d}", model, number, point, {"lr": lr, "hidden_size": 16}, epochs, status,
                 error=error)


def _metrics(maa):
    return {"maa": maa, "first_accuracy": maa + 0.1, "accuracy_at": [maa] * 10, "correct_histogram": [1] * 11}


def make_experiment(tmp_path: Path, task="skip") -> Experiment:
    trials = [
        _trial("lstm", 0, [0.50, 0.58, 0.56], point="start"),  # best epoch is 2, not the last
        _trial("lstm", 1, [0.30], "stopped early", point="paper", lr=1e-5),
        _trial("lstm", 2, [0.40, 0.45, 0.47]),
        _trial("transformer", 0, [0.52, 0.53, 0.54], point="start"),
        _trial("transformer", 1, [0.31], "stopped early", point="paper", lr=1e-5),
        _trial("transformer", 2, [], "error", error="RuntimeError: out of memory"),
    ]
    meta = {"options": {"task": task, "max_epochs": 3, "protocol": "paper", "trials_per_family": 2,
                        "paper_configs": True, "searcher": "optuna", "scheduler": "asha", "budget": "small"},
            "families": ["lstm", "transformer"], "planned_trials": {"lstm": 3, "transformer": 3}, "data_dir": "/data"}
    baselines = [
        {"name": "session_majority", "val": _metrics(0.55), "test": _metrics(0.545), "seconds": 0.1},
        {"name": "copy_last_skip", "val": _metrics(0.52), "test": _metrics(0.53), "seconds": 0.1},
    ]
    tests = {
        "lstm": {"trial_id": "lstm0000", "epoch": 2, "test": _metrics(0.57)},
        "transformer": {"trial_id": "transformer0000", "epoch": 3, "test": _metrics(0.54)},
    }
    paper = {"lstm": {"trial_id": "lstm0001", "epoch": 1, "test": _metrics(0.31)}}
    return Experiment(tmp_path, meta, trials, baselines, tests, paper)


def test_each_family_is_ranked_by_its_winners_val_maa_with_the_baselines():
    rows = leaderboard(make_experiment(Path("exp")))
    assert [r["model"] for r in rows] == [
        "lstm", "baseline: session_majority", "transformer", "baseline: copy_last_skip"]
    lstm = rows[0]
    assert (lstm["val_maa"], lstm["test_maa"], lstm["best_epoch"]) == (0.58, 0.57, 2)
    assert lstm["vs_best_baseline"] == pytest.approx(0.57 - 0.545)  # session_majority: the best baseline on val


def test_a_family_with_a_failed_trial_is_flagged_and_the_verdicts_say_who_is_below_the_best_baseline():
    rows = leaderboard(make_experiment(Path("exp")))
    transformer = next(r for r in rows if r["model"] == "transformer")
    assert (transformer["finished"], transformer["planned"], transformer["failed"]) == (2, 3, 1)
    assert "1 trial(s) failed" in transformer["flag"]
    said = " ".join(verdicts(rows))
    assert "Above the strongest simple baseline (session_majority, test MAA 0.5450): lstm (+0.0250)" in said
    assert "Below session_majority (test MAA 0.5450): transformer (-0.0050)" in said  # above copy_last_skip (0.53)
    assert "transformer: 1 trial(s) failed" in said


def test_the_paper_configuration_of_each_family_has_its_own_rows():
    rows = paper_rows(make_experiment(Path("exp")))
    assert [(r["model"], r["val_maa"], r["test_maa"]) for r in rows] == [
        ("lstm (paper config)", 0.30, 0.31), ("transformer (paper config)", 0.31, None)]


def test_markdown_csv_and_best_configs(tmp_path):
    exp = make_experiment(tmp_path)
    rows = leaderboard(exp)
    text = leaderboard_markdown(exp, rows)
    assert "| 1 | lstm | 0.5800 | 0.5700 | +0.0250 |" in text
    assert "| lstm (paper config) | 0.3000 | 0.3100 | stopped early |" in text
    assert "transformer #2 | error: RuntimeError: out of memory" in text
    write_csv(rows, tmp_path / "leaderboard.csv")
    table = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert table[0]["model"] == "lstm" and float(table[0]["test_accuracy_at_1"]) == 0.57
    write_best_configs(exp, rows, tmp_path / "best_configs")
    config, task, model = load_config_file(tmp_path / "best_configs" / "lstm.json")
    assert (config, task, model) == ({"lr": 1e-3, "hidden_size": 16}, "skip", "lstm")


def test_seq_leaderboards_carry_the_ranking_metrics(tmp_path):
    exp = make_experiment(tmp_path, task="seq")
    exp.tests["lstm"]["test"].update(recall_at_10=0.4, ndcg_at_10=0.3, mrr_at_10=0.25)
    text = leaderboard_markdown(exp, leaderboard(exp))
    assert "test Recall@10 | test NDCG@10 | test MRR@10" in text
    assert "| 0.4000 | 0.3000 | 0.2500 |" in text


def test_the_page_holds_the_leaderboard_and_a_learning_curve_per_family(tmp_path):
    exp = make_experiment(tmp_path)
    page = report_html(exp, leaderboard(exp), storage_url=None, running="running: 4/6 trials done")
    assert '<table id="leaderboard">' in page and '<meta http-equiv="refresh"' in page
    assert page.count('class="plot"') == 2  # one learning-curve figure per family (no study: no Optuna plots)
    assert "Optuna study is not reachable" in page
    finished = report_html(exp, leaderboard(exp), storage_url=None, running=None)
    assert "http-equiv" not in finished and "Search finished" in finished


def test_the_cli_rejects_a_missing_experiment_with_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such experiment directory" in err and "\n" not in err


def test_a_family_below_several_baselines_is_said_to_be_below_each():
    exp = make_experiment(Path("exp"))
    exp.tests["transformer"]["test"]["maa"] = 0.50  # below session_majority (0.545) and copy_last_skip (0.53)
    said = " ".join(verdicts(leaderboard(exp)))
    assert "transformer (-0.0450; also below copy_last_skip)" in said
