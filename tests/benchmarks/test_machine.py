"""Benchmarks write a result file only from a quiet machine, and say so when they do not."""

import os

from benchmarks.machine import emit_result


def test_a_run_started_on_a_quiet_machine_is_written_and_printed(tmp_path, capsys):
    out = tmp_path / "result.md"
    emit_result(["| a | 1 |"], out, load_at_start=0.0)
    assert out.read_text() == "| a | 1 |\n"
    assert "| a | 1 |" in capsys.readouterr().out


def test_a_run_started_above_the_core_count_is_printed_with_the_reason_but_not_written(tmp_path, capsys):
    out = tmp_path / "result.md"
    emit_result(["| a | 1 |"], out, load_at_start=(os.cpu_count() or 1) + 0.5)
    assert not out.exists()
    printed = capsys.readouterr().out
    assert "| a | 1 |" in printed and f"NOT WRITTEN to {out}" in printed and "quiet machine" in printed
