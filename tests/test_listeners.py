"""What the Ray instances this project starts on one machine listen on: loopback only.

Every process of a local instance is a descendant of the driver that started it (and every
node of the fake cluster a descendant of the fake cluster's process), so that process tree is
the instance: its listening sockets must all be on the loopback interface. The local instance
runs in a subprocess of its own, started as `tuning.search` starts it (`init_ray` with the
dashboard), so that the test session's instance and any other Ray instance on this machine
stay out of the picture.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads listening sockets through psutil as Linux reports them"
)

# Started as tuning.search starts it (dashboard on), with a task and an actor run on workers;
# the agents start after ray.init returns, so the sockets are read once every kind of process
# listens, and a few seconds later.
SCRIPT = r"""
import json, os, socket, subprocess, sys, time

from data_pipeline.ray_runtime import SINGLE_NODE_SWITCH, init_ray
import ray
import psutil
from ray._private import ray_constants

context = init_ray(num_cpus=1, object_store_memory=100 * 1024 * 1024, dashboard=True)
after = {"switch_env": os.environ.get(SINGLE_NODE_SWITCH), "switch": ray_constants.ENABLE_RAY_CLUSTER,
         "node_ip": ray._private.worker.global_worker.node.node_ip_address, "dashboard": context.dashboard_url}

@ray.remote
def ping():
    return os.environ.get(SINGLE_NODE_SWITCH)

after["worker_switch_env"] = ray.get(ping.remote())

@ray.remote(num_cpus=0)
class Trial:  # a worker that stays up while the sockets are read, as a Tune trial's does
    def ready(self):
        return True

trial = Trial.remote()
ray.get(trial.ready.remote())

# A second driver joins at the instance's 127.0.0.1 address, as a search's subprocess does.
join = ("import os, ray; from data_pipeline.ray_runtime import init_ray; init_ray(os.environ['GCS']); "
        "print('JOINED', ray.get(ray.remote(lambda: ray.get_runtime_context().get_node_id()).remote()))")
joined = subprocess.run([sys.executable, "-c", join], capture_output=True, text=True, timeout=120,
                        env={**os.environ, "GCS": ray.get_runtime_context().gcs_address})
after["second_driver"] = [line for line in joined.stdout.splitlines() if line.startswith("JOINED")]
after["node_id"] = ray.get_runtime_context().get_node_id()

def kind(proc, me):
    if proc.pid == me.pid:
        return "driver"
    command = proc.cmdline()
    title = " ".join(command).strip()
    for name in ("gcs_server", "raylet"):
        if command and command[0].endswith("/" + name):
            return name
    if any(part.endswith("dashboard/dashboard.py") for part in command):
        return "dashboard"
    for name in ("DashboardAgent", "RuntimeEnvAgent"):
        if title.startswith("ray::" + name):
            return name
    return "worker" if title.startswith("ray::") else title


def listeners():
    me = psutil.Process()
    rows = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            label = kind(proc, me)
            sockets = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for s in sockets:
            if s.status == psutil.CONN_LISTEN or s.type == socket.SOCK_DGRAM:
                rows.append({"process": label, "ip": s.laddr.ip, "port": s.laddr.port})
    return rows

EXPECTED = {"driver", "gcs_server", "raylet", "dashboard", "DashboardAgent", "RuntimeEnvAgent", "worker"}
deadline = time.monotonic() + 120
while {r["process"] for r in listeners()} < EXPECTED and time.monotonic() < deadline:
    time.sleep(0.5)
time.sleep(3)  # what binds a little later (the dashboard agent's HTTP server) is read too
rows = listeners()
print("LISTENERS " + json.dumps({"after": after, "listeners": rows}))
ray.shutdown()
"""


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket bound to IPv4 loopback
    return (mapped or address).is_loopback


@pytest.fixture(scope="module")
def local_instance() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LISTENERS ")]
    assert done.returncode == 0 and lines, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1][len("LISTENERS "):])


def test_every_process_of_a_local_instance_listens_on_loopback_only(local_instance):
    listeners = local_instance["listeners"]
    # The instance is really there: each kind of Ray process that serves something was seen.
    kinds = {row["process"] for row in listeners}
    assert {"driver", "gcs_server", "raylet", "dashboard", "DashboardAgent", "RuntimeEnvAgent", "worker"} <= kinds, listeners
    exposed = [row for row in listeners if not _is_loopback(row["ip"])]
    assert not exposed, f"listening beyond the loopback interface: {exposed}"
    host, port = local_instance["after"]["dashboard"].rsplit(":", 1)
    assert host == "127.0.0.1" and {"ip": host, "port": int(port)} in [{"ip": r["ip"], "port": r["port"]} for r in listeners]


def test_the_single_node_switch_reaches_ray_processes_but_not_the_driver_afterwards(local_instance):
    after = local_instance["after"]
    assert after["node_ip"] == "127.0.0.1"
    assert after["worker_switch_env"] == "0"  # workers started after init_ray inherit it from the raylet
    assert after["switch_env"] is None and after["switch"] is True  # a later subprocess of the driver does not


def test_every_node_of_the_fake_cluster_listens_on_loopback_only():
    import psutil

    from tuning.fake_cluster import FakeCluster

    with FakeCluster(cpu_nodes=1, gpu_nodes=1, dashboard=True) as cluster:
        root = psutil.Process(cluster.pid)
        listeners = [
            (proc.pid, s.laddr) for proc in [root, *root.children(recursive=True)]
            for s in proc.net_connections(kind="inet") if s.status == psutil.CONN_LISTEN
        ]
        raylets = [p for p in root.children(recursive=True) if p.name() == "raylet"]
        address = cluster.address
    assert len(raylets) == 3  # head, cpu-1, gpu-1: each node really started
    assert address.startswith("127.0.0.1:")
    exposed = [(pid, addr) for pid, addr in listeners if not _is_loopback(addr.ip)]
    assert listeners and not exposed, f"listening beyond the loopback interface: {exposed}"


def test_a_second_driver_joins_the_local_instance_at_its_loopback_address(local_instance):
    """Ray would swap 127.0.0.1 for the network address, where nothing listens, unless init_ray stops it."""
    after = local_instance["after"]
    assert after["second_driver"] == [f"JOINED {after['node_id']}"]
