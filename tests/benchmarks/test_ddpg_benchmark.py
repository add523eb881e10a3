"""benchmarks/ddpg.py: where the real sample comes from, and which runs it makes (no training here)."""

import argparse

import pytest

from benchmarks import ddpg


def test_the_sample_is_skipped_unless_given_by_option_or_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MSSD_SAMPLE_DIR", raising=False)
    assert ddpg.sample_dir(None) is None
    for name in ddpg.SAMPLE_FILES:
        (tmp_path / name).write_text("")
    assert ddpg.sample_dir(tmp_path) == tmp_path
    monkeypatch.setenv("MSSD_SAMPLE_DIR", str(tmp_path))
    assert ddpg.sample_dir(None) == tmp_path


def test_a_sample_folder_without_the_sample_files_is_refused_with_their_names(tmp_path):
    with pytest.raises(SystemExit, match="lacks log_sample.csv.gz, tf_small_covered.csv"):
        ddpg.sample_dir(tmp_path)


def test_runs_are_the_dense_default_and_the_papers_three_exploration_settings(monkeypatch):
    from rl.spec import DDPGModelConfig

    args = argparse.Namespace(no_paper=False, quick=False)
    runs = ddpg.settings(args, "seq")
    assert list(runs) == ["dense (search default)", "paper: no noise", "paper: noise", "paper: noise with decay"]
    assert runs["dense (search default)"] == {}
    for label, override in runs.items():
        config = DDPGModelConfig.from_dict(override)  # every override is a valid DDPG config
        assert config.formulation == ("dense" if label.startswith("dense") else "paper")
    args.no_paper = True
    assert list(ddpg.settings(args, "skip")) == ["dense (search default)"]
