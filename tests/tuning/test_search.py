"""`python -m tuning.search` end to end on a real local Ray instance with tiny data and tiny models.

Every search here runs real trials (tuning/trainable.py -> a family's trainer) of small models on
the `synthetic_prepared` fixture (3000 sessions, 400 tracks), in the test session's Ray instance
(2 CPUs), except the resume test, whose first driver is a separate process joined to that instance
so that it can be killed with SIGKILL. One two-family search (`two_families`) is shared by the
tests that read its output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tuning.config_io import load_config_file
from tuning.families import Family, UnknownFamily, families_for
from tuning.options import SearchOptions
from tuning.results import load_experiment
from tuning.search import main, run_search
from tuning.searcher import ORPHANED_ATTR, study_name

REPO = Path(__file__).resolve().parents[2]
TINY = ["--fix", "hidden_size=16", "--fix", "embedding_dim=16"]
TINY_FIX = {"hidden_size": 16, "embedding_dim": 16}


def lstm_search(data: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return ["--task", "skip", "--model", "lstm", "--data", str(data), "--storage", str(storage), "--name", name, *TINY, *extra]


def study_trials(exp_dir: Path, family: str = "lstm") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=study_name(exp_dir.name, family), storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def result_epochs(trial_dir: Path) -> list[int]:
    """The epochs a trial reported, in order, as Tune wrote them (one line per report)."""
    return [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


# ---------------------------------------------------------------------------
# bad arguments: one clear line, exit status 2, before Ray starts or any folder is written
# ---------------------------------------------------------------------------


def test_an_unknown_model_fails_at_once_with_one_line_naming_the_known_models(tmp_path, capsys):
    assert main(["--task", "skip", "--model", "gpt", "--storage", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert "unknown model 'gpt'" in err and "lstm" in err and "transformer" in err
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_does_not_support_the_task_is_rejected():
    from tuning.families import FAMILIES

    seq_only = Family("seq_only", ("seq",), "tuning.trainer:Trainer", FAMILIES["lstm"].config_cls, {}, {}, {})
    with pytest.raises(UnknownFamily, match="model 'seq_only' does not support task 'skip' \\(it supports seq\\)"):
        families_for("skip", "seq_only", {"seq_only": seq_only})
    with pytest.raises(UnknownFamily, match="no model supports task 'skip'"):
        families_for("skip", "all", {"seq_only": seq_only})


def test_a_missing_data_directory_fails_at_once(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["--task", "skip", "--data", str(missing), "--storage", str(tmp_path / "exp")]) == 2
    assert f"--data {missing}: no such directory" in one_line_error(capsys)
    assert not (tmp_path / "exp").exists()


def test_a_fix_of_a_field_no_model_has_fails_at_once(tmp_path, synthetic_prepared, capsys):
    assert main(lstm_search(synthetic_prepared, tmp_path, "x", "--fix", "wings=2")) == 2
    assert "--fix wings: not a config field of lstm" in one_line_error(capsys)


@pytest.mark.parametrize("name", ["../../somewhere", "a/b", ".hidden", "", "x" * 200])
def test_an_experiment_name_must_be_one_folder_name(tmp_path, synthetic_prepared, capsys, name):
    assert main(lstm_search(synthetic_prepared, tmp_path / "storage", name)) == 2
    assert f"--name {name!r}: use one folder name" in one_line_error(capsys)
    assert not (tmp_path / "storage").exists() and not (tmp_path / "somewhere").exists()


def test_a_bad_optuna_storage_fails_before_ray_starts_and_never_shows_its_password(tmp_path, synthetic_prepared, capsys):
    import ray

    started = ray.is_initialized()
    args = lstm_search(synthetic_prepared, tmp_path / "storage", "bad", "--optuna-storage", "nosuchdb://user:s3cret@host/db")
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "--optuna-storage nosuchdb://user:***@host/db" in err and "s3cret" not in err
    assert not (tmp_path / "storage").exists()
    assert ray.is_initialized() == started  # no Ray instance was started for it


def test_credentials_are_masked_in_what_is_written():
    from tuning.storage import mask_url

    assert mask_url("postgresql://user:pa%40ss@db.example:5432/optuna") == "postgresql://user:***@db.example:5432/optuna"
    assert mask_url("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"
    saved = SearchOptions(task="skip", optuna_storage="mysql://me:hunter2@h/db").saved()
    assert saved["optuna_storage"] == "mysql://me:***@h/db" and "hunter2" not in json.dumps(saved)


def test_gpus_requested_on_a_cluster_without_gpus_fail_before_any_trial(tmp_path, synthetic_prepared, ray_session, capsys):
    assert main(lstm_search(synthetic_prepared, tmp_path, "gpu", "--gpus-per-trial", "1")) == 2
    assert "--gpus-per-trial 1.0 asked for, but the Ray cluster has no GPU" in one_line_error(capsys)
    assert not (tmp_path / "gpu").exists()


# ---------------------------------------------------------------------------
# a two-family search, shared by the tests below
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_families(synthetic_prepared, tmp_path_factory, ray_session):
    """lstm and transformer, two searched trials each plus the paper's configuration, 2 epochs; its console lines."""
    import contextlib
    import io

    storage = tmp_path_factory.mktemp("search")
    args = ["--task", "skip", "--model", "lstm,transformer", "--data", str(synthetic_prepared), "--storage",
            str(storage), "--name", "two", "--max-epochs", "2", "--trials-per-family", "2", *TINY,
            "--fix", "num_heads=2", "--fix", "ffn_dim=32", "--fix", "num_layers=1"]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert main(args) == 0
    return storage / "two", console.getvalue().splitlines()


def test_every_family_gets_its_own_study_and_the_same_number_of_trials(two_families):
    exp_dir, _ = two_families
    trials = load_experiment(exp_dir).trials
    for family in ("lstm", "transformer"):
        mine = [t for t in trials if t.model == family]
        assert len(mine) == 3  # two searched + the paper's configuration
        assert sorted(t.point or "sampled" for t in mine) == ["paper", "sampled", "start"]
        study = study_trials(exp_dir, family)
        assert len(study) == 3
        paper = next(t for t in study if t.user_attrs.get("point") == "paper")
        assert paper.params["lr"] == 1e-5
        start = next(t for t in study if t.user_attrs.get("point") == "start")
        assert start.params["lr"] == 3e-3  # the start configuration learns within a small budget
    assert {t.status for t in trials} <= {"finished", "stopped early"}


def test_the_console_has_one_line_per_trial_event_and_no_tune_tables(two_families):
    _, lines = two_families
    text = "\n".join(lines)
    assert "Trial status" not in text and "╭" not in text and "View detailed results" not in text
    for family in ("lstm", "transformer"):
        for label in (f"{family} #0 (start config)", f"{family} #1 (paper config)", f"{family} #2"):
            assert sum(f"] {label} started:" in line for line in lines) == 1
            assert sum(f"] {label} finished" in line or f"] {label} stopped early" in line for line in lines) == 1
    epochs = [line for line in lines if re.search(r"\] .+ epoch \d/2: val MAA \d\.\d{4}$", line)]
    assert 6 <= len(epochs) <= 12  # one line per reported epoch: each trial reports 1 or 2
    assert lines[-1].startswith("  python -m tuning.train --config ")
    assert sum("tensorboard --logdir" in line for line in lines) == 1
    assert len(lines) < 120


def test_winners_are_tested_once_and_copied_to_best_with_the_leaderboard_and_report(two_families):
    exp_dir, lines = two_families
    leaderboard = (exp_dir / "leaderboard.md").read_text()
    assert "| lstm |" in leaderboard and "| transformer |" in leaderboard
    assert leaderboard.split("\n## ")[0].rstrip() in "\n".join(lines)  # the main table is printed at the end
    for baseline in ("all_skip", "no_skip", "session_majority", "copy_last_skip"):
        assert f"baseline: {baseline}" in leaderboard
    for family in ("lstm", "transformer"):
        test = json.loads((exp_dir / "test_results" / f"{family}.json").read_text())
        assert 0.0 < test["test"]["maa"] <= 1.0
        assert json.loads((exp_dir / "best" / family / "trainer.json").read_text())["model"] == family
        assert (exp_dir / "test_results" / f"{family}.paper.json").exists()
        config, task, model = load_config_file(exp_dir / "best_configs" / f"{family}.json")
        assert (task, model) == ("skip", family) and config["embedding_dim"] == 16
    for trial in load_experiment(exp_dir).trials:
        assert list(Path(trial.path).glob("events.out.tfevents.*")), "TensorBoard event file per trial"
    assert (exp_dir / "learning_curves.png").stat().st_size > 0

    # tuning.report regenerates the same leaderboard from the folder alone
    (exp_dir / "leaderboard.md").unlink()
    assert subprocess.run([sys.executable, "-m", "tuning.report", str(exp_dir)], cwd=REPO, capture_output=True).returncode == 0
    assert (exp_dir / "leaderboard.md").read_text() == leaderboard


def test_best_checkpoints_predict_raw_sessions_and_seed_tuning_train(two_families, synthetic_raw, synthetic_prepared, tmp_path,
                                                                      capsys):
    from data_pipeline.dataset import open_prepared
    from tuning.predict import main as predict_main
    from tuning.train import build_parser, resolve_run

    exp_dir, lines = two_families
    ids = set(open_prepared(synthetic_prepared).numpy_split("test", "paper")["session_id"].tolist())
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted(synthetic_raw.glob("log_*")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame[frame.session_id.isin(ids)].to_csv(raw / path.name.replace(".gz", ""), index=False)
    command = next(line for line in lines if "python -m tuning.predict --checkpoint" in line)
    checkpoint = command.split("--checkpoint ")[1].split()[0]
    tests = {f: json.loads((exp_dir / "test_results" / f"{f}.json").read_text()) for f in ("lstm", "transformer")}
    winner = max(tests, key=lambda f: tests[f]["val"]["maa"])  # the command names the best family's checkpoint
    assert checkpoint == str(exp_dir / "best" / winner)
    test = tests[winner]
    out = tmp_path / "pred.csv"
    assert predict_main(["--checkpoint", checkpoint, "--raw", str(raw), "--out", str(out), "--device", "cpu"]) == 0
    assert f"MAA {test['test']['maa']:.4f}" in capsys.readouterr().out  # the same sessions, scored again from raw logs
    task, model, config = resolve_run(build_parser().parse_args(["--config", checkpoint]))
    assert (task, model, config["embedding_dim"]) == ("skip", winner, 16)


def test_the_report_page_renders_in_headless_chromium_with_the_leaderboard_and_plots(two_families):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/setup installs Debian's chromium package")
        pytest.skip("no chromium here (CI installs it)")
    exp_dir, _ = two_families
    page = exp_dir / "report.html"
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120,
    ).stdout
    assert '<table id="leaderboard">' in dom
    for model in ("lstm", "transformer", "baseline: session_majority"):
        assert f"<td>{model}</td>" in dom
    # plotly drew every figure: learning curves per family, and Optuna's history per family (at least)
    assert dom.count('class="main-svg"') >= 2 * 4
    assert "Optimization History Plot" in dom
    html = page.read_text()
    assert "<script" in html and not re.search(r"<script[^>]+src=", html)  # self-contained: plotly.js embedded


# ---------------------------------------------------------------------------
# early stopping, faults, resume
# ---------------------------------------------------------------------------


def test_asha_stops_a_hopeless_configuration_after_the_grace_period(tmp_path, synthetic_prepared, ray_session):
    points = tmp_path / "points.json"
    points.write_text(json.dumps([{"lr": 1e-2, "batch_size": 32}, {"lr": 1e-8, "batch_size": 32}]))
    args = lstm_search(
        synthetic_prepared, tmp_path, "asha", "--points", str(points), "--trials-per-family", "2", "--max-epochs", "3",
        "--grace-period", "1", "--reduction-factor", "2", "--max-concurrent", "1", "--no-paper-configs",
        "--no-baselines", "--no-test",
    )
    assert main(args) == 0
    trials = {t.config["lr"]: t for t in load_experiment(tmp_path / "asha").trials}
    assert trials[1e-2].status == "finished" and len(trials[1e-2].epochs) == 3
    assert trials[1e-8].status == "stopped early" and len(trials[1e-8].epochs) == 1
    states = {t.params["lr"]: t.state for t in study_trials(tmp_path / "asha")}
    assert states == {1e-2: optuna.trial.TrialState.COMPLETE, 1e-8: optuna.trial.TrialState.PRUNED}


def test_a_trial_that_fails_once_is_retried_from_its_checkpoint_and_finishes(tmp_path, synthetic_prepared, ray_session):
    marker = tmp_path / "failed-once"
    options = SearchOptions(
        task="skip", model="lstm", data=str(synthetic_prepared), storage=str(tmp_path), name="retry",
        trials_per_family=1, paper_configs=False, max_epochs=3, max_concurrent=1, baselines=False, test=False,
        fix=TINY_FIX, hooks={"fail_once_marker": str(marker), "fail_after_epoch": 1},
    )
    exp_dir = run_search(options)
    assert marker.exists()
    (trial,) = load_experiment(exp_dir).trials
    assert trial.status == "finished"
    assert trial.failures == 1
    # restored from the epoch-1 checkpoint: epoch 1 is not trained or reported again
    assert result_epochs(Path(trial.path)) == [1, 2, 3]


def _finished_trials(exp_dir: Path) -> list[str]:
    """Trials Tune has recorded as finished, read through its public ExperimentAnalysis."""
    try:
        trials = load_experiment(exp_dir).trials if exp_dir.exists() else []
    except Exception:  # noqa: BLE001 - a state file being written right now
        return []
    return [t.trial_id for t in trials if t.status == "finished"]


def test_a_driver_killed_after_the_first_finished_trial_resumes_without_losing_or_rerunning_it(
    tmp_path, synthetic_prepared, ray_session
):
    args = lstm_search(
        synthetic_prepared, tmp_path, "resume", "--trials-per-family", "3", "--no-paper-configs", "--max-epochs", "2",
        "--scheduler", "none", "--max-concurrent", "1", "--no-baselines", "--no-test",
    )
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address}
    driver = subprocess.Popen([sys.executable, "-m", "tuning.search", *args], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exp_dir = tmp_path / "resume"
    deadline = time.monotonic() + 300
    try:
        while not _finished_trials(exp_dir):
            assert driver.poll() is None, "the driver ended before any trial finished"
            assert time.monotonic() < deadline, "no trial finished within 300 s"
            time.sleep(1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    (first,) = _finished_trials(exp_dir)[:1]
    first_dir = next(exp_dir.glob(f"*_{first}"))
    first_results = (first_dir / "result.json").read_text()

    assert main(["--task", "skip", "--storage", str(tmp_path), "--name", "resume", "--resume"]) == 0

    experiment = load_experiment(exp_dir)
    assert len(experiment.trials) == 3
    assert all(t.status == "finished" for t in experiment.trials)
    assert (first_dir / "result.json").read_text() == first_results  # kept, not rerun
    assert result_epochs(first_dir) == [1, 2]
    study = study_trials(exp_dir)
    completed = [t for t in study if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(completed) == 3
    # A trial asked for just before the kill, which Tune had not recorded yet, is closed as FAIL, not left RUNNING.
    others = [t for t in study if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.FAIL and ORPHANED_ATTR in t.user_attrs for t in others)
    first_value = max(json.loads(line)["val_maa"] for line in first_results.splitlines())
    assert first_value in [t.value for t in completed]


@pytest.mark.slow  # about a minute; the retry path above covers the trainable's failure hook in CI
def test_a_trial_that_fails_for_good_is_recorded_with_its_error_and_the_search_goes_on(tmp_path, synthetic_prepared, ray_session):
    options = SearchOptions(
        task="skip", model="lstm", data=str(synthetic_prepared), storage=str(tmp_path), name="broken",
        trials_per_family=2, paper_configs=False, max_epochs=2, scheduler="none", max_concurrent=1, max_failures=0,
        baselines=False, test=False, fix=TINY_FIX,
        hooks={"fail_once_marker": str(tmp_path / "failed-once"), "fail_after_epoch": 1},
    )
    exp_dir = run_search(options)
    trials = sorted(load_experiment(exp_dir).trials, key=lambda t: t.status)
    assert [t.status for t in trials] == ["error", "finished"]
    assert "InjectedFailure: fault drill: failing once after epoch 1" in trials[0].error
    assert "fault drill: failing once after epoch 1" in (exp_dir / "leaderboard.md").read_text()
    states = sorted(t.state.name for t in study_trials(exp_dir))
    assert states == ["COMPLETE", "FAIL"]


def test_an_existing_experiment_is_not_overwritten_without_resume(tmp_path, synthetic_prepared, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "search.json").write_text("{}")
    assert main(lstm_search(synthetic_prepared, tmp_path, "taken")) == 2
    assert "--name taken: an experiment of that name exists" in one_line_error(capsys)


# ---------------------------------------------------------------------------
# the searcher's pieces
# ---------------------------------------------------------------------------


def test_the_trial_epoch_budget_counts_each_epoch_once():
    from tuning.searcher import TrialEpochBudget

    budget = TrialEpochBudget(4)
    for trial_id, epoch in [("a", 1), ("a", 2), ("a", 2), ("b", 1)]:  # ("a", 2) again: Tune's final call
        assert budget(trial_id, {"epoch": epoch}) is False
    assert (budget.used, budget.stop_all()) == (3, False)
    budget("b", {"epoch": 2})
    assert budget.stop_all()


def test_trials_left_running_by_an_interrupted_driver_are_closed_as_failed(tmp_path):
    from tuning.searcher import close_orphaned_trials

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name=study_name("s", "lstm"), storage=storage, direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # asked for, never told: what a killed driver leaves behind

    assert close_orphaned_trials(storage, "s", ["lstm", "bert"]) == 1  # bert: no study yet, nothing to close
    trials = optuna.load_study(study_name=study_name("s", "lstm"), storage=storage).get_trials(deepcopy=False)
    states = [(t.state, ORPHANED_ATTR in t.user_attrs) for t in trials]
    assert states == [(optuna.trial.TrialState.COMPLETE, False), (optuna.trial.TrialState.FAIL, True)]
    assert close_orphaned_trials(storage, "s", ["lstm"]) == 0


def test_families_take_turns_and_their_configurations_do_not_depend_on_completion_order(tmp_path):
    from tuning.families import families_for
    from tuning.searcher import FamilyStudies
    from tuning.spaces import plan_search

    def run(finish_in_reverse: bool, storage: str) -> list[tuple[str, dict]]:
        options = SearchOptions(task="skip", model="lstm,transformer", trials_per_family=3).resolved()
        plans, _ = plan_search(families_for("skip", options.model), options)
        studies = FamilyStudies(plans, storage, "e", options.max_epochs, "optuna", seed=7)
        suggested = []
        while (config := studies.suggest(f"t{len(suggested)}")) != "FINISHED":
            suggested.append((config["model"], config[config["model"]]))
            if len(suggested) % 2 == 0:  # two at a time, told in either order
                for trial_id in ([f"t{len(suggested) - 1}", f"t{len(suggested) - 2}"] if finish_in_reverse
                                 else [f"t{len(suggested) - 2}", f"t{len(suggested) - 1}"]):
                    studies.on_trial_complete(trial_id, {"val_maa": 0.5, "epoch": 3})
        return suggested

    forward = run(False, f"sqlite:///{tmp_path / 'a.db'}")
    backward = run(True, f"sqlite:///{tmp_path / 'b.db'}")
    assert [family for family, _ in forward] == ["lstm", "transformer"] * 4  # 3 searched + the paper's, in turns
    assert forward == backward
