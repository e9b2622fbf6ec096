"""Rules the CRD schemas do not carry: the KubeRay operator's own checks, and lstm-tune's pod conventions.

Each rule is a small function of one object returning what it breaks (empty: fine). ``lstm-tune k8s render`` runs
them all before printing; the tests feed each one a manifest that breaks it. The operator's rules follow KubeRay
v1.7's ``ValidateRayClusterMetadata``, ``ValidateRayJobMetadata``, ``ValidateRayJobSpec`` and
``ValidateRayClusterSpec``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

from cluster.remote.k8s_objects import cluster_spec, pod_templates

RAY_VERSION = "2.58.1"
MAX_RAYCLUSTER_NAME = 53  # KubeRay: 63 minus its longest service suffix ("-serve-svc")
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6  # the operator appends 6 characters for the job's cluster
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CREDENTIAL_ENV = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|SESSION_KEY|CREDENTIAL)", re.IGNORECASE)

Rule = Callable[[dict[str, Any]], list[str]]


def _where(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def names(obj: dict[str, Any]) -> list[str]:
    """RayCluster names: DNS-1035, <= 53 characters; RayJob names: DNS-1035, <= 47; others DNS-1123, <= 63."""
    name = str(obj.get("metadata", {}).get("name", ""))
    kind = obj.get("kind")
    limit = {"RayCluster": MAX_RAYCLUSTER_NAME, "RayJob": MAX_RAYJOB_NAME}.get(str(kind), 63)
    pattern = DNS1035 if kind in ("RayCluster", "RayJob") else DNS1123
    out = []
    if len(name) > limit:
        out.append(f"{_where(obj)}: name is {len(name)} characters; KubeRay allows at most {limit}")
    if not pattern.match(name):
        label = "DNS-1035 label (lower case, starts with a letter)" if pattern is DNS1035 else "DNS-1123 name"
        out.append(f"{_where(obj)}: name {name!r} is not a valid {label}")
    return out


def ray_container_first(obj: dict[str, Any]) -> list[str]:
    """KubeRay treats containers[0] as the Ray container: it must be ray-head / ray-worker."""
    out = []
    for role, template in pod_templates(obj):
        if role in ("submitter", "deployment"):
            continue
        containers = template["spec"].get("containers") or []
        expected = "ray-head" if role == "head" else "ray-worker"
        if not containers:
            out.append(f"{_where(obj)} {role}: no container (KubeRay needs the Ray container first)")
        elif containers[0].get("name") != expected:
            out.append(
                f"{_where(obj)} {role}: containers[0] is {containers[0].get('name')!r}; the Ray container "
                f"{expected!r} must come first"
            )
    return out


def requests_equal_limits(obj: dict[str, Any]) -> list[str]:
    """Every container sets CPU and memory requests equal to its limits (Guaranteed QoS; Ray sizes itself by them)."""
    out = []
    containers = [(role, c) for role, t in pod_templates(obj) for c in t["spec"].get("containers", [])]
    autoscaler = cluster_spec(obj).get("autoscalerOptions")
    if autoscaler and "resources" in autoscaler:
        containers.append(("autoscaler", {"name": "autoscaler", "resources": autoscaler["resources"]}))
    for role, c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for key in ("cpu", "memory"):
            if key not in lim:
                out.append(f"{_where(obj)} {role}/{c.get('name')}: no {key} limit")
            elif str(req.get(key)) != str(lim[key]):
                out.append(
                    f"{_where(obj)} {role}/{c.get('name')}: {key} request {req.get(key)!r} != limit {lim[key]!r}"
                )
        for key in set(req) | set(lim):
            if key not in ("cpu", "memory") and str(req.get(key, lim.get(key))) != str(lim.get(key)):
                out.append(f"{_where(obj)} {role}/{c.get('name')}: {key} request != limit")
    return out


def head_schedules_nothing(obj: dict[str, Any]) -> list[str]:
    """The head's rayStartParams has num-cpus "0": trials never land beside the GCS and the driver."""
    spec = cluster_spec(obj)
    if not spec:
        return []
    params = spec["headGroupSpec"].get("rayStartParams") or {}
    if params.get("num-cpus") != "0":
        return [f'{_where(obj)}: headGroupSpec.rayStartParams.num-cpus = {params.get("num-cpus")!r}; must be "0"']
    return []


def ray_start_params_are_strings(obj: dict[str, Any]) -> list[str]:
    spec = cluster_spec(obj)
    groups = [("head", spec["headGroupSpec"])] if spec else []
    groups += [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]
    return [
        f"{_where(obj)} {role}: rayStartParams.{key} = {value!r} must be a string (quote it)"
        for role, group in groups
        for key, value in (group.get("rayStartParams") or {}).items()
        if not isinstance(value, str)
    ]


def resources_in_one_place(obj: dict[str, Any]) -> list[str]:
    """Operator: a group sets resources in rayStartParams (num-cpus, num-gpus, memory, resources) or in
    ``resources``, not both; ``labels`` belong in the group's labels, not rayStartParams."""
    spec = cluster_spec(obj)
    groups = [("head", spec["headGroupSpec"])] if spec else []
    groups += [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]
    out = []
    for role, group in groups:
        params = group.get("rayStartParams") or {}
        if any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and group.get("resources"):
            out.append(f"{_where(obj)} {role}: resources set in both rayStartParams and resources")
        if "labels" in params:
            out.append(f"{_where(obj)} {role}: rayStartParams.labels is not supported; use the group's labels")
    return out


def restricted_security(obj: dict[str, Any]) -> list[str]:
    """Pod Security "restricted": non-root, RuntimeDefault seccomp, no privilege escalation, all capabilities dropped."""
    out = []
    for role, template in pod_templates(obj):
        pod = template["spec"].get("securityContext") or {}
        if pod.get("runAsNonRoot") is not True:
            out.append(f"{_where(obj)} {role}: securityContext.runAsNonRoot must be true")
        if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            out.append(f"{_where(obj)} {role}: securityContext.seccompProfile.type must be RuntimeDefault")
        for c in template["spec"].get("containers", []):
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{_where(obj)} {role}/{c.get('name')}: allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                out.append(f"{_where(obj)} {role}/{c.get('name')}: capabilities.drop must include ALL")
            if sc.get("privileged"):
                out.append(f"{_where(obj)} {role}/{c.get('name')}: privileged containers are not allowed")
    return out


def cluster_ip_only(obj: dict[str, Any]) -> list[str]:
    """The dashboard and TensorBoard are reached by port-forward: ClusterIP services, no ingress."""
    out = []
    if obj.get("kind") == "Ingress":
        out.append(f"{_where(obj)}: no Ingress; reach the dashboard with kubectl port-forward")
    if obj.get("kind") == "Service" and obj.get("spec", {}).get("type", "ClusterIP") != "ClusterIP":
        out.append(f"{_where(obj)}: type {obj['spec']['type']}; must be ClusterIP")
    spec = cluster_spec(obj)
    if spec:
        head = spec["headGroupSpec"]
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            out.append(f"{_where(obj)}: headGroupSpec.serviceType = {head['serviceType']!r}; must be ClusterIP")
        if head.get("enableIngress"):
            out.append(f"{_where(obj)}: headGroupSpec.enableIngress must be false (the dashboard has no auth)")
    return out


def ttl_needs_shutdown(obj: dict[str, Any]) -> list[str]:
    """Operator: ttlSecondsAfterFinished > 0 requires shutdownAfterJobFinishes: true (and is never negative)."""
    if obj.get("kind") != "RayJob":
        return []
    spec = obj["spec"]
    ttl = int(spec.get("ttlSecondsAfterFinished", 0))
    if ttl < 0:
        return [f"{_where(obj)}: ttlSecondsAfterFinished = {ttl}; must be >= 0"]
    if ttl > 0 and not spec.get("shutdownAfterJobFinishes"):
        return [f"{_where(obj)}: ttlSecondsAfterFinished = {ttl} needs shutdownAfterJobFinishes: true"]
    return []


def job_shuts_down(obj: dict[str, Any]) -> list[str]:
    """lstm-tune: a finished RayJob releases its cluster (shutdownAfterJobFinishes: true)."""
    if obj.get("kind") == "RayJob" and obj["spec"].get("shutdownAfterJobFinishes") is not True:
        return [f"{_where(obj)}: shutdownAfterJobFinishes must be true (a finished job frees its nodes)"]
    return []


def submission_mode(obj: dict[str, Any]) -> list[str]:
    """Operator: submissionMode is one of K8sJobMode, HTTPMode, InteractiveMode, SidecarMode (the schema takes any
    string); InteractiveMode allows no retries."""
    if obj.get("kind") != "RayJob":
        return []
    spec = obj["spec"]
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        return [f"{_where(obj)}: submissionMode = {mode!r}; must be one of {', '.join(SUBMISSION_MODES)}"]
    if mode == "InteractiveMode" and int(spec.get("backoffLimit") or 0) > 0:
        return [f"{_where(obj)}: backoffLimit is incompatible with InteractiveMode"]
    return []


def job_deadlines(obj: dict[str, Any]) -> list[str]:
    """Operator: activeDeadlineSeconds > 0 and backoffLimit >= 0; lstm-tune sets both, so a stuck job ends and a
    failed one is retried (and resumes)."""
    if obj.get("kind") != "RayJob":
        return []
    spec = obj["spec"]
    out = []
    deadline, backoff = spec.get("activeDeadlineSeconds"), spec.get("backoffLimit")
    if deadline is None or int(deadline) <= 0:
        out.append(f"{_where(obj)}: activeDeadlineSeconds = {deadline!r}; must be a positive number of seconds")
    if backoff is None or int(backoff) < 0:
        out.append(f"{_where(obj)}: backoffLimit = {backoff!r}; must be >= 0")
    return out


def entrypoint_resumes_from_s3(obj: dict[str, Any]) -> list[str]:
    """The RayJob runs ``lstm-tune run --storage s3://... --resume-if-exists``: a retry continues the experiment."""
    if obj.get("kind") != "RayJob":
        return []
    words = shlex.split(str(obj["spec"].get("entrypoint", "")))
    out = []
    if words[:2] != ["lstm-tune", "run"]:
        out.append(f"{_where(obj)}: entrypoint must be `lstm-tune run ...`")
    if "--resume-if-exists" not in words:
        out.append(f"{_where(obj)}: entrypoint lacks --resume-if-exists (a retry would start the experiment over)")
    storage = words[words.index("--storage") + 1] if "--storage" in words[:-1] else ""
    if not storage.startswith("s3://"):
        out.append(f"{_where(obj)}: entrypoint --storage = {storage!r}; must be s3:// (pods share no disk)")
    return out


def autoscaler_v2(obj: dict[str, Any]) -> list[str]:
    """Autoscaler v2 through spec.autoscalerOptions.version (not also the env var); with it, restartPolicy Never
    or unset; the env var alone without in-tree autoscaling is refused by the operator."""
    spec = cluster_spec(obj)
    if not spec:
        return []
    out = []
    head_env = {e.get("name") for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0].get("env", [])}
    enabled = bool(spec.get("enableInTreeAutoscaling"))
    version = (spec.get("autoscalerOptions") or {}).get("version")
    if not enabled or version != "v2":
        out.append(f"{_where(obj)}: needs enableInTreeAutoscaling: true and autoscalerOptions.version: v2")
    if "RAY_enable_autoscaler_v2" in head_env and version is not None:
        out.append(
            f"{_where(obj)}: both autoscalerOptions.version and RAY_enable_autoscaler_v2 are set; keep the former"
        )
    for role, template in pod_templates(obj):
        policy = template["spec"].get("restartPolicy")
        if role != "submitter" and policy not in (None, "Never"):
            out.append(f"{_where(obj)} {role}: restartPolicy {policy!r}; autoscaler v2 needs Never or unset")
    return out


def worker_groups(obj: dict[str, Any]) -> list[str]:
    """Worker groups have unique names and 0 <= minReplicas <= replicas <= maxReplicas."""
    out = []
    seen: set[str] = set()
    for g in cluster_spec(obj).get("workerGroupSpecs", []):
        name = g.get("groupName", "")
        if name in seen:
            out.append(f"{_where(obj)}: worker group {name!r} appears twice")
        seen.add(name)
        if "maxReplicas" not in g:
            out.append(f"{_where(obj)} {name}: maxReplicas must be set (the autoscaler's upper bound)")
            continue
        low, now, high = int(g.get("minReplicas", 0)), int(g.get("replicas", 0)), int(g.get("maxReplicas", 0))
        if not 0 <= low <= now <= high:
            out.append(
                f"{_where(obj)} {name}: needs 0 <= minReplicas ({low}) <= replicas ({now}) <= maxReplicas ({high})"
            )
    return out


def gpu_groups(obj: dict[str, Any]) -> list[str]:
    """A group with GPUs: nvidia.com/gpu limits, the NVIDIA toleration, a GPU node selector, /dev/shm in memory."""
    out = []
    for g in cluster_spec(obj).get("workerGroupSpecs", []):
        spec = g["template"]["spec"]
        limits = spec["containers"][0].get("resources", {}).get("limits", {})
        if "nvidia.com/gpu" not in limits and g.get("groupName") != "gpu":
            continue
        where = f"{_where(obj)} {g.get('groupName')}"
        if "nvidia.com/gpu" not in limits:
            out.append(f"{where}: a GPU group needs an nvidia.com/gpu limit")
        if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])):
            out.append(f"{where}: needs the nvidia.com/gpu toleration (GPU nodes are tainted)")
        if not spec.get("nodeSelector"):
            out.append(f"{where}: needs a nodeSelector for GPU nodes")
        shm = [v for v in spec.get("volumes", []) if (v.get("emptyDir") or {}).get("medium") == "Memory"]
        mounts = {m.get("name"): m.get("mountPath") for m in spec["containers"][0].get("volumeMounts", [])}
        if not any(mounts.get(v["name"]) == "/dev/shm" for v in shm):
            out.append(f"{where}: needs /dev/shm mounted from a memory-backed emptyDir (PyTorch shares memory there)")
    return out


def no_credentials(obj: dict[str, Any]) -> list[str]:
    """No credential values in manifests: Secrets carry no data, no env var with a credential-like name has a value;
    credentials arrive through envFrom secretRef or IRSA."""
    out = []
    if obj.get("kind") == "Secret":
        filled = [k for k, v in {**(obj.get("data") or {}), **(obj.get("stringData") or {})}.items() if v]
        if filled:
            out.append(f"{_where(obj)}: carries values for {filled}; create the Secret with kubectl, not from a file")
    for role, template in pod_templates(obj):
        for c in template["spec"].get("containers", []):
            for env in c.get("env", []):
                if CREDENTIAL_ENV.search(str(env.get("name"))) and "value" in env:
                    out.append(
                        f"{_where(obj)} {role}/{c.get('name')}: env {env['name']} has a literal value; use a secretRef"
                    )
    return out


def ray_version(obj: dict[str, Any]) -> list[str]:
    """rayVersion matches the Ray lstm-tune pins: driver and workers of different Ray versions refuse to talk."""
    spec = cluster_spec(obj)
    if spec and spec.get("rayVersion") != RAY_VERSION:
        return [f"{_where(obj)}: rayVersion = {spec.get('rayVersion')!r}; lstm-tune pins Ray {RAY_VERSION}"]
    return []


RULES: dict[str, Rule] = {
    "names": names,
    "ray-container-first": ray_container_first,
    "requests-equal-limits": requests_equal_limits,
    "head-schedules-nothing": head_schedules_nothing,
    "ray-start-params-strings": ray_start_params_are_strings,
    "resources-in-one-place": resources_in_one_place,
    "restricted-security": restricted_security,
    "cluster-ip-only": cluster_ip_only,
    "ttl-needs-shutdown": ttl_needs_shutdown,
    "job-shuts-down": job_shuts_down,
    "submission-mode": submission_mode,
    "job-deadlines": job_deadlines,
    "entrypoint-resumes-from-s3": entrypoint_resumes_from_s3,
    "autoscaler-v2": autoscaler_v2,
    "worker-groups": worker_groups,
    "gpu-groups": gpu_groups,
    "no-credentials": no_credentials,
    "ray-version": ray_version,
}


def check_objects(objects: list[dict[str, Any]]) -> list[str]:
    """Every rule on every object: the list of what is broken, each naming the object, field and value."""
    return [problem for obj in objects for rule in RULES.values() for problem in rule(obj)]


__all__ = ["RULES", "check_objects"]
