"""cluster.yaml (AWS) and tuning/cluster_configs/gcp.yaml, checked offline against Ray's own
schema and defaults: what `ray up` would reject is caught here, without a cloud account."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

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


def locked_version(lock: str, package: str) -> str:
    """The version `requirements/<lock>` pins for `package` on Linux x86_64 with Python 3.11, as on the nodes."""
    from tests.test_locks import pins

    return pins(lock, {"sys_platform": "linux", "platform_machine": "x86_64", "python_full_version": "3.11.0"})[package]


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
    # Turing (T4) or newer: torch's CUDA 13.0 build runs on nothing older (p3's V100 is Volta).
    assert gpu["node_config"]["InstanceType"].split(".")[0] in {"g4dn", "g5", "g6", "g6e", "p4d", "p5"}
    assert gpu["resources"] == {}  # AWS: CPU and GPU counts come from the instance type


def test_gcp_node_types_state_resources_that_match_their_accelerators():
    types = load("gcp")["available_node_types"]
    for name, node in types.items():
        assert "CPU" in node["resources"], f"{name}: GCP does not detect CPUs; state them"
        accelerators = node["node_config"].get("guestAccelerators", [])
        assert node["resources"].get("GPU", 0) == sum(a["acceleratorCount"] for a in accelerators), name
    assert {"onHostMaintenance": "TERMINATE"} in types["gpu_worker"]["node_config"]["scheduling"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_node_runs_rays_image_of_the_locked_ray_on_a_python_the_project_supports(name):
    prepared = validated(load(name))
    docker = prepared["docker"]
    # One image for all: no head/worker image and no node type with an image of its own.
    assert not {"head_image", "worker_image"} & set(docker)
    assert all("docker" not in node for node in prepared["available_node_types"].values())
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-(gpu|cu\d+)", docker["image"])
    assert match, f"{docker['image']}: not a release of Ray's CUDA image"
    ray_version, python_minor = match[1], int(match[2])
    assert ray_version == locked_version("cuda.txt", "ray") == locked_version("cpu.txt", "ray")
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"3.{python_minor}" in SpecifierSet(requires_python)
    # The baked image of the README's faster boot starts from the same image.
    assert f"FROM {docker['image']}\n" in (REPO / "docker" / "Dockerfile").read_text()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_node_installs_the_cuda_lock_then_the_project_and_gpu_workers_check_cuda(name):
    prepared = validated(load(name))
    install_lock = "python -m pip install --quiet --no-cache-dir -r ~/mssd-hpsearch/requirements/cuda.txt"
    install_project = "python -m pip install --quiet --no-deps -e ~/mssd-hpsearch"
    for node_type in prepared["available_node_types"]:
        assert setup_of(prepared, node_type)[:2] == [install_lock, install_project], node_type
    (check,) = setup_of(prepared, "gpu_worker")[2:]
    assert "torch.cuda.is_available()" in check
    assert len(setup_of(prepared, "head")) == len(setup_of(prepared, "cpu_worker")) == 2


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
    assert config["file_mounts"]["~/mssd-hpsearch/requirements"] == "./requirements"  # the lock it installs


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_node_starts_ray_with_token_authentication(name):
    config = load(name)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        assert "export RAY_AUTH_MODE=token;" in start, key
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-port=8265" in head_start


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_dashboard_listens_on_the_heads_loopback_only(name):
    """The README reaches it through `ray dashboard` (SSH forwarding): no node needs it from outside."""
    config = load(name)
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in yaml.safe_dump(config)


def test_gcp_variant_sets_nodes_up_exactly_like_the_aws_config():
    aws, gcp = validated(load("aws")), validated(load("gcp"))
    for node_type in aws["available_node_types"]:
        assert setup_of(gcp, node_type) == setup_of(aws, node_type), node_type
    assert gcp["docker"] == aws["docker"]
    assert gcp["file_mounts"] == aws["file_mounts"]
    assert gcp["head_start_ray_commands"] == aws["head_start_ray_commands"]
    assert gcp["worker_start_ray_commands"] == aws["worker_start_ray_commands"]


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
