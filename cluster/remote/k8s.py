"""``lstm-tune k8s render``: the KubeRay manifests under ``deploy/k8s`` built for one experiment.

The manifests are a kustomize tree (``kubectl apply -k`` works on it directly); this module builds the same objects
without kubectl (resources plus RFC 6902 patches, the subset the tree uses; the tests compare the result with
``kubectl kustomize``), then applies the experiment's settings (image, S3 location, ``lstm-tune run`` options) and
checks the operator's rules, so a bad value is refused with its name before anything reaches a cluster.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster.plan.options import OptionError, RunOptions
from cluster.remote.k8s_objects import cluster_spec, pod_templates
from cluster.remote.k8s_rules import check_objects

OVERLAYS = ("base", "cpu-dev", "gpu")
RAY_KINDS = ("RayCluster", "RayJob")

# Settings that are not `lstm-tune run` options; every other key is passed to the RayJob's entrypoint as --key.
SETTINGS_HELP = {
    "image": "image of the head, CPU workers, job submitter and TensorBoard (the CPU variant is enough)",
    "gpu-image": "image of the GPU worker group (gpu overlay; the CUDA variant)",
    "storage": "s3://bucket/prefix for experiments (required)",
    "name": "experiment name; also the RayJob's name (DNS-1035, at most 47 characters)",
    "max-workers": "largest size of each worker group (autoscaling upper bound)",
    "role-arn": "IAM role for the service account (IRSA annotation eks.amazonaws.com/role-arn)",
    "namespace": "namespace of every object",
}
FIXED_RUN_FLAGS = ("resume-if-exists", "address", "json")
"""Run options the deployment owns: it always resumes on retry, joins its own cluster, prints tables to the log."""


RunParser = Callable[[list[str]], RunOptions]
"""``lstm-tune run`` arguments -> the options they make."""


class ManifestError(ValueError):
    """A manifest tree that cannot be built (missing file, unsupported kustomize feature, bad patch)."""


def default_root() -> Path:
    """``deploy/k8s`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def overlay_dir(root: Path, overlay: str) -> Path:
    if overlay not in OVERLAYS:
        raise OptionError(f"--overlay = {overlay!r}: must be one of {', '.join(OVERLAYS)}")
    path = root / "base" if overlay == "base" else root / "overlays" / overlay
    if not (path / "kustomization.yaml").is_file():
        raise ManifestError(f"{path}: no kustomization.yaml (run from a checkout of lstm-tune, or pass --dir)")
    return path


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects a kustomization yields: its resources (files or kustomizations), then its patches in order."""
    spec = _load_one(directory / "kustomization.yaml")
    allowed = {"apiVersion", "kind", "resources", "patches"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ManifestError(f"{directory}/kustomization.yaml: {', '.join(extra)} not supported by this renderer")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        objects += build(path) if path.is_dir() else _load_all(path)
    for patch in spec.get("patches", []):
        target = patch.get("target") or {}
        ops = _load_one(directory / patch["path"]) if "path" in patch else yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            raise ManifestError(f"{directory}: patch {patch}: only RFC 6902 (JSON patch) lists are supported")
        matched = [o for o in objects if _matches(o, target)]
        if not matched:
            raise ManifestError(f"{directory}: patch target {target} matches no object")
        for obj in matched:
            apply_json_patch(obj, ops)
    return objects


def _matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    return all(
        (key != "kind" or obj.get("kind") == value) and (key != "name" or obj["metadata"].get("name") == value)
        for key, value in target.items()
    )


def _load_one(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found") from None


def _load_all(path: Path) -> list[dict[str, Any]]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found") from None


def apply_json_patch(doc: Any, ops: list[dict[str, Any]]) -> None:
    """RFC 6902 ``add``, ``replace`` and ``remove`` (``-`` appends to a list), in place."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, list):
            if kind == "add":
                parent.insert(len(parent) if last == "-" else int(last), value)
            elif kind == "replace":
                parent[int(last)] = value
            elif kind == "remove":
                del parent[int(last)]
            else:
                raise ManifestError(f"patch op {kind!r} at {op['path']}: only add, replace, remove")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise ManifestError(f"patch replace {op['path']}: no such field")
            parent[last] = value
        elif kind == "remove":
            del parent[last]
        else:
            raise ManifestError(f"patch op {kind!r} at {op['path']}: only add, replace, remove")


@dataclass(frozen=True)
class Settings:
    """What ``--set key=value`` asked for, split into deployment settings and ``lstm-tune run`` options."""

    deploy: dict[str, str]
    run: dict[str, str]

    @classmethod
    def parse(cls, pairs: list[str]) -> Settings:
        deploy: dict[str, str] = {}
        run: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            key = key.strip().lstrip("-").replace("_", "-")
            if not sep or not key:
                raise OptionError(f"--set {pair!r}: expected name=value, e.g. --set storage=s3://bucket/experiments")
            if key in FIXED_RUN_FLAGS:
                raise OptionError(f"--set {key}: fixed by the deployment (it always resumes from S3)")
            (deploy if key in SETTINGS_HELP else run)[key] = value
        return cls(deploy=deploy, run=run)


def entrypoint_args(entrypoint: str) -> list[str]:
    words = shlex.split(entrypoint)
    if words[:2] != ["lstm-tune", "run"]:
        raise ManifestError(f"RayJob entrypoint {entrypoint!r}: must start with `lstm-tune run`")
    return words[2:]


def set_flag(args: list[str], flag: str, value: str | None) -> list[str]:
    """``--flag value`` replaced or appended (``value`` None: a bare switch, added once)."""
    out = list(args)
    name = f"--{flag}"
    if name in out:
        i = out.index(name)
        if value is None:
            return out
        if i + 1 < len(out) and not out[i + 1].startswith("--"):
            out[i + 1] = value
        else:
            out.insert(i + 1, value)
        return out
    return [*out, name] if value is None else [*out, name, value]


def render(
    overlay: str, pairs: list[str], root: Path | None = None, *, parse_run: RunParser | None = None
) -> list[dict[str, Any]]:
    """Build ``overlay`` and apply the ``--set`` pairs; raises OptionError naming a bad setting.

    ``parse_run`` turns the RayJob's ``lstm-tune run`` arguments into options, which are then planned and fitted to
    the worker pods (``lstm-tune k8s render`` passes the CLI's own parser); without it the entrypoint is not checked.
    """
    settings = Settings.parse(pairs)
    objects = build(overlay_dir(root or default_root(), overlay))
    storage = settings.deploy.get("storage")
    if not storage:
        raise OptionError("--set storage=s3://BUCKET/PREFIX is required: on Kubernetes experiments live in S3")
    if not storage.startswith("s3://") or len(storage) <= len("s3://"):
        raise OptionError(f"--set storage = {storage!r}: must be s3://bucket/prefix (pods share no disk)")
    name = settings.deploy.get("name", "lstm-tune")
    for obj in objects:
        if "namespace" in settings.deploy:
            obj["metadata"]["namespace"] = settings.deploy["namespace"]
        _apply_images(obj, settings.deploy)
        if obj["kind"] == "RayJob":
            obj["metadata"]["name"] = name
            obj["spec"]["entrypoint"] = _entrypoint(obj["spec"]["entrypoint"], settings, storage, name)
        if obj["kind"] in RAY_KINDS and "max-workers" in settings.deploy:
            _set_max_workers(obj, settings.deploy["max-workers"])
        if obj["kind"] == "Deployment":
            command = obj["spec"]["template"]["spec"]["containers"][0]["command"]
            command[2] = f"{storage.rstrip('/')}/{name}"
        if obj["kind"] == "ServiceAccount" and "role-arn" in settings.deploy:
            obj["metadata"].setdefault("annotations", {})["eks.amazonaws.com/role-arn"] = settings.deploy["role-arn"]
    problems = check_objects(objects)
    if problems:
        raise OptionError("the rendered manifests break these rules:\n  " + "\n  ".join(problems))
    if parse_run is not None:
        _check_run(objects, parse_run)
    return objects


def _entrypoint(entrypoint: str, settings: Settings, storage: str, name: str) -> str:
    args = entrypoint_args(entrypoint)
    for key, value in settings.run.items():
        args = set_flag(args, key, value)
    args = set_flag(args, "storage", storage)
    args = set_flag(args, "name", name)
    args = set_flag(args, "resume-if-exists", None)
    return shlex.join(["lstm-tune", "run", *args])


def _apply_images(obj: dict[str, Any], deploy: dict[str, str]) -> None:
    image, gpu_image = deploy.get("image"), deploy.get("gpu-image")
    for group, template in pod_templates(obj):
        for container in template["spec"].get("containers", []):
            if group == "gpu" and gpu_image:
                container["image"] = gpu_image
            elif group != "gpu" and image:
                container["image"] = image


def _set_max_workers(obj: dict[str, Any], value: str) -> None:
    try:
        count = int(value)
    except ValueError:
        raise OptionError(f"--set max-workers = {value!r}: must be a whole number >= 1") from None
    if count < 1:
        raise OptionError(f"--set max-workers = {count}: must be >= 1")
    for group in cluster_spec(obj).get("workerGroupSpecs", []):
        group["maxReplicas"] = count


def _check_run(objects: list[dict[str, Any]], parse_run: RunParser) -> None:
    """The entrypoint parses as ``lstm-tune run`` would, its search space loads, and trials fit the worker pods."""
    from cluster.plan.planning import plan

    for obj in objects:
        if obj["kind"] != "RayJob":
            continue
        opts = parse_run(entrypoint_args(obj["spec"]["entrypoint"]))
        plan(opts)
        cpus, gpus = worker_capacity(obj)
        opts.resources.check_fits(cpus, gpus)


def worker_capacity(obj: dict[str, Any]) -> tuple[list[float], list[float]]:
    """CPUs of each kind of worker pod and GPUs of the GPU ones, from their container limits."""
    cpus: list[float] = []
    gpus: list[float] = []
    for group in cluster_spec(obj).get("workerGroupSpecs", []):
        limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        cpus.append(parse_cpu(str(limits.get("cpu", "0"))))
        if "nvidia.com/gpu" in limits:
            gpus.append(float(limits["nvidia.com/gpu"]))
    return cpus, gpus


def parse_cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return "---\n".join(yaml.dump(o, Dumper=Dumper, sort_keys=False, width=200) for o in objects)


def write_kustomization(objects: list[dict[str, Any]], out_dir: Path) -> None:
    """``out_dir/manifests.yaml`` plus a kustomization naming it, for ``kubectl apply -k out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifests.yaml").write_text(to_yaml(objects))
    (out_dir / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - manifests.yaml\n"
    )


__all__ = [
    "OVERLAYS",
    "SETTINGS_HELP",
    "ManifestError",
    "Settings",
    "apply_json_patch",
    "build",
    "cluster_spec",
    "default_root",
    "pod_templates",
    "render",
    "to_yaml",
    "worker_capacity",
    "write_kustomization",
]
