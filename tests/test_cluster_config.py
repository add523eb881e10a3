"""cluster.yaml (AWS) and tuning/cluster_configs/gcp.yaml, checked offline against Ray's own
schema and defaults: what `ray up` would reject is caught here, without a cloud account."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"aws": REPO / "cluster.yaml", "gcp": REPO / "tuning" / "cluster_configs" / "gcp.yaml"}


def load(name: str) -> dict:
    return yaml.safe_load(CONFIGS[name].read_text())


def validated(config: dict) -> dict:
    """What `ray up` does before touching a cloud: fill Ray's defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def torch_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"torch\b", d)]
    return pin


def setup_of(prepared: dict, node_type: str) -> list[str]:
    """The commands `ray up` runs on a node of this type (head or worker)."""
    if node_type == prepared["head_node_type"]:
        return prepared["head_setup_commands"]
    node = prepared["available_node_types"][node_type]
    return node.get("worker_setup_commands", prepared["worker_setup_commands"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cluster_config_passes_rays_schema_and_defaults(name):
    prepared = validated(load(name))
    assert prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == {"head", "gpu_worker", "cpu_worker"}
    assert prepared["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert prepared["available_node_types"]["head"]["max_workers"] == 0
    gpu = prepared["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 1 and gpu["max_workers"] > gpu["min_workers"]  # one always up, more on demand
    assert prepared["available_node_types"]["cpu_worker"]["min_workers"] == 0
    assert prepared["idle_timeout_minutes"] == 10


def test_aws_gpu_workers_are_gpu_instances_whose_resources_ray_detects():
    gpu = load("aws")["available_node_types"]["gpu_worker"]
    assert gpu["node_config"]["InstanceType"].split(".")[0] in {"g4dn", "g5", "g6", "g6e", "p3", "p4d", "p5"}
    assert gpu["resources"] == {}  # AWS: CPU and GPU counts come from the instance type


def test_gcp_node_types_state_resources_that_match_their_accelerators():
    types = load("gcp")["available_node_types"]
    for name, node in types.items():
        assert "CPU" in node["resources"], f"{name}: GCP does not detect CPUs; state them"
        accelerators = node["node_config"].get("guestAccelerators", [])
        assert node["resources"].get("GPU", 0) == sum(a["acceleratorCount"] for a in accelerators), name
    assert {"onHostMaintenance": "TERMINATE"} in types["gpu_worker"]["node_config"]["scheduling"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gpu_workers_install_the_cuda_build_of_the_pinned_torch_and_the_rest_the_cpu_build(name):
    prepared = validated(load(name))
    pin = torch_pin()
    for node_type in ("head", "gpu_worker", "cpu_worker"):
        (install,) = [c for c in setup_of(prepared, node_type) if f'"{pin}"' in c]
        cpu_index = "--index-url https://download.pytorch.org/whl/cpu" in install
        assert cpu_index == (node_type != "gpu_worker"), f"{node_type}: {install}"
    assert any("torch.cuda.is_available()" in c for c in setup_of(prepared, "gpu_worker"))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_node_installs_this_project_from_the_mounted_code(name):
    config = load(name)
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    mounted = {Path(local).name for local in config["file_mounts"].values() if local.startswith("./")}
    # pip install -e needs pyproject.toml, the README it names, and every package it includes.
    assert {"pyproject.toml", "README.md"} | {p.rstrip("*") for p in packages} <= mounted
    for remote, local in config["file_mounts"].items():
        if local.startswith("./"):
            assert (REPO / local).exists(), f"{CONFIGS[name].name}: file_mounts {remote}: {local} does not exist"
    prepared = validated(config)
    for node_type in prepared["available_node_types"]:
        assert any('-e "$HOME/mssd-hpsearch' in c for c in setup_of(prepared, node_type)), node_type


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_node_starts_ray_with_token_authentication(name):
    config = load(name)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert "export RAY_AUTH_MODE=token;" in start, key
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-port=8265" in head_start


def test_gcp_variant_sets_nodes_up_exactly_like_the_aws_config():
    aws, gcp = validated(load("aws")), validated(load("gcp"))
    assert setup_of(gcp, "gpu_worker") == setup_of(aws, "gpu_worker")
    assert setup_of(gcp, "cpu_worker") == setup_of(aws, "cpu_worker")
    assert setup_of(gcp, "head")[:-1] == setup_of(aws, "head")[:-1]  # last: the cloud's client library
    assert gcp["file_mounts"] == aws["file_mounts"]


# Deliberately broken copies: each must be refused with the error `ray up` would give.
def _misspelled_top_level_key(config):
    config["max_worker"] = config.pop("max_workers")


def _gpu_worker_without_resources(config):
    del config["available_node_types"]["gpu_worker"]["resources"]


def _head_type_not_declared(config):
    config["head_node_type"] = "ray.head.default"


def _min_workers_above_cluster_max(config):
    config["available_node_types"]["gpu_worker"]["min_workers"] = config["max_workers"] + 1


def _fractional_cpu_resource(config):
    config["available_node_types"]["head"]["resources"] = {"CPU": 0.5}


BROKEN = [
    (_misspelled_top_level_key, jsonschema.ValidationError, r"'max_worker' was unexpected"),
    (_gpu_worker_without_resources, jsonschema.ValidationError, r"'resources' is a required property"),
    (_head_type_not_declared, ValueError, r"`head_node_type` must be one of `available_node_types`"),
    (_min_workers_above_cluster_max, ValueError, r"global `max_workers` is smaller than the sum of `min_workers`"),
    (_fractional_cpu_resource, jsonschema.ValidationError, r"0\.5 is not of type 'integer'"),
]


@pytest.mark.parametrize("breakage, error, message", BROKEN, ids=[b[0].__name__.strip("_") for b in BROKEN])
def test_broken_copy_of_cluster_yaml_is_rejected_with_rays_error(breakage, error, message):
    config = load("aws")
    breakage(config)
    with pytest.raises(error, match=message):
        validated(config)
