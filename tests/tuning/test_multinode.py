"""The search on a multi-node Ray cluster, faked on this machine (tuning/fake_cluster.py).

Each test starts its own cluster — a head with 0 CPUs, one CPU-only worker and two
workers with a fake GPU each, every one a real raylet — in a separate process with
its own Ray temp directory, and runs the real `python -m tuning.search --address ...`
against it as a subprocess. Nothing here joins the session-wide `ray_session`
instance, so these tests run the same alone or in the whole suite (the
`synthetic_prepared` fixture may use that instance to prepare the data; the
cluster only reads the prepared directory). A local directory is the shared
storage: every fake node sees the same filesystem.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuning.fake_cluster import REPO, FakeCluster, NodeSpec, plan_nodes

pytestmark = pytest.mark.timeout(1800)


def search_command(cluster: FakeCluster, data: Path, storage: Path, name: str, trials: int, epochs: int) -> list[str]:
    """A one-family search where every trial asks for one (fake) GPU and runs all its epochs."""
    return [
        sys.executable, "-m", "tuning.search", "--task", "skip", "--model", "lstm", "--data", str(data),
        "--trials-per-family", str(trials), "--no-paper-configs", "--max-epochs", str(epochs), "--scheduler", "none",
        "--gpus-per-trial", "1", "--cpus-per-trial", "1", "--input-path", "ray", "--max-failures", "2",
        "--fix", "hidden_size=32", "--fix", "embedding_dim=16",
        # stream every epoch, as a split too big for the object store does (a small one is read once)
        "--fix", "cache_train=never",
        "--no-baselines", "--no-test", "--address", cluster.address, "--storage", str(storage), "--name", name,
    ]


def trial_reports(exp_dir: Path) -> dict[str, list[dict]]:
    """Every trial's reports so far (Tune's result.json, one line per reported epoch), by trial directory."""
    reports = {}
    for path in sorted(exp_dir.glob("*/result.json")):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
        reports[path.parent.name] = rows
    return reports


def node_of_pid(cluster: FakeCluster) -> dict[int, str]:
    """The fake node (by name) of every actor process the cluster has run; trials are actors."""
    return {actor["pid"]: actor["node"] for actor in cluster.actors() if actor["pid"]}


def read_tasks(cluster: FakeCluster) -> list[dict]:
    """Ray Data's read tasks (ReadParquet / ReadFilesParquetV2 -> ..., one or more per epoch), with their nodes."""
    return [task for task in cluster.tasks("Read") if task["name"].startswith("Read")]


def finish(process: subprocess.Popen, timeout_s: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"tuning.search did not finish within {timeout_s:.0f}s; its output:\n{output[-4000:]}")
    assert process.returncode == 0, f"tuning.search exited with {process.returncode}:\n{output[-6000:]}"
    return output


def start_search(cluster: FakeCluster, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=REPO, env=cluster.driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_fake_cluster_plan_is_a_cpu_less_head_then_cpu_workers_then_gpu_workers():
    assert plan_nodes(cpu_nodes=1, gpu_nodes=2, cpus_per_node=2, gpus_per_node=1) == [
        NodeSpec("head", 0, 0), NodeSpec("cpu-1", 2, 0), NodeSpec("gpu-1", 2, 1), NodeSpec("gpu-2", 2, 1)
    ]


@pytest.mark.parametrize("kwargs, message", [
    (dict(cpu_nodes=0, gpu_nodes=0, cpus_per_node=2, gpus_per_node=1), "need at least one worker node"),
    (dict(cpu_nodes=1, gpu_nodes=0, cpus_per_node=0, gpus_per_node=1), "--cpus-per-node must be at least 1"),
    (dict(cpu_nodes=0, gpu_nodes=1, cpus_per_node=2, gpus_per_node=0), "--gpus-per-node must be at least 1"),
])
def test_fake_cluster_plan_rejects_clusters_that_cannot_run_a_trial(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_nodes(**kwargs)


def test_search_spreads_gpu_trials_over_the_gpu_nodes_and_reads_the_data_on_several_nodes(
    synthetic_prepared, tmp_path
):
    with FakeCluster(cpu_nodes=1, gpu_nodes=2, cpus_per_node=2) as cluster:
        assert cluster.node_names() == ["cpu-1", "gpu-1", "gpu-2"]
        search = start_search(cluster, search_command(cluster, synthetic_prepared, tmp_path, "spread", trials=2, epochs=2))
        output = finish(search, timeout_s=1200)
        reports = trial_reports(tmp_path / "spread")
        nodes = node_of_pid(cluster)
        reads = read_tasks(cluster)

    assert "Ray cluster" in output and "6 CPUs, 2 GPUs" in output
    assert len(reports) == 2 and all([r["epoch"] for r in rows] == [1, 2] for rows in reports.values())
    # Two trials at once, one per fake GPU: each on its own GPU node, none on the CPU node or the head.
    trial_nodes = sorted(nodes[rows[0]["pid"]] for rows in reports.values())
    assert trial_nodes == ["gpu-1", "gpu-2"]
    # The trials' Ray Data reads of the shared parquet shards ran as tasks on several worker nodes
    # (Ray Data spreads its tasks), never on the head. Ray exports task events asynchronously, so not
    # every read of the 2 trials x 2 epochs need be listed yet: the claim is about where they ran.
    read_nodes = {task["node"] for task in reads}
    assert len(read_nodes) >= 2, reads
    assert read_nodes <= {"cpu-1", "gpu-1", "gpu-2"}


@pytest.mark.slow
def test_killing_a_gpu_node_mid_search_keeps_finished_trials_and_resumes_its_trial_elsewhere_from_a_checkpoint(
    synthetic_prepared, tmp_path
):
    epochs, trials = 3, 4
    exp_dir = tmp_path / "kill"
    with FakeCluster(cpu_nodes=1, gpu_nodes=2, cpus_per_node=2) as cluster:
        search = start_search(
            cluster, search_command(cluster, synthetic_prepared, tmp_path, "kill", trials=trials, epochs=epochs)
        )
        # Wait until one trial has finished and another, on a GPU node, has reported its first
        # epoch (and checkpoint) only: then kill that node, SIGKILL, in the middle of the trial.
        deadline = time.monotonic() + 1200
        victim = None
        while victim is None:
            assert search.poll() is None, f"search ended before the kill:\n{search.communicate()[0][-4000:]}"
            assert time.monotonic() < deadline, "no moment to kill a node came within 20 minutes"
            time.sleep(1.0)
            reports = trial_reports(exp_dir)
            finished = {t: rows for t, rows in reports.items() if rows and rows[-1]["epoch"] == epochs}
            running = {t: rows for t, rows in reports.items() if rows and rows[-1]["epoch"] == 1}
            if not finished or not running:
                continue
            nodes = node_of_pid(cluster)
            for trial, rows in running.items():
                if nodes.get(rows[-1]["pid"], "").startswith("gpu"):
                    victim, victim_node = trial, nodes[rows[-1]["pid"]]
                    cluster.kill_node(victim_node)
                    break
        output = finish(search, timeout_s=1500)
        reports = trial_reports(exp_dir)
        nodes = node_of_pid(cluster)

    assert f"search done: {trials} trials, 0 failed for good" in output
    # No finished trial is lost or re-run: its reports are exactly those it had before the kill.
    for trial, rows in finished.items():
        assert reports[trial] == rows
    # Every trial ran all its epochs, each reported once.
    assert {t: [r["epoch"] for r in rows] for t, rows in reports.items()} == {
        t: list(range(1, epochs + 1)) for t in reports
    } and len(reports) == trials
    # The killed trial went on from its last checkpoint (no epoch reported twice) in a new
    # process on the surviving GPU node; no trial ever ran on the CPU-only node.
    victim_pids = list(dict.fromkeys(r["pid"] for r in reports[victim]))
    assert len(victim_pids) == 2
    assert nodes[victim_pids[0]] == victim_node
    surviving_gpu = ({"gpu-1", "gpu-2"} - {victim_node}).pop()
    assert nodes[victim_pids[1]] == surviving_gpu
    pids = [r["pid"] for r in reports[victim]]
    before_kill = pids.count(victim_pids[0])
    assert pids == [victim_pids[0]] * before_kill + [victim_pids[1]] * (epochs - before_kill)
    assert {nodes[r["pid"]] for rows in reports.values() for r in rows} <= {"gpu-1", "gpu-2"}
