"""The GPU check runs end to end on the CPU at tiny size, so it is ready for a GPU machine."""

import re


def test_gpu_check_runs_on_the_cpu_and_prints_every_check(tmp_path, ray_session, capsys):
    from benchmarks.gpu_check import main

    assert main(["--sessions", "2000", "--minutes", "1", "--search-sessions", "2000", "--work", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| CUDA found | no (CPU run) |" in table
    for model in ("lstm", "transformer"):
        assert re.search(rf"\| {model} \(paper sizes, [\d,]+ parameters\) \| [\d,]+ sessions/s on cpu over [\d,]+ sessions", table)
    assert re.search(r"\| 4-trial search, CPU \| finished in \d+ s with a leaderboard \(lstm row present\) \|", table)
    assert re.search(r"\| tuning.predict on cpu \| [\d,]+ sessions in [\d.]+ s, MAA 0\.\d{4} \|", table)
