"""``--pack``: where packs run and how many members Tune starts (docs/design/packing.md).

The driver owns the run's pack registry (a named actor): the packs it creates are its children, so they end with
the driver, and a resumed run starts fresh ones that its members rejoin from their checkpoints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cluster.plan.options import ResourceOptions
from trainables.data.handle import DataHandle
from trainables.member import REGISTRY_PREFIX, PackEnv

GRACE_S = 5.0
"""How long a round waits for a member that has not asked for it: longer than a report's round trip through the
driver (well under a second here), short beside a round on a GPU."""


_HELD: dict[str, Any] = {}
"""The driver's handles of its registries."""


@dataclass(frozen=True)
class PackPlan:
    capacity: int
    """Members per pack."""
    packs: int
    """Packs at once: one per GPU (or per GPU share), one on a CPU-only cluster in tests."""
    cpus: float
    gpus: float
    """Each pack's GPU share."""

    @property
    def members(self) -> int:
        """Member trials Tune runs at once."""
        return self.capacity * self.packs


def pack_plan(res: ResourceOptions, node_cpus: list[float], node_gpus: list[float]) -> PackPlan:
    share = res.gpus_per_trial or (1.0 if node_gpus else 0.0)
    packs = max(1, int(sum(node_gpus) // share)) if share else 1
    return PackPlan(capacity=res.pack, packs=packs, cpus=res.cpus_per_trial, gpus=share)


def registry_name(experiment_uri: str) -> str:
    return REGISTRY_PREFIX + hashlib.sha256(experiment_uri.encode()).hexdigest()[:12]


def start_registry(
    experiment_uri: str,
    data: DataHandle,
    plan: PackPlan,
    grace_s: float = GRACE_S,
    embeddings_uri: str | None = None,
) -> PackEnv:
    """The run's registry (created once; a second call finds it), and what members need to find it."""
    import ray

    from trainables.pack_server import PackRegistry

    name = registry_name(experiment_uri)
    # Held here: Ray collects a named actor nobody holds a handle to.
    _HELD[name] = (
        ray.remote(PackRegistry)
        .options(name=name, get_if_exists=True, num_cpus=0)
        .remote(name, data, plan.capacity, plan.packs, {"cpu": plan.cpus, "gpu": plan.gpus}, grace_s, embeddings_uri)
    )
    return PackEnv(registry=name, capacity=plan.capacity, grace_s=grace_s)


def stop_registry(env: PackEnv) -> list[dict[str, Any]]:
    """End the run's packs and registry; every pack's events (joins, leaves, rounds), for ``packs.json``."""
    import ray

    registry = ray.get_actor(env.registry)
    packs: list[tuple[str, Any]] = ray.get(registry.all_packs.remote())
    out = []
    for name, actor in packs:
        try:
            out.append({"pack": name, "events": ray.get(actor.history.remote(), timeout=30)})
        except ray.exceptions.RayError as exc:  # a pack lost with its node: its members were retried elsewhere
            out.append({"pack": name, "events": [], "error": type(exc).__name__})
        ray.kill(actor)
    ray.kill(registry)
    _HELD.pop(env.registry, None)
    return out


def fill_line(packs: list[dict[str, Any]], capacity: int) -> str:
    """``packing: 3 pack(s), 41 rounds, 1.8 of 2 slots trained per round (90%)``."""
    rounds = [len(e["members"]) for p in packs for e in p["events"] if e["event"] == "round"]
    if not rounds:
        return f"packing: {len(packs)} pack(s), no round trained"
    mean = sum(rounds) / len(rounds)
    return (
        f"packing: {len(packs)} pack(s), {len(rounds)} rounds, {mean:.1f} of {capacity} slots trained per round "
        f"({mean / capacity:.0%})"
    )


__all__ = ["GRACE_S", "PackPlan", "fill_line", "pack_plan", "registry_name", "start_registry", "stop_registry"]
