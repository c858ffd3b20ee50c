"""Plan-driven dispatch of one module's requests: Harpagon's batch-aware dispatcher and round-robin.

Both serve a module the way a plan (``sloserve.planning``) configured it: tuples of machines,
each with a batch size, a share of the module's rate and a dummy rate, under a latency budget.
Requests are split among tuples by smooth weighted round-robin on the tuples' planned rates.
Then, per *lane* (a queue with a batch size and the machines it feeds):

- :class:`HarpagonDispatcher` (paper): one lane per tuple. It fills one batch at a time from the
  tuple's whole stream and hands the full batch to a free machine of the tuple, so a batch is
  collected at the tuple's rate ``w`` and the worst-case latency is ``d(b) + b / w``.
- :class:`RoundRobinPlanDispatcher` (the usual baseline): one lane per machine; single requests go
  to the tuple's machines in turn and each machine batches its own queue, so ``w`` is ``1/n`` of
  the tuple's rate.

A lane sends a batch when it holds ``b`` requests, or when the oldest request would otherwise miss
its budget (at ``deadline − d(b) − wait``, ``wait`` being the plan's allowance for a busy machine;
spec, ours: a plan's batches fill in time on average, the timeout bounds bursts), or — for tuples
the plan pads with dummies — when the dummy stream (``u`` requests/s since the batch opened) tops
the batch up; the batch then carries that padding. Nothing is dropped for lateness (a late
request still runs); a request past the model's queue cap (``max_queue_size``) is refused at
arrival, as by every scheduler. Sans-I/O, driven by the simulator or the server through the
:class:`~sloserve.policies.base.Scheduler` contract.

Machines follow the instances ``decide`` is given, not the plan's head count: an instance id that
is no longer listed is forgotten, and an instance not yet bound fills a machine slot the plan still
lacks (same hardware first, then any). A lane with no machine takes no new requests and hands those
it holds to a lane of its tuple that has one, else to any lane that has one; a tuple with no machine
gets no share of the stream. With no instance at all, requests wait (as with every scheduler) for
one to appear, or for ``drain`` to end them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.request import Batch, Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.params import Count, NonNegative, PolicyParams, Positive, parse_params
from sloserve.policies.queues import FifoQueue, pop_rows


@dataclass(frozen=True, slots=True)
class TupleRoute:
    """What a dispatcher needs of one plan tuple."""

    hardware: str
    """Hardware type of its machines (instances are matched to tuples by it)."""
    batch: int
    count: int
    """Machines of the tuple."""
    rate: float
    """Share of the module's real requests per second."""
    dummy_rate: float
    """Dummy requests per second the tuple pads its stream with (0: none)."""
    exec_time: float
    """Planned execution time of a batch, seconds."""
    wait: float = 0.0
    """Planned allowance for waiting on a free machine, seconds; the timeout leaves
    ``exec_time + wait`` before the deadline."""

    def __post_init__(self) -> None:
        if self.batch < 1 or self.count < 1:
            raise ValueError(f"tuple on {self.hardware!r}: batch and count must be >= 1")
        if min(self.rate, self.dummy_rate, self.exec_time, self.wait) < 0:
            raise ValueError(f"tuple on {self.hardware!r}: rates and times must be >= 0")


class _Lane:
    """A queue, its batch size and the machines (instance ids) it may use."""

    __slots__ = ("batch", "dummy_rate", "instances", "last_sent", "lead", "queue")

    def __init__(self, batch: int, lead: float, dummy_rate: float) -> None:
        self.batch = batch
        self.lead = lead
        """Seconds before the deadline a batch must leave (execution plus wait allowance)."""
        self.dummy_rate = dummy_rate
        self.queue = FifoQueue()
        self.instances: list[int] = []
        self.last_sent = -math.inf

    def ready_at(self, budget: float, cap: int) -> float:
        """When the batch at the head of the queue should go (``-inf``: it is full now)."""
        n, b = self.queue.rows, min(self.batch, cap)
        if n >= b:
            return -math.inf
        oldest = self.queue.peek()
        ready = min(oldest.deadline, oldest.arrival + budget) - self.lead
        if self.dummy_rate > 0:
            opened = max(oldest.arrival, self.last_sent)
            ready = min(ready, opened + (b - n) / self.dummy_rate)
        return ready

    def absorb(self, requests: Iterable[Request]) -> None:
        """Queue ``requests`` (in arrival order) among the waiting ones, by arrival time."""
        queue = FifoQueue()
        for r in heapq.merge(self.queue, requests, key=lambda r: r.arrival):
            queue.push(r)
        self.queue = queue

    def take(self, now: float, cap: int) -> Batch:
        b = min(self.batch, cap)
        requests = tuple(pop_rows(self.queue, b))
        self.last_sent = now
        dummies = max(0, b - sum(r.rows for r in requests)) if self.dummy_rate > 0 else 0
        return Batch(requests, padding=dummies)


class _PlanScheduler:
    """Shared mechanics; subclasses lay out the lanes (see the module docstring)."""

    def __init__(self, tuples: Sequence[TupleRoute], budget: float, max_queue_size: int = 0) -> None:
        if not tuples:
            raise ValueError("a plan dispatcher needs at least one tuple")
        if not budget > 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        self.tuples = tuple(tuples)
        self.budget = budget
        total = sum(t.rate for t in self.tuples)
        self._weights = [t.rate / total if total > 0 else 1 / len(tuples) for t in self.tuples]
        self._credit = [0.0] * len(self.tuples)
        self._lanes_of: list[list[_Lane]] = [self.make_lanes(t) for t in self.tuples]
        self._next_lane = [0] * len(self.tuples)
        self._present: frozenset[int] | None = None
        """Instance ids of the last ``decide`` (None before the first)."""
        self._slots: list[list[int | None]] = [[None] * t.count for t in self.tuples]
        """Per tuple, its machine slots: the instance id bound to each, None while it lacks one."""
        self._live: list[_Lane] = []
        """Lanes with at least one machine."""
        self._next_live = 0
        self._stranded = False
        """Whether a lane with no machine may hold requests."""
        self._cap = max(t.batch for t in self.tuples)
        self._pending = 0
        self.max_queue_size = max_queue_size
        """Requests beyond this many waiting are refused at arrival (0: unbounded)."""

    def make_lanes(self, t: TupleRoute) -> list[_Lane]:
        """The lanes of tuple ``t``."""
        raise NotImplementedError

    def bind_lanes(self, lanes: list[_Lane], slots: list[int | None]) -> None:
        """Give ``lanes`` their machines from the tuple's slots (None: a slot with no machine)."""
        raise NotImplementedError

    # -- Scheduler contract ------------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        return self._cap

    def set_max_batch(self, max_batch: int) -> None:
        self._cap = max(1, max_batch)

    def __len__(self) -> int:
        return self._pending

    def submit(self, now: float, request: Request) -> Drop | None:
        if self.max_queue_size and self._pending >= self.max_queue_size:
            return Drop(request, DropReason.QUEUE_FULL)
        lane = self._lane_for(self._pick_tuple())
        if not lane.instances:
            self._stranded = True
        lane.queue.push(request)
        self._pending += 1
        return None

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        self._bind(instances)
        if self._stranded and self._live:
            self._rehome()
        by_id = {i.id: i for i in instances}
        used: dict[int, int] = {}
        out: list[Decision] = []
        wake = math.inf
        for lanes in self._lanes_of:
            for lane in lanes:
                while lane.instances and len(lane.queue):
                    ready = lane.ready_at(self.budget, self._cap)
                    if ready > now:
                        wake = min(wake, ready)
                        break
                    inst = self._free(lane, by_id, used)
                    if inst is None:
                        break
                    batch = lane.take(now, self._cap)
                    self._pending -= len(batch.requests)
                    used[inst.id] = used.get(inst.id, 0) + 1
                    out.append(Dispatch(batch, inst.id))
        if wake < math.inf:
            out.append(WaitUntil(wake))
        return out

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        """Nothing to learn: the plan fixed the configuration."""

    def cancel(self, now: float, request: Request) -> bool:
        for lanes in self._lanes_of:
            for lane in lanes:
                if lane.queue.remove(request.id) is not None:
                    self._pending -= 1
                    return True
        return False

    def drain(self, now: float, reason: DropReason) -> list[Drop]:
        out: list[Drop] = []
        for lanes in self._lanes_of:
            for lane in lanes:
                while len(lane.queue):
                    out.append(Drop(lane.queue.pop(), reason))
        self._pending = 0
        return out

    # -- helpers -----------------------------------------------------------------------------

    def _pick_tuple(self) -> int:
        """Smooth weighted round-robin over the tuples' planned rates."""
        credit = self._credit
        for i, w in enumerate(self._weights):
            credit[i] += w
        best = max(range(len(credit)), key=credit.__getitem__)
        credit[best] -= 1.0
        return best

    def _lane_for(self, t: int) -> _Lane:
        """The next lane of tuple ``t`` that has a machine; any lane with one when ``t`` has none;
        with none anywhere (no instance known), the next lane of ``t``."""
        lanes = self._lanes_of[t]
        for _ in range(len(lanes)):
            lane = lanes[self._next_lane[t] % len(lanes)]
            self._next_lane[t] += 1
            if lane.instances or not self._live:
                return lane
        lane = self._live[self._next_live % len(self._live)]
        self._next_live += 1
        return lane

    def _bind(self, instances: Sequence[InstanceView]) -> None:
        """Follow the instances listed: forget ids no longer there, and bind the others not yet
        bound to tuples still short of machines (same hardware first, then any)."""
        present = frozenset(i.id for i in instances)
        if present == self._present:
            return
        self._present = present
        bound: set[int] = set()
        for slots in self._slots:
            for k, iid in enumerate(slots):
                if iid is None:
                    continue
                if iid in present:
                    bound.add(iid)
                else:
                    slots[k] = None
        new = sorted((i for i in instances if i.id not in bound), key=lambda i: i.id)
        for strict in (True, False):
            rest = []
            for inst in new:
                for t, tup in enumerate(self.tuples):
                    slots = self._slots[t]
                    if None in slots and (not strict or tup.hardware == inst.hardware):
                        slots[slots.index(None)] = inst.id
                        break
                else:
                    rest.append(inst)
            new = rest
        for lanes, slots in zip(self._lanes_of, self._slots, strict=True):
            self.bind_lanes(lanes, slots)
        self._live = [lane for lanes in self._lanes_of for lane in lanes if lane.instances]
        self._reweigh()
        self._stranded = True

    def _reweigh(self) -> None:
        """Split the stream among the tuples that have a machine (all tuples when none has)."""
        live = [any(lane.instances for lane in lanes) for lanes in self._lanes_of]
        if not any(live):
            live = [True] * len(self.tuples)
        rates = [t.rate if ok else 0.0 for t, ok in zip(self.tuples, live, strict=True)]
        total = sum(rates)
        n = sum(live)
        weights = [
            (r / total if total > 0 else 1 / n) if ok else 0.0 for r, ok in zip(rates, live, strict=True)
        ]
        if weights != self._weights:
            self._weights = weights
            self._credit = [0.0] * len(self.tuples)

    def _rehome(self) -> None:
        """Move the requests of lanes with no machine to lanes with one: their tuple's first, in
        turn, else any."""
        for lanes in self._lanes_of:
            targets = [lane for lane in lanes if lane.instances] or self._live
            moved: list[Request] = []
            for lane in lanes:
                if not lane.instances:
                    while len(lane.queue):
                        moved.append(lane.queue.pop())
            if not moved:
                continue
            moved.sort(key=lambda r: (r.arrival, r.id))
            shares: list[list[Request]] = [[] for _ in targets]
            for r in moved:
                shares[self._next_live % len(targets)].append(r)
                self._next_live += 1
            for lane, share in zip(targets, shares, strict=True):
                if share:
                    lane.absorb(share)
        self._stranded = False

    @staticmethod
    def _free(lane: _Lane, by_id: Mapping[int, InstanceView], used: Mapping[int, int]) -> InstanceView | None:
        best: InstanceView | None = None
        for iid in lane.instances:
            inst = by_id.get(iid)
            if inst is None or not inst.available:
                continue
            if inst.in_flight + used.get(iid, 0) >= inst.max_concurrency:
                continue
            if best is None or (inst.busy_until, inst.id) < (best.busy_until, best.id):
                best = inst
        return best


class HarpagonDispatcher(_PlanScheduler):
    """Batch-aware: one lane per tuple, batches filled from the tuple's whole stream."""

    def make_lanes(self, t: TupleRoute) -> list[_Lane]:
        return [_Lane(t.batch, t.exec_time + t.wait, t.dummy_rate)]

    def bind_lanes(self, lanes: list[_Lane], slots: list[int | None]) -> None:
        lanes[0].instances = [iid for iid in slots if iid is not None]


class RoundRobinPlanDispatcher(_PlanScheduler):
    """Round-robin: requests go to the tuple's machines in turn; each machine batches alone."""

    def make_lanes(self, t: TupleRoute) -> list[_Lane]:
        return [_Lane(t.batch, t.exec_time + t.wait, t.dummy_rate / t.count) for _ in range(t.count)]

    def bind_lanes(self, lanes: list[_Lane], slots: list[int | None]) -> None:
        for lane, iid in zip(lanes, slots, strict=True):
            lane.instances = [] if iid is None else [iid]


class TupleParams(PolicyParams):
    """One plan tuple, as in a plan file: ``batch``, ``exec_ms`` (required), ``hardware`` (``cpu``),
    ``count`` (1), ``rate`` (1), ``dummy_rate`` (0), ``wait_ms`` (0)."""

    hardware: str = "cpu"
    batch: Count
    count: Count = 1
    rate: NonNegative = 1.0
    dummy_rate: NonNegative = 0.0
    exec_ms: NonNegative
    wait_ms: NonNegative = 0.0

    def route(self) -> TupleRoute:
        """The tuple as the dispatchers take it (times in seconds)."""
        return TupleRoute(
            self.hardware,
            self.batch,
            self.count,
            self.rate,
            self.dummy_rate,
            self.exec_ms * 1e-3,
            self.wait_ms * 1e-3,
        )


class PlanDispatchParams(PolicyParams):
    """``tuples`` (at least one) and ``budget_ms`` (default: the model's SLO)."""

    tuples: Annotated[list[TupleParams], Field(min_length=1)]
    budget_ms: Positive | None = None

    def budget(self, ctx: PolicyContext) -> float:
        """The module's latency budget in seconds."""
        if self.budget_ms is not None:
            return self.budget_ms * 1e-3
        if ctx.slo is None:
            raise ValueError("needs 'budget_ms' (or the model's slo_ms)")
        return ctx.slo


def make_harpagon(ctx: PolicyContext, **params: Any) -> HarpagonDispatcher:
    """Registry factory (:class:`PlanDispatchParams`)."""
    p = parse_params(PlanDispatchParams, params, "harpagon")
    return HarpagonDispatcher([t.route() for t in p.tuples], p.budget(ctx), ctx.max_queue_size)


def make_plan_round_robin(ctx: PolicyContext, **params: Any) -> RoundRobinPlanDispatcher:
    """Registry factory for :class:`RoundRobinPlanDispatcher` (:class:`PlanDispatchParams`)."""
    p = parse_params(PlanDispatchParams, params, "plan_round_robin")
    return RoundRobinPlanDispatcher([t.route() for t in p.tuples], p.budget(ctx), ctx.max_queue_size)
