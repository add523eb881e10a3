"""Connect the search driver to Ray: an existing cluster, or a local instance with its dashboard.

`connect(address)` follows Ray's own rules for where to go:

- ``address`` (``--address``) or the ``RAY_ADDRESS`` environment variable names a
  running cluster (``auto`` finds one started on this machine with ``ray start``);
- otherwise a local Ray instance starts in this process, with the dashboard on
  127.0.0.1 (``data_pipeline.ray_runtime.init_ray``: everything listens on the
  loopback interface only).

How big the cluster may grow (``ClusterInfo.max_cpus``, ``max_gpus``): on the
head of a cluster started by ``ray up``, the autoscaler's configuration lies in
``~/ray_bootstrap_config.yaml``, with every node type's resources (filled in from
the instance type on AWS) and ``max_workers``; elsewhere (a local instance, a
cluster without an autoscaler, a driver off the head) only what is up now is known.

Token authentication: Ray 2.59+ turns it on for new local clusters; the token
is written to ``~/.ray/auth_token`` and every process started here inherits
``RAY_AUTH_MODE=token``. A driver that joins a cluster started elsewhere needs
the cluster's token: ``export RAY_AUTH_MODE=token`` and either copy the head
node's ``~/.ray/auth_token`` (``ray get-auth-token`` prints it) or set
``RAY_AUTH_TOKEN``. The dashboard then asks for the same token in the browser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Where `ray up` writes the autoscaler's configuration on the head node (inside its container).
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")


class ClusterError(RuntimeError):
    """The driver cannot reach or use the Ray cluster; the message says what to do."""


@dataclass
class ClusterInfo:
    """What the search needs to know about the cluster it runs on."""

    address: str  # GCS address, usable as --address by a second driver
    dashboard_url: str | None
    cpus: float  # up now
    gpus: float
    started_here: bool  # True when this process started a local instance
    token_auth: bool
    # What the cluster may grow to as the autoscaler adds nodes; never less than what is up now.
    max_cpus: float
    max_gpus: float
    autoscaling: bool  # True when max_cpus / max_gpus come from the autoscaler's configuration


def _token_auth_on() -> bool:
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def connect(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    verbose: bool = False,
) -> ClusterInfo:
    """Join the cluster at `address` / RAY_ADDRESS, or start a local Ray with its dashboard.

    Reuses the Ray instance already initialised in this process (tests, notebooks).
    Raises `ClusterError` with a one-line remedy when the cluster cannot be reached.
    """
    import ray
    from ray.exceptions import AuthenticationError

    from data_pipeline.ray_runtime import init_ray

    started_here = False
    dashboard_url = None
    if ray.is_initialized():
        dashboard_url = _dashboard_url_of_running()
    else:
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            context = init_ray(address, num_cpus=num_cpus, object_store_memory=object_store_memory, dashboard=True,
                               verbose=verbose)
            started_here = not address
        except AuthenticationError as error:
            raise ClusterError(
                f"the Ray cluster at {address} refused this driver's token ({error.message.strip()}). "
                "Set RAY_AUTH_MODE=token and copy the head node's token (`ray get-auth-token` on the "
                "head) to ~/.ray/auth_token or RAY_AUTH_TOKEN, then run again."
            ) from None
        except ConnectionError as error:
            raise ClusterError(
                f"cannot reach a Ray cluster at {address!r} ({error}). Start one with "
                "`ray start --head`, check --address / RAY_ADDRESS, or leave both unset to "
                "start a local Ray instance."
            ) from None
        url = getattr(context, "dashboard_url", None)
        dashboard_url = f"http://{url}" if url and not url.startswith("http") else url
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))
    # A local instance never grows, and a stray config file on a laptop says nothing about it.
    maximum = None if started_here else autoscaler_maximum(AUTOSCALER_CONFIG)
    return ClusterInfo(
        address=ray.get_runtime_context().gcs_address,
        dashboard_url=dashboard_url,
        cpus=cpus,
        gpus=gpus,
        started_here=started_here,
        token_auth=_token_auth_on(),
        max_cpus=max(cpus, maximum["CPU"]) if maximum else cpus,
        max_gpus=max(gpus, maximum["GPU"]) if maximum else gpus,
        autoscaling=maximum is not None,
    )


def autoscaler_maximum(path: Path = AUTOSCALER_CONFIG) -> dict[str, float] | None:
    """The most CPUs and GPUs the cluster of this autoscaler configuration can have at once.

    The head node type once, plus worker nodes: each node type up to its own ``max_workers``,
    all of them together up to the cluster's ``max_workers``. The CPU and GPU maxima are each
    the best choice of nodes under those limits (nodes with the most of that resource first),
    so they bound what trials can get, not a single set of nodes. A node type whose resources
    the file does not state counts for nothing (``ray up`` states them: from the instance type
    on AWS, by hand on GCP). None when there is no such file or it cannot be read.
    """
    import yaml

    try:
        config = yaml.safe_load(path.expanduser().read_text())
        types = config["available_node_types"]
        head = config["head_node_type"]
        cap = int(config.get("max_workers", sum(int(t.get("max_workers", 0)) for t in types.values())))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        return None
    result = {}
    for resource in ("CPU", "GPU"):
        total = float(types[head].get("resources", {}).get(resource, 0))
        room = cap
        workers = [(float(t.get("resources", {}).get(resource, 0)), int(t.get("max_workers", 0)))
                   for name, t in types.items() if name != head]
        for per_node, count in sorted(workers, reverse=True):
            taken = min(count, room)
            total += per_node * taken
            room -= taken
        result[resource] = total
    return result


def _dashboard_url_of_running() -> str | None:
    """The dashboard URL of the Ray instance this process is already attached to, if any."""
    try:
        from ray._private.worker import global_worker

        url = global_worker.node.address_info.get("webui_url") if global_worker.node else None
    except Exception:  # noqa: BLE001 - a missing dashboard is not an error
        return None
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


def describe(info: ClusterInfo) -> str:
    """Lines for the console: where the cluster is, its size, and how to watch it."""
    where = "local Ray instance started by this driver" if info.started_here else f"Ray cluster {info.address}"
    grows = ""
    if info.max_cpus > info.cpus or info.max_gpus > info.gpus:
        grows = f" (up to {info.max_cpus:g} CPUs, {info.max_gpus:g} GPUs as the autoscaler adds nodes)"
    lines = [f"Ray: {where}: {info.cpus:g} CPUs, {info.gpus:g} GPUs{grows}"]
    if info.dashboard_url:
        note = " (token authentication on: the page asks for `ray get-auth-token`)" if info.token_auth else ""
        lines.append(f"Ray dashboard: {info.dashboard_url}{note}")
    else:
        lines.append("Ray dashboard: not running on this cluster (start Ray with the dashboard to get one)")
    return "\n".join(lines)
