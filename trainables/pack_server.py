"""The pack actor and its registry (docs/design/packing.md): one process trains K member trials of one shape in
lockstep rounds; each member is still a Tune trial whose process only asks for rounds and reports them.

- :class:`PackServer` holds the data, the device and a :class:`~trainables.pack.Pack`. A round starts when every
  member trained in the last round has asked for the next one (its ``report`` returned, so Tune has decided about
  it), or when the others have waited ``grace_s`` for it: a member whose trial Tune stopped (ASHA) or paused never
  asks, and sits the round out with its state kept. Its slot is freed at once when its trial's process is gone, when
  that process starts another trial (a reused worker), or when a newcomer needs the slot and the member has been
  idle longer than ``grace_s``.
- A member that joins with a checkpoint (a resume, a PBT exploit) continues from it. When the checkpoint is a
  member of this same pack at the version it still holds (PBT's donor, which has not trained since), the slot is
  copied on the device instead ("in place").
- :class:`PackRegistry` is one named actor per run, owned by the driver: it creates packs per shape up to a limit
  (one per GPU) and tells members where to go. Packs are its children, so they end with the run's driver.

Both are plain classes here; :mod:`trainables.member` turns them into Ray actors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from trainables import metrics as M
from trainables.config import TrialConfig
from trainables.data.handle import DataHandle
from trainables.loop import epoch_lr, trial_seed
from trainables.pack import ClassifierPack, ClassifierShape, MemberConfig, Pack, PackShape, SlotPack
from trainables.pack_rules import NotPackable, check_packable
from trainables.tasks import ClassifyTask, ForecastTask

PACK_MARKER = "pack"
"""Checkpoint key of a packed member: ``{"pack": name, "member": trial id, "version": rounds trained}``."""


@dataclass
class _Member:
    cfg: TrialConfig
    actor_id: str
    actor: Any
    version: int = 0
    """Rounds this member's slot has trained (its checkpoint's epoch, counted in this pack)."""
    waiting: asyncio.Future[dict[str, Any]] | None = None
    epoch: int = 0
    last_seen: float = field(default_factory=time.monotonic)


class PackServer:
    """K slots of one shape on one device; see the module's docstring."""

    def __init__(
        self,
        name: str,
        data: DataHandle,
        flat: dict[str, Any],
        capacity: int,
        grace_s: float = 5.0,
        embeddings_uri: str | None = None,
    ) -> None:
        from trainables.device import placement

        self.name, self.grace_s = name, grace_s
        place = placement()
        torch.set_num_threads(place.cpus)
        self.device = place.device
        self.cfg = TrialConfig.from_flat(flat)
        self.task, self.pack = _task_and_pack(data, self.cfg, capacity, self.device, embeddings_uri)
        self.members: dict[str, _Member] = {}
        self.live: set[str] = set()
        """Members trained in the last round (or joined since): a round waits for them, up to ``grace_s``."""
        self.rounds = 0
        self.emptied = time.monotonic()
        """When the pack last had no member (its start, or the last one's leaving)."""
        self.events: list[dict[str, Any]] = []
        self._runner: asyncio.Task[None] | None = None
        self._busy = asyncio.Lock()

    # -- what members call ---------------------------------------------------------------------------------------

    async def join(
        self, member: str, flat: dict[str, Any], payload: dict[str, Any] | None, actor_id: str, actor: Any
    ) -> dict[str, Any]:
        """Take (or keep) a slot; ``{"slot": k, "how": ...}``, or ``{"full": True}`` when none can be had."""
        async with self._busy:
            cfg = TrialConfig.from_flat(flat)
            for other, known in list(self.members.items()):
                if known.actor_id == actor_id and other != member:
                    self._evict(other, "its process started another trial")
            marker = (payload or {}).get(PACK_MARKER) or {}
            here = member in self.members
            if not here and self.pack.free == 0:
                await self._free_a_slot()
                if self.pack.free == 0:
                    return {"full": True, "members": self.pack.members}
            epoch = int((payload or {}).get("state", {}).get("epoch", 0))
            values = MemberConfig.of(cfg, lr=epoch_lr(cfg, epoch + 1))
            how = self._place(member, cfg, values, payload, marker, here)
            info = self.members.get(member) if here else None
            if info is None:
                info = _Member(cfg=cfg, actor_id=actor_id, actor=actor)
                self.members[member] = info
            info.cfg, info.actor_id, info.actor, info.epoch = cfg, actor_id, actor, epoch
            info.version = epoch
            info.last_seen = time.monotonic()
            self.live.add(member)
            slot = self.pack.slot_of(member)
            self._event("join", member, slot=slot, how=how, epoch=epoch, donor=marker.get("member"))
            return {"slot": slot, "how": how}

    def _place(
        self,
        member: str,
        cfg: TrialConfig,
        values: MemberConfig,
        payload: dict[str, Any] | None,
        marker: dict[str, Any],
        here: bool,
    ) -> str:
        donor = marker.get("member")
        if (
            payload is not None
            and marker.get("pack") == self.name
            and donor in self.members
            and self.members[donor].version == marker.get("version")
        ):
            if donor == member and here:
                self.pack.configure(member, values)
                return "kept"  # its own slot, untouched since the checkpoint (a paused trial back)
            if not here:
                self.pack.join(member, values, self.pack.member_state(donor))
            self.pack.exploit(member, donor, values)
            return "in place"
        if here:
            self.pack.leave(member)
        if payload is None:
            torch.manual_seed(trial_seed(cfg))  # the initial weights an unpacked trial of this config starts from
            state = {"model": self.task.build(cfg).state_dict()}
            self.pack.join(member, values, state)
            return "fresh"
        self.pack.join(member, values, {"model": payload["model"], "optimizer": payload["optimizer"]})
        return "checkpoint"

    async def next_round(self, member: str, epoch: int) -> dict[str, Any]:
        """Block until ``member`` has trained one more round (its ``epoch``) and been scored."""
        info = self.members.get(member)
        if info is None or member not in self.pack.members:
            raise KeyError(f"pack {self.name}: {member} holds no slot (evicted); join again")
        if info.epoch + 1 != epoch:
            raise ValueError(f"pack {self.name}: {member} asked for epoch {epoch}, holds epoch {info.epoch}")
        info.waiting = asyncio.get_running_loop().create_future()
        info.last_seen = time.monotonic()
        self.live.add(member)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._rounds())
        return await info.waiting

    async def leave(self, member: str) -> None:
        async with self._busy:
            if member in self.members:
                self._evict(member, "left")

    def history(self) -> list[dict[str, Any]]:
        return list(self.events)

    def status(self) -> dict[str, Any]:
        members = self.pack.members
        return {
            "name": self.name,
            "free": self.pack.free,
            "members": members,
            "rounds": self.rounds,
            "idle_s": 0.0 if members else time.monotonic() - self.emptied,
        }

    # -- rounds --------------------------------------------------------------------------------------------------

    async def _rounds(self) -> None:
        try:
            await self._run_rounds()
        except BaseException as exc:
            # Whatever went wrong, no member may wait forever for a round that will not come: each trial fails with
            # the error (and Tune retries it from its checkpoint).
            for m in [m for m, info in self.members.items() if info.waiting is not None]:
                self._answer(m, exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            raise

    async def _run_rounds(self) -> None:
        probed: set[str] = set()
        while True:
            waiting = [m for m, info in self.members.items() if info.waiting is not None]
            if not waiting:
                return
            first = min(self.members[m].last_seen for m in waiting)  # the grace runs from the first request
            missing = self.live - set(waiting)
            for m in missing - probed:
                probed.add(m)
                if await self._gone(m):
                    self._evict(m, "its trial's process is gone")
            missing = self.live - set(waiting)
            if missing and time.monotonic() - first < self.grace_s:
                await asyncio.sleep(0.02)
                continue
            for m in missing:
                self._event("sat out", m)
            async with self._busy:
                waiting = [m for m, info in self.members.items() if info.waiting is not None]
                if not waiting:
                    continue  # evicted while the round waited for the lock
                results = await asyncio.to_thread(self._round, waiting)
            for m in waiting:
                self._answer(m, results[m])
            self.live = set(waiting)
            probed = set()

    def _answer(self, member: str, value: dict[str, Any] | Exception) -> None:
        info = self.members.get(member)
        if info is None or info.waiting is None:
            return
        future, info.waiting = info.waiting, None
        if isinstance(value, Exception):
            future.set_exception(value)
        else:
            future.set_result(value)

    def _round(self, members: list[str]) -> dict[str, dict[str, Any]]:
        """One epoch for ``members`` on shared batches, then each scored alone with the project's metrics."""
        self.rounds += 1
        for m in members:
            info = self.members[m]
            self.pack.configure(m, MemberConfig.of(info.cfg, lr=epoch_lr(info.cfg, info.epoch + 1)))
        started = time.perf_counter()
        stats = self.pack.train_round(self._batches(), members)
        train_s = time.perf_counter() - started
        out: dict[str, dict[str, Any]] = {}
        for m in members:
            info = self.members[m]
            info.epoch += 1
            info.version = info.epoch
            scored = time.perf_counter()
            state = self.pack.member_state(m)
            model = self.task.build(info.cfg)
            model.load_state_dict(state["model"])
            model.to(self.device)
            scores = self.task.evaluate(model, info.cfg, self.device)
            s = stats[m]
            out[m] = {
                "stats": {
                    "loss": s.loss,
                    "steps": s.steps,
                    "samples": s.samples,
                    "grad_norm": s.grad_norm,
                    "clipped": s.clipped,
                },
                "scores": scores,
                "state": state,
                "marker": {"pack": self.name, "member": m, "version": info.version},
                "model_info": self.task.model_info(info.cfg),
                "data_info": self.task.data_info(info.cfg),
                "train_s": train_s,
                "eval_s": time.perf_counter() - scored,
                "lr": epoch_lr(info.cfg, info.epoch),
                "pack": {
                    M.PACK_MEMBERS: len(members),
                    M.PACK_SAMPLES_PER_SECOND: s.samples * len(members) / train_s if train_s > 0 else 0.0,
                    M.PACK_ROUND: self.rounds,
                },
            }
        self._event("round", None, round=self.rounds, members=sorted(members))
        return out

    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """This round's batches, drawn as the pack's first configuration's trial draws its epoch of that number."""
        seed = trial_seed(self.cfg) + 7919 * self.rounds
        return self.task.batches(self.cfg, seed, self.device, self.cfg.limits.epoch_samples)

    # -- slots ---------------------------------------------------------------------------------------------------

    async def _gone(self, member: str) -> bool:
        """Whether the member's trial process is dead (a busy live one does not answer in time: alive)."""
        import ray

        info = self.members.get(member)
        if info is None or info.actor is None:
            return info is None
        try:
            await asyncio.wait_for(info.actor.__ray_ready__.remote(), timeout=0.5)
        except ray.exceptions.RayActorError:
            return True
        except (asyncio.TimeoutError, ray.exceptions.RayError):
            return False
        return False

    async def _free_a_slot(self) -> None:
        now = time.monotonic()
        for m in sorted(self.members, key=lambda m: self.members[m].last_seen):
            info = self.members[m]
            if info.waiting is not None:
                continue
            if await self._gone(m):
                self._evict(m, "its trial's process is gone")
                return
            if m not in self.live and now - info.last_seen > self.grace_s:
                self._evict(m, f"idle for {now - info.last_seen:.1f} s")
                return

    def _evict(self, member: str, why: str) -> None:
        # Idempotent: a member's own leave() may land while a round probes its process (both evict it).
        info = self.members.pop(member, None)
        if info is None:
            return
        if member in self.pack.members:
            self.pack.leave(member)
        self.live.discard(member)
        if not self.pack.members:
            self.emptied = time.monotonic()
        if info.waiting is not None and not info.waiting.done():
            info.waiting.set_exception(KeyError(f"pack {self.name}: {member} was evicted ({why})"))
        self._event("leave", member, why=why)

    def _event(self, kind: str, member: str | None, **extra: Any) -> None:
        self.events.append({"event": kind, "member": member, "t": time.time(), **extra})


MEMORY_SHARE = 0.8
"""Of the card's free memory (its share of it, for a pack on a GPU fraction), what a pack may plan to use."""


def fit_capacity(requested: int, per_member: int, fixed: int, free: int, share: float = MEMORY_SHARE) -> int:
    """Slots a pack gets on a card: ``--pack``, or fewer when that many would not fit in ``share`` of ``free``
    bytes; never 0 (one member that does not fit fails as an unpacked trial would, with CUDA's own error)."""
    if per_member <= 0:
        return requested
    return max(1, min(requested, int((free * share - fixed) // per_member)))


def _probe_capacity(make: Any, batch: tuple[torch.Tensor, ...], requested: int, device: torch.device) -> int:
    """On a GPU: one training step of a 1-slot and a 2-slot pack on a real batch; the difference of their peak
    memory is one member's (weights, Adam state, activations), the rest is fixed."""
    peaks = []
    for slots in (1, 2):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        probe = make(slots)
        for k in range(slots):
            probe.join(f"probe{k}", MemberConfig(lr=1e-3))
        probe.train_round([batch])
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
        del probe
    per_member, fixed = peaks[1] - peaks[0], 2 * peaks[0] - peaks[1]
    free, _ = torch.cuda.mem_get_info(device)
    fraction = _gpu_share()
    return fit_capacity(requested, per_member, fixed, int(free * fraction) if fraction < 1 else free)


def _gpu_share() -> float:
    import ray

    share = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 1.0))
    return share if 0 < share < 1 else 1.0


def _task_and_pack(
    data: DataHandle, cfg: TrialConfig, capacity: int, device: torch.device, embeddings_uri: str | None
) -> tuple[ForecastTask | ClassifyTask, SlotPack]:
    """The dataset's task (its data loaded once for every member) and an empty pack of this configuration's shape."""
    from trainables.data.loader import load_forecast_data
    from trainables.data.manifest import read_manifest
    from trainables.data.text_loader import load_text_data
    from trainables.storage import resolve

    if read_manifest(resolve(data.uri, endpoint=data.endpoint)).task == "classify":
        check_packable(cfg.to_flat(), "classify")
        text = load_text_data(data)
        shape = ClassifierShape(
            vocab_size=text.vocab_size,
            num_classes=text.num_classes,
            embedding_dim=cfg.model.embedding_dim,
            hidden_size=cfg.model.hidden_size,
            num_layers=cfg.model.num_layers,
            bidirectional=cfg.model.bidirectional,
            pooling=cfg.model.pooling,
        )
        task = ClassifyTask(text, cfg, embeddings_uri)
        if device.type == "cuda":
            capacity = _probe_capacity(
                lambda k: ClassifierPack(shape, k, device), next(task.batches(cfg, 0, device)), capacity, device
            )
        return task, ClassifierPack(shape, capacity, device)
    series = load_forecast_data(data)
    if series.streamed:
        raise NotPackable("the panel is streamed (larger than the memory budget); a pack holds its data in memory")
    fitted = series.fitted
    forecast_shape = PackShape.of(
        cfg,
        n_features=series.n_features,
        target_index=fitted.target_index,
        horizon=series.horizon,
        categorical=fitted.categorical_codes,
    )
    forecast = ForecastTask(series, cfg)
    if device.type == "cuda":
        capacity = _probe_capacity(
            lambda k: Pack(forecast_shape, k, device), next(forecast.batches(cfg, 0, device)), capacity, device
        )
    return forecast, Pack(forecast_shape, capacity, device)


class PackRegistry:
    """Where each member goes: the packs of its shape, a new one while fewer than ``max_packs`` exist. A pack left
    empty for ``grace_s`` is retired when another shape needs its GPU."""

    def __init__(
        self,
        run: str,
        data: DataHandle,
        capacity: int,
        max_packs: int,
        pack_resources: dict[str, float],
        grace_s: float = 5.0,
        embeddings_uri: str | None = None,
    ) -> None:
        self.run, self.data, self.capacity, self.max_packs = run, data, capacity, max_packs
        self.pack_resources, self.grace_s, self.embeddings_uri = pack_resources, grace_s, embeddings_uri
        self.packs: dict[str, list[tuple[str, Any]]] = {}
        self.started = 0

    def packs_for(self, key: str) -> list[tuple[str, Any]]:
        return list(self.packs.get(key, []))

    def grow(self, key: str, flat: dict[str, Any]) -> tuple[str, Any] | None:
        """A new pack for shape ``key``, or None while ``max_packs`` packs are busy (a member then waits)."""
        import ray

        if len(self.all_packs()) >= self.max_packs:
            self._retire_idle()
        if len(self.all_packs()) >= self.max_packs:
            return None
        name = f"{self.run}/{key}/{self.started}"
        self.started += 1
        options = {
            "num_cpus": self.pack_resources.get("cpu", 1.0),
            "num_gpus": self.pack_resources.get("gpu", 0.0),
            "max_concurrency": 1000,
        }
        actor = (
            ray.remote(PackServer)
            .options(**options)
            .remote(name, self.data, flat, self.capacity, self.grace_s, self.embeddings_uri)
        )
        self.packs.setdefault(key, []).append((name, actor))
        return name, actor

    def _retire_idle(self) -> None:
        import ray

        for packs in self.packs.values():
            for name, actor in list(packs):
                status = ray.get(actor.status.remote())
                if not status["members"] and status["idle_s"] > self.grace_s:
                    ray.kill(actor)
                    packs.remove((name, actor))

    def all_packs(self) -> list[tuple[str, Any]]:
        return [p for packs in self.packs.values() for p in packs]


__all__ = ["MEMORY_SHARE", "PACK_MARKER", "PackRegistry", "PackServer", "fit_capacity"]
