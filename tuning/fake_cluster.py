"""A fake multi-node Ray cluster on one machine, to try and test the search as it runs on a cluster.

    python -m tuning.fake_cluster --cpu-nodes 2 --gpu-nodes 1
    # prints the address; in another shell, with the environment it prints:
    RAY_AUTH_MODE=token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_TMPDIR=... python -m tuning.search --address ADDRESS --storage /shared/dir ...

A head node with 0 CPUs (like cluster.yaml's head: it runs the search driver, no
trials) plus worker nodes, each a real raylet with its own resources
(`ray.cluster_utils.Cluster`); GPU nodes advertise fake `GPU` resources, so
GPU-requesting trials are scheduled only there (torch still sees no CUDA and
trains on the CPU). All nodes share this machine's filesystem, so a local
directory is shared storage for `--storage`.

The cluster lives in its own process, with its own Ray temp directory
(`RAY_TMPDIR`): it never becomes the "current" Ray cluster that a bare
`ray.init()` elsewhere on this machine would join, and it never touches a Ray
instance this process (a test session) may already hold. `FakeCluster` starts
that process and talks to it over stdin/stdout:

    with FakeCluster(cpu_nodes=2, gpu_nodes=1) as cluster:
        subprocess.run([..., "--address", cluster.address], env=cluster.driver_env())
        cluster.kill_node("gpu-1")          # SIGKILL the node's raylet and its workers
        cluster.actors()                    # where every actor ran (node name, pid, state)
        cluster.tasks("ReadParquet")        # which nodes ran the matching tasks

Token authentication is on (`RAY_AUTH_MODE=token`, the token in ~/.ray/auth_token),
as on a real cluster started by `ray up cluster.yaml`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.ray_runtime import SINGLE_NODE_SWITCH

PREFIX = "FAKE_CLUSTER "  # marks protocol lines on the cluster process's stdout
REPO = Path(__file__).resolve().parents[1]


@dataclass
class NodeSpec:
    name: str  # "head", "cpu-1", "gpu-1", ...
    cpus: int
    gpus: int


def plan_nodes(cpu_nodes: int, gpu_nodes: int, cpus_per_node: int, gpus_per_node: int) -> list[NodeSpec]:
    """The head (no CPUs, no GPUs) first, then CPU-only workers, then GPU workers."""
    if cpu_nodes < 0 or gpu_nodes < 0 or cpu_nodes + gpu_nodes == 0:
        raise ValueError(f"need at least one worker node (got --cpu-nodes {cpu_nodes} --gpu-nodes {gpu_nodes})")
    if cpus_per_node < 1:
        raise ValueError(f"--cpus-per-node must be at least 1 (got {cpus_per_node}): trials need a CPU")
    if gpu_nodes and gpus_per_node < 1:
        raise ValueError(f"--gpus-per-node must be at least 1 with --gpu-nodes {gpu_nodes}")
    nodes = [NodeSpec("head", 0, 0)]
    nodes += [NodeSpec(f"cpu-{i + 1}", cpus_per_node, 0) for i in range(cpu_nodes)]
    nodes += [NodeSpec(f"gpu-{i + 1}", cpus_per_node, gpus_per_node) for i in range(gpu_nodes)]
    return nodes


# --------------------------------------------------------------------------- the cluster process


def _emit(message: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


def _serve(nodes: list[NodeSpec], object_store_mb: int, dashboard: bool) -> None:
    """Start the nodes, report them, then answer commands from stdin until `quit` or EOF."""
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray.cluster_utils import Cluster

    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
    store = object_store_mb * 1024 * 1024
    head_spec, *worker_specs = nodes
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            num_cpus=0, num_gpus=0, object_store_memory=store, include_dashboard=dashboard,
            labels={"fake_node": head_spec.name},
        ),
    )
    by_name = {head_spec.name: cluster.head_node}
    for spec in worker_specs:
        by_name[spec.name] = cluster.add_node(
            num_cpus=spec.cpus, num_gpus=spec.gpus, object_store_memory=store, labels={"fake_node": spec.name}
        )
    cluster.wait_for_nodes()
    names = {node.node_id: name for name, node in by_name.items()}
    _emit({
        "address": cluster.address,
        "dashboard_url": cluster.webui_url if dashboard else None,
        "nodes": [
            {"name": s.name, "node_id": by_name[s.name].node_id, "CPU": s.cpus, "GPU": s.gpus} for s in nodes
        ],
    })
    try:
        for line in sys.stdin:
            command, *args = line.split()
            if command == "quit":
                break
            try:
                _emit(_answer(cluster, by_name, names, command, args))
            except Exception as error:  # noqa: BLE001 - reported to the caller, who raises it
                _emit({"error": f"{command} {' '.join(args)}: {type(error).__name__}: {error}"})
    finally:
        cluster.shutdown()


def _answer(cluster, by_name: dict, names: dict, command: str, args: list[str]) -> dict:
    if command == "kill":
        (name,) = args
        if name == "head" or name not in by_name:
            raise ValueError(f"no worker node {name!r}; worker nodes: {sorted(set(by_name) - {'head'})}")
        cluster.remove_node(by_name.pop(name), allow_graceful=False)
        return {"killed": name}
    if command == "actors":
        table = cluster.global_state.actor_table(None)
        return {"actors": [
            {"class_name": a["ActorClassName"], "node": names.get(a["Address"]["NodeID"], "?"), "pid": a["Pid"],
             "state": a["State"]}
            for a in table.values()
        ]}
    if command == "tasks":
        pattern = args[0] if args else ""
        # A task's name and the node that ran it may arrive in separate events: merge by task.
        name_of: dict[bytes, str] = {}
        node_of: dict[bytes, str] = {}
        for event in cluster.global_state._get_all_task_events():
            if event.task_info.name:
                name_of[event.task_id] = event.task_info.name
            if event.state_updates.node_id:
                node_of[event.task_id] = names.get(event.state_updates.node_id.hex(), "?")
        return {"tasks": [
            {"name": name, "node": node_of[task]}
            for task, name in name_of.items() if pattern in name and task in node_of
        ]}
    if command == "resources":
        return {"resources": cluster.global_state.cluster_resources()}
    raise ValueError(f"unknown command {command!r}: kill NODE | actors | tasks PATTERN | resources | quit")


# --------------------------------------------------------------------------- the handle


class FakeClusterError(RuntimeError):
    """The fake cluster process failed to start or to answer; the message carries its stderr."""


class FakeCluster:
    """Starts `python -m tuning.fake_cluster` in its own process and drives it (see module docstring)."""

    def __init__(
        self,
        cpu_nodes: int = 2,
        gpu_nodes: int = 0,
        cpus_per_node: int = 2,
        gpus_per_node: int = 1,
        object_store_mb: int = 100,
        dashboard: bool = False,
        start_timeout_s: float = 180.0,
    ):
        self.specs = plan_nodes(cpu_nodes, gpu_nodes, cpus_per_node, gpus_per_node)
        # Short: Ray's unix socket paths live under it and must stay under 108 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="rfc", dir="/tmp")
        self._stderr = open(Path(self.temp_dir) / "fake_cluster.stderr", "w+")
        env = self.driver_env()
        command = [
            sys.executable, "-m", "tuning.fake_cluster", "--cpu-nodes", str(cpu_nodes), "--gpu-nodes",
            str(gpu_nodes), "--cpus-per-node", str(cpus_per_node), "--gpus-per-node", str(gpus_per_node),
            "--object-store-mb", str(object_store_mb),
        ] + (["--dashboard"] if dashboard else [])
        self._process = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1,
        )
        self._lock = threading.Lock()
        started = self._read(start_timeout_s)
        self.address: str = started["address"]
        self.dashboard_url: str | None = started["dashboard_url"]
        self.nodes: list[dict] = started["nodes"]

    def driver_env(self, **extra: str) -> dict[str, str]:
        """Environment for a driver (`python -m tuning.search --address ...`) joining this cluster."""
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(RAY_TMPDIR=self.temp_dir, RAY_AUTH_MODE="token", PYTHONPATH=str(REPO), RAY_DEDUP_LOGS="0")
        # All nodes share this machine: 127.0.0.1 as every node's address keeps their listeners on
        # loopback (data_pipeline.ray_runtime explains the switch); a driver needs it too, to find
        # its raylet at that address.
        env[SINGLE_NODE_SWITCH] = "0"
        env.update(extra)
        return env

    def _read(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        result: dict = {}

        def read_one():
            for line in self._process.stdout:
                if line.startswith(PREFIX):
                    result.update(json.loads(line[len(PREFIX):]))
                    return

        reader = threading.Thread(target=read_one, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if not result:
            raise FakeClusterError(
                f"the fake cluster process gave no answer within {timeout_s:.0f}s "
                f"(exit code {self._process.poll()}); its stderr:\n{self.stderr_tail()}"
            )
        if "error" in result:
            raise FakeClusterError(result["error"])
        return result

    def _ask(self, command: str, timeout_s: float = 60.0) -> dict:
        with self._lock:
            if self._process.poll() is not None:
                raise FakeClusterError(f"the fake cluster process has exited; its stderr:\n{self.stderr_tail()}")
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
            return self._read(timeout_s)

    def stderr_tail(self, chars: int = 4000) -> str:
        self._stderr.flush()
        return (Path(self.temp_dir) / "fake_cluster.stderr").read_text()[-chars:]

    @property
    def pid(self) -> int:
        """The fake cluster's process: every node's processes are its descendants."""
        return self._process.pid

    def node_names(self, kind: str = "") -> list[str]:
        """Names of the worker nodes ("cpu-1", "gpu-1", ...), optionally only those starting with `kind`."""
        return [n["name"] for n in self.nodes if n["name"] != "head" and n["name"].startswith(kind)]

    def kill_node(self, name: str) -> None:
        """SIGKILL a worker node: its raylet, object store and every worker process on it."""
        self._ask(f"kill {name}")

    def actors(self) -> list[dict]:
        """Every actor the cluster has run: class_name, node (name), pid, state."""
        return self._ask("actors")["actors"]

    def tasks(self, name_contains: str = "") -> list[dict]:
        """Tasks (and actor tasks) whose name contains `name_contains` (e.g. "ReadParquet"), with the node
        that ran each; names must not contain spaces."""
        return self._ask(f"tasks {name_contains}".strip())["tasks"]

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._process.stdin.write("quit\n")
                self._process.stdin.flush()
                self._process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._stderr.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "FakeCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.fake_cluster",
        description="Run a fake multi-node Ray cluster on this machine (a head with no CPUs plus worker "
        "nodes, some with fake GPUs) until Ctrl-C. Prints the address and the environment a driver needs.",
    )
    parser.add_argument("--cpu-nodes", type=int, default=2, help="CPU-only worker nodes (default 2)")
    parser.add_argument("--gpu-nodes", type=int, default=1, help="worker nodes with fake GPUs (default 1)")
    parser.add_argument("--cpus-per-node", type=int, default=2, help="CPUs each worker node advertises (default 2)")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="fake GPUs on each GPU node (default 1)")
    parser.add_argument("--object-store-mb", type=int, default=100, help="object store per node, MiB (default 100)")
    parser.add_argument("--dashboard", action="store_true", help="also start the Ray dashboard on the head")
    args = parser.parse_args(argv)
    try:
        nodes = plan_nodes(args.cpu_nodes, args.gpu_nodes, args.cpus_per_node, args.gpus_per_node)
    except ValueError as error:
        parser.error(str(error))
    if sys.stdin.isatty():
        # Run by hand: the protocol is for FakeCluster; print how to use the cluster instead.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ[SINGLE_NODE_SWITCH] = "0"
        if "RAY_TMPDIR" not in os.environ:
            os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rfc", dir="/tmp")
        print(
            "starting the fake cluster; drivers join it with\n"
            f"  RAY_AUTH_MODE=token {SINGLE_NODE_SWITCH}=0 RAY_TMPDIR={os.environ['RAY_TMPDIR']} "
            "python -m tuning.search --address <the address below> --storage /some/shared/dir ...\n"
            "Ctrl-C stops it.",
            file=sys.stderr,
        )
    _serve(nodes, args.object_store_mb, args.dashboard)


if __name__ == "__main__":
    main()
