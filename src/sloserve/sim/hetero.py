"""Heterogeneous pools in the simulator: servers of different speeds, model variants, QoS utility.

One task, several model variants (different accuracy and latency), a pool of servers of several
hardware types. A QoS scheduler (``policies.qos_scheduling``) picks ``(variant, batch)`` whenever a
server is free; the batch's ``meta["variant"]`` says which variant runs, and its service time comes
from that variant's profile on the server's hardware (times lognormal noise). Each request's
utility ``U(delay, accuracy)`` is known when its batch is dispatched (the finish time is drawn then).

:class:`HeteroSim` is the driver: a few dozen lines around the scheduler's ``decide`` on the shared
:class:`~sloserve.sim.engine.EventLoop`. It also exposes ``run_until`` and ``decide_now`` so that the
RL environment can stop at decision points. Standard figures come from the simulator's
:class:`~sloserve.sim.metrics.MetricsCollector`; the QoS figures from :class:`QosOutcome`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.request import Batch, Request
from sloserve.policies.base import Scheduler
from sloserve.policies.qos import QosSpec
from sloserve.policies.qos_scheduling import batch_variant
from sloserve.sim.engine import EventLoop
from sloserve.sim.metrics import Metrics, MetricsCollector
from sloserve.sim.workload import Workload, with_slo


@dataclass(frozen=True, slots=True)
class HeteroPool:
    """The simulated platform: variants, profiles and utility (``spec``) and the servers."""

    spec: QosSpec
    servers: tuple[str, ...]
    """Hardware type of each server, by server id."""
    noise_cv: float = 0.0
    """Coefficient of variation of the lognormal factor on every service time (0 = exact)."""

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("hetero pool: at least one server is needed")
        for v in self.spec.variants:
            for h in set(self.servers):
                self.spec.profiles.get(v.name, h)  # KeyError names what is missing

    def capacity(self, variant: int, batch: int) -> float:
        """Requests per second the whole pool serves running ``variant`` at ``batch``."""
        return sum(batch / self.spec.latency(variant, h, batch) for h in self.servers)


@dataclass(frozen=True)
class QosOutcome:
    """QoS figures of one run, next to the standard :class:`Metrics`."""

    requests: int
    total_utility: float
    """Σ U over all requests (dropped ones count 0)."""
    mean_utility: float
    """total_utility / requests: the headline figure."""
    attainment: float
    """Requests answered within the target delay / requests."""
    mean_accuracy: float
    """Mean accuracy of the variants that answered (NaN when none was answered)."""
    served_by_variant: dict[str, int]
    """Variant name → requests it answered."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeteroResult:
    """What :meth:`HeteroSim.run` returns: standard metrics, QoS figures, per-request arrays."""

    metrics: Metrics
    qos: QosOutcome
    finish: np.ndarray
    """Finish time per request (NaN when dropped)."""
    variant: np.ndarray
    """Variant number per request (-1 when dropped)."""
    utility: np.ndarray
    """Utility per request."""


class HeteroSim:
    """Drives one scheduler over a heterogeneous pool and a workload (see the module docstring).

    Requests get ``deadline = arrival + utility.target`` when the workload has no deadlines.
    """

    def __init__(
        self,
        pool: HeteroPool,
        scheduler: Scheduler,
        workload: Workload,
        *,
        seed: int = 0,
        model: str = "task",
    ) -> None:
        self.pool = pool
        self.spec = pool.spec
        self.scheduler = scheduler
        if len(workload) and np.all(np.isinf(workload.deadline_array)):
            workload = with_slo(workload, self.spec.utility.target)
        self.workload = workload
        self.model = model
        self.loop = EventLoop()
        self.instances = [InstanceView(id=i, model=model, hardware=h) for i, h in enumerate(pool.servers)]
        self.rng = np.random.default_rng(seed)
        n = len(workload)
        self.finish = np.full(n, np.nan)
        self.variant = np.full(n, -1, dtype=np.int64)
        self.utility = np.zeros(n)
        self.earned = 0.0
        """Utility of every batch dispatched so far (known at dispatch)."""
        self.ended = 0
        """Requests that completed or were dropped."""
        self.collector = MetricsCollector()
        self._arrivals = workload.arrivals
        self._deadlines = workload.deadline_array
        self._next = 0
        self._wake: int | None = None
        self._accuracy = np.array([v.accuracy for v in self.spec.variants])
        sigma2 = math.log1p(pool.noise_cv**2)
        self._noise = (-sigma2 / 2, math.sqrt(sigma2))
        if n:
            self.loop.at(float(self._arrivals[0]), self._arrive)

    # -- events ---------------------------------------------------------------------------------
    def _arrive(self) -> None:
        i = self._next
        self._next += 1
        if self._next < len(self._arrivals):
            self.loop.at(float(self._arrivals[self._next]), self._arrive)
        now = self.loop.now
        self.collector.arrived()
        r = Request(i, self.model, float(self._arrivals[i]), float(self._deadlines[i]))
        drop = self.scheduler.submit(now, r)
        if drop is not None:
            self._drop(drop)
        self.decide_now()

    def _complete(self, inst: InstanceView, batch: Batch, service: float) -> None:
        now = self.loop.now
        inst.in_flight -= 1
        self.collector.completed(
            now, (r.arrival for r in batch.requests), (r.deadline for r in batch.requests)
        )
        self.ended += len(batch.requests)
        self.scheduler.on_complete(now, batch, inst, service)
        self.decide_now()

    def decide_now(self) -> None:
        """Ask the scheduler at the current time and carry out what it returns."""
        self.apply(self.scheduler.decide(self.loop.now, self.instances))

    def apply(self, decisions: Sequence[Decision]) -> None:
        """Carry out decisions at the current time."""
        now = self.loop.now
        for d in decisions:
            if isinstance(d, Dispatch):
                self._dispatch(d)
            elif isinstance(d, Drop):
                self._drop(d)
            elif isinstance(d, WaitUntil):
                if self._wake is not None:
                    self.loop.cancel(self._wake)
                self._wake = self.loop.at(max(d.time, now), self.decide_now)

    def _dispatch(self, d: Dispatch) -> None:
        now = self.loop.now
        inst = self.instances[d.instance]
        if not inst.free:
            raise RuntimeError(f"scheduler dispatched to busy server {inst.id} at t={now:.6f}")
        v = batch_variant(d.batch)
        predicted = self.spec.latency(v, inst.hardware, d.batch.size)
        service = predicted * (math.exp(self.rng.normal(*self._noise)) if self._noise[1] > 0 else 1.0)
        inst.in_flight += 1
        inst.busy_until = now + predicted
        ids = np.fromiter((r.id for r in d.batch.requests), dtype=np.int64, count=len(d.batch.requests))
        end = now + service
        self.finish[ids] = end
        self.variant[ids] = v
        u = self.spec.utility.values(end - self._arrivals[ids], np.full(len(ids), self._accuracy[v]))
        self.utility[ids] = u
        self.earned += float(u.sum())
        self.collector.batch(d.batch.size)
        self.loop.at(end, lambda: self._complete(inst, d.batch, service))

    def _drop(self, d: Drop) -> None:
        self.collector.dropped(self.loop.now, str(d.reason))
        self.ended += 1

    @property
    def arrived(self) -> int:
        """Requests that have arrived so far (they are numbered 0 .. arrived - 1)."""
        return self._next

    # -- running --------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Every request has arrived and ended."""
        return self.ended >= len(self._arrivals)

    def run_until(self, predicate: Callable[[], bool]) -> bool:
        """Run events until ``predicate()`` holds (True) or none are left (False)."""
        return self.loop.run_until(predicate)

    def run(self) -> HeteroResult:
        """Run to the end; requests still queued when no event is left are dropped."""
        self.loop.run()
        return self.result()

    def result(self) -> HeteroResult:
        """Drain the scheduler and summarise the run."""
        for d in self.scheduler.drain(self.loop.now, DropReason.UNAVAILABLE):
            self._drop(d)
        n = len(self._arrivals)
        served = ~np.isnan(self.finish)
        met = served & (self.finish <= self._deadlines)
        names = [v.name for v in self.spec.variants]
        counts = np.bincount(self.variant[served], minlength=len(names)) if n else np.zeros(len(names), int)
        qos = QosOutcome(
            requests=n,
            total_utility=float(self.utility.sum()),
            mean_utility=float(self.utility.mean()) if n else 0.0,
            attainment=float(met.mean()) if n else 1.0,
            mean_accuracy=float(self._accuracy[self.variant[served]].mean()) if served.any() else math.nan,
            served_by_variant={name: int(c) for name, c in zip(names, counts, strict=True)},
        )
        metrics = self.collector.result(self.workload.duration)
        return HeteroResult(metrics, qos, self.finish, self.variant, self.utility)


def simulate_hetero(
    pool: HeteroPool, scheduler: Scheduler, workload: Workload, *, seed: int = 0
) -> HeteroResult:
    """Run ``scheduler`` over ``pool`` and ``workload``; the simulator's entry point for QoS runs."""
    return HeteroSim(pool, scheduler, workload, seed=seed).run()
