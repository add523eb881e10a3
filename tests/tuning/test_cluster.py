"""tuning.cluster: how big the cluster may grow, from the autoscaler's configuration on a `ray up` head."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config

from tuning import cluster
from tuning.cluster import autoscaler_maximum, connect, describe

REPO = Path(__file__).resolve().parents[2]

SMALL = {
    "max_workers": 8,
    "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 1, "max_workers": 8},
        "cpu_worker": {"resources": {"CPU": 16}, "min_workers": 0, "max_workers": 4},
    },
}


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_each_resource_counts_the_nodes_richest_in_it_up_to_every_max_workers(tmp_path):
    # GPUs: 8 GPU workers. CPUs: 4 CPU workers (16 each) first, then 4 GPU workers (4 each) fill the cap of 8.
    assert autoscaler_maximum(write(tmp_path, SMALL)) == {"CPU": 4 * 16 + 4 * 4, "GPU": 8}


def test_the_clusters_max_workers_caps_the_node_types_together(tmp_path):
    config = copy.deepcopy(SMALL)
    config["max_workers"] = 3
    assert autoscaler_maximum(write(tmp_path, config)) == {"CPU": 3 * 16, "GPU": 3}


def test_the_head_counts_once_and_a_node_type_of_unknown_size_for_nothing(tmp_path):
    config = copy.deepcopy(SMALL)
    config["available_node_types"]["head"]["resources"] = {"CPU": 2}
    config["available_node_types"]["gpu_worker"]["resources"] = {}
    assert autoscaler_maximum(write(tmp_path, config)) == {"CPU": 2 + 4 * 16, "GPU": 0}


def test_no_file_or_a_broken_one_means_unknown(tmp_path):
    assert autoscaler_maximum(tmp_path / "missing.yaml") is None
    (tmp_path / "broken.yaml").write_text("available_node_types: [")
    assert autoscaler_maximum(tmp_path / "broken.yaml") is None
    (tmp_path / "other.yaml").write_text("just: a mapping\n")
    assert autoscaler_maximum(tmp_path / "other.yaml") is None


def test_reads_the_gcp_config_as_ray_up_writes_it_to_the_head(tmp_path):
    """`ray up` writes the prepared config as JSON (a YAML subset); GCP states every node type's resources."""
    prepared = prepare_config(yaml.safe_load((REPO / "tuning" / "cluster_configs" / "gcp.yaml").read_text()))
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(json.dumps(prepared))
    # 8 GPU workers of 1 GPU; CPUs: 4 CPU workers of 16, then 4 GPU workers of 8 (max_workers 8 in all).
    assert autoscaler_maximum(path) == {"CPU": 4 * 16 + 4 * 8, "GPU": 8}


def test_connect_reports_the_maximum_when_an_autoscaler_config_is_there(ray_session, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "AUTOSCALER_CONFIG", write(tmp_path, SMALL))
    info = connect()  # reuses the session's instance, as a driver on a head joins its cluster
    assert not info.started_here and info.autoscaling
    assert (info.max_cpus, info.max_gpus) == (80, 8)
    assert (info.cpus, info.gpus) == (2, 0)
    assert "2 CPUs, 0 GPUs (up to 80 CPUs, 8 GPUs as the autoscaler adds nodes)" in describe(info)


def test_connect_without_an_autoscaler_config_reports_what_is_up(ray_session, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "AUTOSCALER_CONFIG", tmp_path / "missing.yaml")
    info = connect()
    assert not info.autoscaling and (info.max_cpus, info.max_gpus) == (info.cpus, info.gpus) == (2, 0)
    assert "up to" not in describe(info)
