"""The receive path of a server, simulated: K receive queues, each drained by one I/O worker.

CoFB (SEEDS.md §2) starts from the observation that, for large payloads, receiving and parsing a
request is a large part of its latency. This module models that part on the shared
:class:`~sloserve.sim.engine.EventLoop`:

- every request belongs to a *flow* (a client connection, :func:`assign_flows`);
- a :class:`~sloserve.policies.flow_steering.FlowSteering` policy binds each flow to one of K
  queues (static RSS hashing, or CoFB's load-based re-steering every ``T_mon``);
- each queue is drained in order by one I/O worker; receiving and parsing a request takes
  ``per_request + payload_bytes / bytes_per_second`` seconds of that worker (:class:`ReceiveCost`),
  divided by the worker's share of a core when the driver says it competes with inference;
- when a request's last byte is parsed, the path hands it to ``deliver`` (the model scheduler's
  side of the driver) at that simulated time.

The driver calls :meth:`ReceivePath.arrive` at each request's network arrival. The path keeps the
monitoring tick running only while bytes are pending, so :meth:`EventLoop.run` still ends.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from sloserve.core.request import Request
from sloserve.policies.flow_steering import FlowSteering
from sloserve.sim.cluster import Simulation
from sloserve.sim.engine import EventLoop

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReceiveCost:
    """Time one I/O worker spends receiving and parsing a request (at a full core)."""

    per_request: float = 20e-6
    """Fixed cost per request (syscalls, HTTP header, JSON header), seconds."""
    bytes_per_second: float = 1e9
    """Payload bytes one worker receives and decodes per second."""

    def __post_init__(self) -> None:
        if not (self.per_request >= 0 and math.isfinite(self.per_request)):
            raise ValueError(f"per_request must be finite and >= 0, got {self.per_request}")
        if not self.bytes_per_second > 0:
            raise ValueError(f"bytes_per_second must be > 0, got {self.bytes_per_second}")

    def seconds(self, nbytes: int) -> float:
        """Service time of a request of ``nbytes`` bytes."""
        return self.per_request + nbytes / self.bytes_per_second


@dataclass(slots=True)
class _Item(Generic[T]):
    item: T
    flow: int
    nbytes: int


class _Worker(Generic[T]):
    """One receive queue and the I/O worker draining it."""

    __slots__ = ("busy", "pending_bytes", "queue", "received")

    def __init__(self) -> None:
        self.queue: deque[_Item[T]] = deque()
        self.pending_bytes = 0
        """Bytes queued or being parsed: the load the steering dispatcher samples."""
        self.busy = False
        self.received = 0
        """Requests this worker finished (for reports)."""


class ReceivePath(Generic[T]):
    """K receive queues with one I/O worker each, on ``loop`` (see module docstring).

    ``deliver(item)`` is called at the simulated time the request is fully received.
    ``core_share()`` (optional) returns the fraction of a core an I/O worker gets at the moment it
    starts a request (1.0 = a dedicated core); the driver supplies it when receive work competes
    with inference for the same cores.
    """

    def __init__(
        self,
        loop: EventLoop,
        steering: FlowSteering,
        cost: ReceiveCost,
        deliver: Callable[[T], None],
        *,
        core_share: Callable[[], float] | None = None,
    ) -> None:
        self.loop = loop
        self.steering = steering
        self.cost = cost
        self.deliver = deliver
        self.core_share = core_share
        self.workers: list[_Worker[T]] = [_Worker() for _ in range(steering.queues)]
        self._tick: int | None = None
        self.busy_workers = 0
        """I/O workers parsing a request right now (a driver reads it to slow inference down)."""
        self.resteers = 0
        """Flows the steering policy moved."""

    # -- driver calls --------------------------------------------------------------------------
    def arrive(self, item: T, flow: int, nbytes: int) -> None:
        """Called at the request's network arrival (``loop.now``): its bytes join its flow's queue."""
        q = self.steering.queue_of(flow)
        w = self.workers[q]
        w.queue.append(_Item(item, flow, nbytes))
        w.pending_bytes += nbytes
        self.steering.on_bytes(self.loop.now, flow, nbytes)
        if not w.busy:
            self._start(w)
        if self._tick is None and math.isfinite(self.steering.interval):
            self._tick = self.loop.after(self.steering.interval, self._on_tick)

    def loads(self) -> list[float]:
        """Pending bytes per queue, as the steering dispatcher samples them."""
        return [float(w.pending_bytes) for w in self.workers]

    @property
    def pending(self) -> int:
        """Requests queued or being parsed, over all queues."""
        return sum(len(w.queue) for w in self.workers)

    # -- internals -----------------------------------------------------------------------------
    def _start(self, w: _Worker[T]) -> None:
        head = w.queue[0]
        share = self.core_share() if self.core_share is not None else 1.0
        w.busy = True
        self.busy_workers += 1
        self.loop.after(self.cost.seconds(head.nbytes) / max(share, 1e-6), lambda: self._finish(w))

    def _finish(self, w: _Worker[T]) -> None:
        done = w.queue.popleft()
        w.pending_bytes -= done.nbytes
        w.busy = False
        w.received += 1
        self.busy_workers -= 1
        if w.queue:
            self._start(w)
        self.deliver(done.item)

    def _on_tick(self) -> None:
        self._tick = None
        moves = self.steering.on_tick(self.loop.now, self.loads())
        self.resteers += len(moves)
        if any(w.queue for w in self.workers):
            self._tick = self.loop.after(self.steering.interval, self._on_tick)


def assign_flows(count: int, flows: int, skew: float = 0.0, seed: int = 0) -> np.ndarray:
    """Flow id (0..flows-1) of each of ``count`` requests: flow ``f`` gets a share proportional
    to ``1 / (f+1)^skew`` (Zipf; ``skew = 0`` is uniform), drawn independently per request."""
    if flows < 1:
        raise ValueError(f"flows must be >= 1, got {flows}")
    if not (skew >= 0 and math.isfinite(skew)):
        raise ValueError(f"skew must be finite and >= 0, got {skew}")
    weights = 1.0 / np.power(np.arange(1, flows + 1, dtype=np.float64), skew)
    rng = np.random.default_rng(seed)
    return rng.choice(flows, size=count, p=weights / weights.sum()).astype(np.int64)


def attach_receive_path(
    sim: Simulation,
    steering: FlowSteering,
    cost: ReceiveCost,
    flows: np.ndarray,
    *,
    machine_cores: int | None = None,
) -> ReceivePath[Request]:
    """Put a receive path in front of every scheduler of ``sim`` (before :meth:`Simulation.run`).

    Request ``i`` of the workload belongs to flow ``flows[i]`` and carries its ``payload_bytes``.
    With ``machine_cores``, I/O workers and inference share that many cores: a worker starting a
    request gets ``min(1, machine_cores / (busy I/O workers + busy inference threads))`` of a core,
    where busy inference threads are the cores of instances running a batch. (Inference is not
    slowed by receive work in this model.)
    """
    share: Callable[[], float] | None = None
    if machine_cores is not None:
        if machine_cores < 1:
            raise ValueError(f"machine_cores must be >= 1, got {machine_cores}")
        instances = sim.instance_owner

        def share() -> float:
            busy = sum(i.cores for i in instances.values() if i.in_flight > 0)
            return min(1.0, machine_cores / (path.busy_workers + 1 + busy))

    path: ReceivePath[Request] = ReceivePath(sim.loop, steering, cost, sim.deliver, core_share=share)
    flow_of = np.asarray(flows, dtype=np.int64)

    def hook(r: Request) -> None:
        path.arrive(r, int(flow_of[r.id]), r.payload_bytes)

    sim.arrival_hook = hook
    return path


__all__ = ["ReceiveCost", "ReceivePath", "assign_flows", "attach_receive_path"]
