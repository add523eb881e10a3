"""Connect the search driver to Ray: an existing cluster, or a local instance with its dashboard.

`connect(address)` follows Ray's own rules for where to go:

- ``address`` (``--address``) or the ``RAY_ADDRESS`` environment variable names a
  running cluster (``auto`` finds one started on this machine with ``ray start``);
- otherwise a local Ray instance starts in this process, with the dashboard on
  127.0.0.1 (``data_pipeline.ray_runtime.init_ray``: everything listens on the
  loopback interface only).

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


class ClusterError(RuntimeError):
    """The driver cannot reach or use the Ray cluster; the message says what to do."""


@dataclass
class ClusterInfo:
    """What the search needs to know about the cluster it runs on."""

    address: str  # GCS address, usable as --address by a second driver
    dashboard_url: str | None
    cpus: float
    gpus: float
    started_here: bool  # True when this process started a local instance
    token_auth: bool


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
    return ClusterInfo(
        address=ray.get_runtime_context().gcs_address,
        dashboard_url=dashboard_url,
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        started_here=started_here,
        token_auth=_token_auth_on(),
    )


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
    lines = [f"Ray: {where}: {info.cpus:g} CPUs, {info.gpus:g} GPUs"]
    if info.dashboard_url:
        note = " (token authentication on: the page asks for `ray get-auth-token`)" if info.token_auth else ""
        lines.append(f"Ray dashboard: {info.dashboard_url}{note}")
    else:
        lines.append("Ray dashboard: not running on this cluster (start Ray with the dashboard to get one)")
    return "\n".join(lines)
