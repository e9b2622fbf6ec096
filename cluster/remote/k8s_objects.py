"""Where things sit inside KubeRay objects: the Ray cluster spec of a RayCluster or RayJob, and every pod template
an object makes. Shared by the renderer (:mod:`cluster.remote.k8s`) and its rules (:mod:`cluster.remote.k8s_rules`)."""

from __future__ import annotations

from typing import Any


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a RayCluster or RayJob (empty for other kinds)."""
    if obj.get("kind") == "RayCluster":
        return dict(obj["spec"])
    if obj.get("kind") == "RayJob":
        return dict(obj["spec"].get("rayClusterSpec") or {})
    return {}


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(role, pod template) of every pod an object makes: head, worker groups by name, submitter, deployment."""
    out: list[tuple[str, dict[str, Any]]] = []
    spec = cluster_spec(obj)
    if spec:
        out.append(("head", spec["headGroupSpec"]["template"]))
        out += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    if obj.get("kind") == "RayJob" and obj["spec"].get("submitterPodTemplate"):
        out.append(("submitter", obj["spec"]["submitterPodTemplate"]))
    if obj.get("kind") == "Deployment":
        out.append(("deployment", obj["spec"]["template"]))
    return out


__all__ = ["cluster_spec", "pod_templates"]
