"""Cluster-launcher configs (`ray up`) checked against the schema Ray itself ships, plus what lstm-tune relies on."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from tests.conftest import REPO

CONFIGS = sorted((REPO / "deploy" / "ray-cluster").glob("*.yaml"))
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"aws.yaml", "local.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_matches_rays_schema(path: Path) -> None:
    jsonschema.validate(load(path), SCHEMA)


def test_schema_refuses_a_mistyped_key() -> None:
    broken = copy.deepcopy(load(REPO / "deploy" / "ray-cluster" / "aws.yaml"))
    broken["max_worker"] = broken.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(broken, SCHEMA)
    broken = copy.deepcopy(load(REPO / "deploy" / "ray-cluster" / "aws.yaml"))
    broken["available_node_types"]["gpu"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_head_only_coordinates(path: Path) -> None:
    cfg = load(path)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "trials must not land on the head"
    assert any("--num-cpus=0" in c for c in cfg["head_start_ray_commands"])
    assert all("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"] if "--head" in c)
    workers = [t for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]]
    assert workers and sum(t["max_workers"] for t in workers) <= cfg["max_workers"]


def test_aws_gpu_group_autoscales_with_matching_ray_and_no_keys() -> None:
    cfg = load(REPO / "deploy" / "ray-cluster" / "aws.yaml")
    gpu = cfg["available_node_types"]["gpu"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and gpu["resources"]["GPU"] >= 1
    version = ray.__version__.rsplit(".", 1)[0]  # the pinned minor: 2.58
    for key in ("image", "head_image"):
        image = cfg["docker"][key]
        assert re.fullmatch(rf"rayproject/ray:{re.escape(version)}\.\d+-py311-(cpu|gpu)", image), image
    assert cfg["docker"]["image"].endswith("-gpu") and cfg["docker"]["head_image"].endswith("-cpu")
    for node_type in cfg["available_node_types"].values():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"], "S3 access through an instance profile"
    text = (REPO / "deploy" / "ray-cluster" / "aws.yaml").read_text()
    assert not re.search(r"(?i)aws_secret|aws_access_key|secret_access", text), "no credentials in the config"
    assert any("pip install -e /home/ray/lstm-tune" in c for c in cfg["setup_commands"])


def test_tests_run_the_local_layout() -> None:
    from tests.raycluster import LocalCluster

    c = LocalCluster.from_launcher_config(REPO / "deploy" / "ray-cluster" / "local.yaml")
    assert (c.workers, c.worker_cpus) == (2, 1)
