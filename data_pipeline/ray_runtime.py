"""The one place this project starts or joins Ray: ``init_ray``.

Every command that needs Ray (``data_pipeline.prepare``, ``tuning.search``,
``tuning.train``, the benchmarks) calls ``init_ray`` instead of ``ray.init``,
so they all follow the same rules:

- a Ray instance this process already holds is reused (tests, notebooks);
- ``address`` (``--address``) or the ``RAY_ADDRESS`` environment variable
  joins a running cluster (``auto`` finds one started on this machine);
- otherwise a local instance starts, bound to 127.0.0.1 (its node address
  and the dashboard), with Ray's token authentication on;
- Ray's own log lines stay out of the console unless ``verbose``; Ray Data's
  INFO lines and progress bars too (``quiet_ray_data``).
"""

from __future__ import annotations

import logging
import os

LOCALHOST = "127.0.0.1"


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
        return ray.init(address=address, **common)
    # Ray 2.59+ protects a new local instance with a token (made on first use, ~/.ray/auth_token) and
    # warns that it does so; the protection stays, the warning goes unless verbose.
    logging.getLogger("ray._private.authentication").setLevel(logging.INFO if verbose else logging.ERROR)
    return ray.init(
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        include_dashboard=dashboard,
        dashboard_host=LOCALHOST,
        _node_ip_address=LOCALHOST,
        **common,
    )


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
