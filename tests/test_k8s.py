"""Kubernetes manifests, validated offline: the renderer against ``kubectl kustomize``, every object against the
KubeRay v1.7.0 CRDs (defaults, unknown fields, CEL) and the Kubernetes schemas, and each operator rule and pod
convention against a manifest that breaks it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cluster.cli import app
from cluster.remote.k8s import build, cluster_spec, default_root, overlay_dir, pod_templates, render
from cluster.remote.k8s_rules import RULES, check_objects
from tests.k8s_schema import CRDS, apply_defaults, crd_schema, kustomize, validate, validate_builtin

OVERLAYS = ("base", "cpu-dev", "gpu")
STORAGE = "storage=s3://experiments-bucket/lstm-tune"

pytestmark = pytest.mark.skipif(not CRDS.exists(), reason="../shared/k8s not present")


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def rendered(overlay: str = "gpu", *pairs: str) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in render(overlay, [STORAGE, *pairs])}


@pytest.mark.integration  # kubectl kustomize in a subprocess per overlay
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_builds_what_kubectl_kustomize_builds(overlay: str) -> None:
    ours = by_key(build(overlay_dir(default_root(), overlay)))
    theirs = by_key(kustomize(overlay_dir(default_root(), overlay)))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == theirs[key], f"{overlay}: {key} differs from kubectl kustomize"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_the_real_schemas_and_rules(overlay: str) -> None:
    objects = render(overlay, [STORAGE])
    assert {o["kind"] for o in objects} == {"ServiceAccount", "RayJob", "RayCluster", "Deployment", "Service"}
    for obj in objects:
        assert validate(obj) == [], f"{overlay}: {obj['kind']}"
    assert check_objects(objects) == []


def test_schema_rejects_unknown_fields_that_the_api_server_would_drop() -> None:
    job = rendered()["RayJob"]
    typo = copy.deepcopy(job)
    typo["spec"]["entrypint"] = typo["spec"].pop("entrypoint")
    assert any("entrypint" in e for e in validate(typo))
    deep = copy.deepcopy(job)
    deep["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    assert any("maxReplica" in e for e in validate(deep))
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert any("num-cpus" in e or "is not of type 'string'" in e for e in validate(wrong_type))


def test_schema_defaults_are_applied_before_validation() -> None:
    cluster = rendered()["RayCluster"]
    group = cluster["spec"]["workerGroupSpecs"][0]
    del group["minReplicas"]
    defaulted = apply_defaults(crd_schema("RayCluster"), copy.deepcopy(cluster))
    assert defaulted["spec"]["workerGroupSpecs"][0]["minReplicas"] == 0
    assert defaulted["spec"]["workerGroupSpecs"][0]["numOfHosts"] == 1
    job = rendered()["RayJob"]
    del job["spec"]["backoffLimit"]
    assert apply_defaults(crd_schema("RayJob"), job)["spec"]["backoffLimit"] == 0


def test_cel_rules_of_the_crds_are_evaluated() -> None:
    job = rendered()["RayJob"]
    managed = copy.deepcopy(job)
    managed["spec"]["managedBy"] = "someone-else"
    assert any("managedBy" in e for e in validate(managed))
    both = copy.deepcopy(job)
    both["spec"]["deletionStrategy"] = {
        "onSuccess": {"policy": "DeleteCluster"},
        "onFailure": {"policy": "DeleteNone"},
        "deletionRules": [{"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED"}}],
    }
    assert any("deletionStrategy" in e for e in validate(both))
    ok = copy.deepcopy(job)
    ok["spec"]["managedBy"] = "ray.io/kuberay-operator"
    assert validate(ok) == []


def test_pod_templates_and_builtin_kinds_are_checked_by_the_kubernetes_schemas() -> None:
    cluster = rendered()["RayCluster"]
    bad_pod = copy.deepcopy(cluster)
    bad_pod["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert validate(bad_pod), "a string containerPort must fail"
    deployment = rendered()["Deployment"]
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert validate_builtin(unknown)
    service = rendered()["Service"]
    bad_service = copy.deepcopy(service)
    bad_service["spec"]["ports"][0]["port"] = "six thousand"
    assert validate_builtin(bad_service)


def test_secret_template_is_a_valid_secret_without_values_and_every_pod_reads_it_optionally() -> None:
    secret = yaml.safe_load((default_root() / "secret.template.yaml").read_text())
    assert validate_builtin(secret) == []
    assert set(secret["stringData"]) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL_S3",
    }
    assert check_objects([secret]) == [], "the template carries no values"
    base = (default_root() / "base" / "kustomization.yaml").read_text()
    assert "secret" not in base.split("resources:")[1], "the template is not applied by the kustomization"
    for obj in render("gpu", [STORAGE]):
        for role, template in pod_templates(obj):
            if role == "submitter":
                continue
            refs = template["spec"]["containers"][0].get("envFrom", [])
            assert {"secretRef": {"name": "lstm-tune-s3", "optional": True}} in refs, f"{obj['kind']} {role}"


def test_settings_reach_every_object() -> None:
    objects = rendered(
        "gpu",
        "image=registry.example.com/lstm-tune:9-cpu",
        "gpu-image=registry.example.com/lstm-tune:9",
        "name=pm25-ablation",
        "space=forecast-small",
        "scheduler=pbt",
        "gpus-per-trial=0.25",
        "max-workers=8",
        "role-arn=arn:aws:iam::123456789012:role/lstm-tune",
        "namespace=ml",
    )
    job = objects["RayJob"]
    assert job["metadata"]["name"] == "pm25-ablation"
    entry = job["spec"]["entrypoint"].split()
    for flag, value in {
        "--space": "forecast-small",
        "--scheduler": "pbt",
        "--gpus-per-trial": "0.25",
        "--storage": "s3://experiments-bucket/lstm-tune",
        "--name": "pm25-ablation",
    }.items():
        assert entry[entry.index(flag) + 1] == value
    assert entry.count("--resume-if-exists") == 1
    for obj in (job, objects["RayCluster"]):
        for role, template in pod_templates(obj):
            image = template["spec"]["containers"][0]["image"]
            assert image == (
                "registry.example.com/lstm-tune:9" if role == "gpu" else "registry.example.com/lstm-tune:9-cpu"
            )
        assert {g["maxReplicas"] for g in cluster_spec(obj)["workerGroupSpecs"]} == {8}
    board = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert board[:3] == ["lstm-tune", "tensorboard", "s3://experiments-bucket/lstm-tune/pm25-ablation"]
    annotations = objects["ServiceAccount"]["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/lstm-tune"
    assert {o["metadata"]["namespace"] for o in objects.values()} == {"ml"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--set storage=s3://BUCKET/PREFIX is required"),
        (["--set", "storage=/mnt/shared"], "must be s3://bucket/prefix"),
        (["--set", STORAGE, "--set", "storage"], "expected name=value"),
        (["--set", STORAGE, "--overlay", "tpu"], "--overlay = 'tpu': must be one of base, cpu-dev, gpu"),
        (["--set", STORAGE, "--set", "spce=forecast"], "No such option: --spce"),
        (["--set", STORAGE, "--set", "space=nope"], "search space 'nope'"),
        (["--set", STORAGE, "--set", "cpus-per-trial=8"], "--cpus-per-trial = 8: no node has that many CPUs"),
        (["--set", STORAGE, "--set", "gpus-per-trial=1"], "no node has"),
        (["--overlay", "gpu", "--set", STORAGE, "--set", "gpus-per-trial=2"], "--gpus-per-trial = 2"),
        (["--set", STORAGE, "--set", "max-workers=0"], "--set max-workers = 0: must be >= 1"),
        (["--set", STORAGE, "--set", "name=Tune_PM25"], "not a valid DNS-1035 label"),
        (["--set", STORAGE, "--set", "name=" + "a" * 48], "name is 48 characters; KubeRay allows at most 47"),
        (["--set", STORAGE, "--set", "resume-if-exists=false"], "fixed by the deployment"),
    ],
)
def test_render_refuses_bad_settings_naming_them(args: list[str], message: str) -> None:
    done = CliRunner().invoke(app, ["k8s", "render", *args])
    assert done.exit_code == 2, done.output
    assert message in done.output


def test_render_writes_a_kustomization_that_kubectl_builds(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["k8s", "render", "--overlay", "cpu-dev", "--set", STORAGE])
    assert printed.exit_code == 0, printed.output
    written = runner.invoke(
        app, ["k8s", "render", "--overlay", "cpu-dev", "--set", STORAGE, "--out-dir", str(tmp_path)]
    )
    assert written.exit_code == 0, written.output
    assert by_key(kustomize(tmp_path)) == by_key([d for d in yaml.safe_load_all(printed.stdout) if d])


# One manifest per rule that breaks it; every rule in RULES must appear here.
Mutation = Callable[[dict[str, dict[str, Any]]], dict[str, Any]]


def _job(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objs["RayJob"]


def _cluster(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objs["RayCluster"]


def _head(obj: dict[str, Any]) -> dict[str, Any]:
    return cluster_spec(obj)["headGroupSpec"] if obj["kind"] == "RayJob" else obj["spec"]["headGroupSpec"]


def _gpu_group(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["rayClusterSpec"] if obj["kind"] == "RayJob" else obj["spec"]
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")


def breaks_names(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    objs["RayCluster"]["metadata"]["name"] = "c" * 54
    return objs["RayCluster"]


def breaks_container_order(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = _head(_cluster(objs))["template"]["spec"]["containers"]
    containers.insert(0, {"name": "log-shipper", "image": "busybox"})
    return _cluster(objs)


def breaks_requests(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _gpu_group(_job(objs))["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] = "8Gi"
    return _job(objs)


def breaks_head_cpus(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _head(_job(objs))["rayStartParams"]["num-cpus"] = "2"
    return _job(objs)


def breaks_param_strings(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _gpu_group(_cluster(objs))["rayStartParams"]["num-gpus"] = 1
    return _cluster(objs)


def breaks_resources_in_one_place(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    group = _gpu_group(_cluster(objs))
    group["rayStartParams"]["num-gpus"] = "1"
    group["resources"] = {"GPU": "1"}
    return _cluster(objs)


def breaks_security(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = objs["Deployment"]["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    return objs["Deployment"]


def breaks_cluster_ip(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _head(_cluster(objs))["serviceType"] = "LoadBalancer"
    return _cluster(objs)


def breaks_ttl(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _job(objs)["spec"]["shutdownAfterJobFinishes"] = False
    return _job(objs)


def breaks_shutdown(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _job(objs)["spec"]["shutdownAfterJobFinishes"] = False
    _job(objs)["spec"]["ttlSecondsAfterFinished"] = 0
    return _job(objs)


def breaks_submission_mode(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _job(objs)["spec"]["submissionMode"] = "K8sJob"
    return _job(objs)


def breaks_deadlines(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    del _job(objs)["spec"]["activeDeadlineSeconds"]
    return _job(objs)


def breaks_resume(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = _job(objs)["spec"]
    spec["entrypoint"] = spec["entrypoint"].replace(" --resume-if-exists", "")
    return _job(objs)


def breaks_autoscaler(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _cluster(objs)["spec"]["autoscalerOptions"]["version"] = "v1"
    return _cluster(objs)


def breaks_worker_groups(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _gpu_group(_cluster(objs))["minReplicas"] = 5
    return _cluster(objs)


def breaks_gpu_groups(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    del _gpu_group(_job(objs))["template"]["spec"]["tolerations"]
    return _job(objs)


def breaks_credentials(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    container = _head(_cluster(objs))["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "AWS_SECRET_ACCESS_KEY", "value": "not-a-real-key"}]
    return _cluster(objs)


def breaks_ray_version(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _job(objs)["spec"]["rayClusterSpec"]["rayVersion"] = "2.9.0"
    return _job(objs)


BREAKERS: dict[str, tuple[Mutation, str]] = {
    "names": (breaks_names, "KubeRay allows at most 53"),
    "ray-container-first": (breaks_container_order, "'ray-head' must come first"),
    "requests-equal-limits": (breaks_requests, "memory request '8Gi' != limit '48Gi'"),
    "head-schedules-nothing": (breaks_head_cpus, "num-cpus = '2'"),
    "ray-start-params-strings": (breaks_param_strings, "rayStartParams.num-gpus = 1 must be a string"),
    "resources-in-one-place": (breaks_resources_in_one_place, "both rayStartParams and resources"),
    "restricted-security": (breaks_security, "allowPrivilegeEscalation must be false"),
    "cluster-ip-only": (breaks_cluster_ip, "serviceType = 'LoadBalancer'"),
    "ttl-needs-shutdown": (breaks_ttl, "ttlSecondsAfterFinished = 600 needs shutdownAfterJobFinishes: true"),
    "job-shuts-down": (breaks_shutdown, "shutdownAfterJobFinishes must be true"),
    "submission-mode": (breaks_submission_mode, "submissionMode = 'K8sJob'"),
    "job-deadlines": (breaks_deadlines, "activeDeadlineSeconds = None"),
    "entrypoint-resumes-from-s3": (breaks_resume, "lacks --resume-if-exists"),
    "autoscaler-v2": (breaks_autoscaler, "autoscalerOptions.version: v2"),
    "worker-groups": (breaks_worker_groups, "minReplicas (5) <= replicas (0)"),
    "gpu-groups": (breaks_gpu_groups, "nvidia.com/gpu toleration"),
    "no-credentials": (breaks_credentials, "env AWS_SECRET_ACCESS_KEY has a literal value"),
    "ray-version": (breaks_ray_version, "rayVersion = '2.9.0'"),
}


def test_every_rule_has_a_manifest_that_breaks_it() -> None:
    assert set(BREAKERS) == set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_refuses_a_manifest_that_breaks_it(rule: str) -> None:
    mutate, message = BREAKERS[rule]
    objs = rendered("gpu")
    assert RULES[rule](objs["RayJob"]) == [] and RULES[rule](objs["RayCluster"]) == []
    broken = mutate(objs)
    problems = RULES[rule](broken)
    assert any(message in p for p in problems), problems
    assert any(message in p for p in check_objects([broken]))
