"""The one place this project starts or joins Ray: ``init_ray``.

Every command that needs Ray (``data_pipeline.prepare``, ``tuning.search``,
``tuning.train``, the benchmarks) calls ``init_ray`` instead of ``ray.init``,
so they all follow the same rules:

- a Ray instance this process already holds is reused (tests, notebooks);
- ``address`` (``--address``) or the ``RAY_ADDRESS`` environment variable
  joins a running cluster (``auto`` finds one started on this machine);
- otherwise a local instance starts with 127.0.0.1 as its node address: its
  GCS, raylet, dashboard, agents and workers listen on the loopback interface
  only, so nothing on the network can reach a laptop's search
  (``_loopback_only`` says how), with Ray's token authentication on; a driver
  that joins it at its 127.0.0.1 address (a search's subprocess, a second
  driver) follows the same rule;
- Ray's own log lines stay out of the console unless ``verbose``; Ray Data's
  INFO lines and progress bars too (``quiet_ray_data``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from contextlib import contextmanager

LOCALHOST = "127.0.0.1"
# Ray's switch for "this machine is a single-node cluster": on macOS and Windows it is off by
# default and the node address is the loopback one; on Linux it is on.
SINGLE_NODE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    dashboard: bool = False,
    verbose: bool = False,
):
    """Join `address` / RAY_ADDRESS, or start a local Ray on 127.0.0.1; a no-op when Ray is already up.

    Returns Ray's context object when this call started or joined Ray, else None.
    `num_cpus` and `object_store_memory` size a local instance (default: all
    cores, Ray's default store). `dashboard` starts the dashboard of a local
    instance (on 127.0.0.1; reach it from elsewhere through SSH forwarding).
    """
    import ray

    quiet_ray_data(verbose)
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = {
        "log_to_driver": verbose,
        "configure_logging": verbose,
        "logging_level": logging.INFO if verbose else logging.WARNING,
    }
    if address:
        if not _is_loopback(address):
            return ray.init(address=address, **common)
        with _loopback_only():  # a loopback-only instance on this machine, like the one below
            return ray.init(address=address, **common)
    # Ray 2.59+ protects a new local instance with a token (made on first use, ~/.ray/auth_token) and
    # warns that it does so; the protection stays, the warning goes unless verbose.
    logging.getLogger("ray._private.authentication").setLevel(logging.INFO if verbose else logging.ERROR)
    with _loopback_only():
        return ray.init(
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=dashboard,
            dashboard_host=LOCALHOST,
            _node_ip_address=LOCALHOST,
            **common,
        )


def _is_loopback(address: str) -> bool:
    """Whether a GCS address (``host:port``) names this machine's loopback interface."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, "auto", a ray:// client URL
        return False


@contextmanager
def _loopback_only():
    """While a local instance starts: make Ray take 127.0.0.1 as the node address, as on macOS.

    On Linux, ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough: Ray swaps a loopback
    node address for the machine's network address, and the processes that bind to the node
    address (the dashboard agent, the runtime-env agent) then listen on the network, while the
    gRPC servers of the GCS, the raylet and every worker listen on all interfaces. Ray binds
    everything to 127.0.0.1 only when the node address *is* 127.0.0.1, which it keeps only with
    its multi-node switch off: in this process (read at import, hence the patch) and in the Ray
    processes started now (they inherit the environment; later workers inherit it from the raylet).
    Both are restored afterwards, so nothing else this process starts (a fake cluster, a
    subprocess) is affected. A driver that joins such an instance at its 127.0.0.1 address needs
    the same: with the switch on, Ray would swap that address for the network one, where
    nothing listens.
    """
    from ray._private import ray_constants

    saved_env, saved_switch = os.environ.get(SINGLE_NODE_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_NODE_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_switch
        if saved_env is None:
            del os.environ[SINGLE_NODE_SWITCH]
        else:
            os.environ[SINGLE_NODE_SWITCH] = saved_env


def quiet_ray_data(verbose: bool = False) -> None:
    """Ray Data's progress bars, plan printouts and INFO logging only when `verbose`."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = verbose
    context.enable_operator_progress_bars = verbose
    context.print_on_execution_start = verbose
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.WARNING)
    # Ray Data warns, once per process, that the progress bars it was asked to hide are hidden.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.INFO if verbose else logging.ERROR)
