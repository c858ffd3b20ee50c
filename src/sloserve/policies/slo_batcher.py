"""sloserve's SLO-aware batcher (scheduler ``slo``), the default when a model has a profile and an SLO.

Rules (ours; CoFB's reordering/batching and Clockwork's early drop are the models):

- **Order.** EDF within priority levels (:class:`~sloserve.policies.queues.EdfQueue`); a request
  without a deadline gets ``arrival + slo`` when the model has an SLO.
- **Early drop.** A request that cannot finish by its deadline even alone — ``now + tail(1)`` past
  it on the free instance — ends at once with ``DEADLINE_UNREACHABLE`` (``DEADLINE_EXPIRED`` when
  the deadline already passed). On arrival, one that would miss even on the fastest instance seen
  is refused the same way.
- **Batch size.** ``tail(b)`` is the profile's 99th percentile latency of batch ``b`` at the
  instance's cores, slowed by the batches running beside it (the profile's ``s(k)``; ``k`` = the
  model's running batches + 1 when its instances share a machine, else the instance's own + 1).
  The base batch is the largest EDF prefix with ``now + tail(b) <=`` the earliest deadline in it
  (every smaller prefix of a feasible one is feasible, so no batch is a predicted miss while a
  smaller one would make it). When batches of that size would fall behind this instance's share
  of the arrival rate (by the profile's median latency: throughput is a mean), the batch is
  instead the smallest that keeps up (else the largest) among the batches ``w`` whose members all
  make it: the EDF-first ``w`` requests among those with deadline ``>= now + tail(w)``, passing
  over the most urgent. Under overload this keeps batches (and throughput) up instead of
  shrinking them to the most urgent request's budget; the passed-over requests stay queued and
  are dropped once hopeless.
- **Batch caps.** No batch is larger than the profile's most efficient size (the ``b`` with the
  highest ``b / l(b)`` at the instance's cores and sharing): a bigger one takes longer and serves
  fewer per second, so running the queue in batches of that size finishes every request sooner
  (measured CPU profiles peak early: the demo mobilenet_v2 at 4 of 32). Nor is a batch longer, by
  its tail, than half the smallest budget (deadline - arrival) among the last ``rate_window``
  arrivals (Nexus's ``l(B) <= SLO/2``): a request that arrives just as a batch starts waits for
  it and then runs in the next, and both must fit its budget. Without it a burst is served in a
  few long batches and the requests arriving behind them miss. That cap gives way where batching
  pays: it never cuts below the smallest batch within :data:`HEAD_OF_LINE_LOSS` (2%) of the peak
  throughput (on the published-style affine profiles, whose batches gain up to 4x, an
  unconditional cap lost up to 3.2x of capacity, and a 5% allowance 3.5% where throughput
  decides). ``efficient_cap=False`` and ``head_of_line_cap=False`` turn them off, for ablations.
- **Passing over the urgent only when it pays.** Before the wider batch replaces the base one,
  the queue is planned both ways: that batch now, then the rest in base batches one after another
  (no further arrivals assumed); the wider batch runs only if fewer requests are then predicted to
  miss. With mixed SLOs the urgent requests are served in a small batch and those with slack wait
  for a bigger one (they were dropped to keep batches wide before): in ``sloserve experiment
  batching`` the mixed-SLO rows gain 18-20% of capacity; in a burst of requests that all have
  little slack, the wider batch still wins.
- **Waiting.** When the whole queue fits in one batch with room to spare, hold it (``WaitUntil``)
  only while (a) every queued request still makes its deadline if the batch starts then with one
  more request, and (b) waiting raises throughput: the next request is expected (from the arrival
  rate over the last ``rate_window`` arrivals, shared among the instances free now: a busy
  instance cannot take it, so with the others busy every arrival joins this batch) soon enough
  that the bigger batch, counted from now, has the higher throughput by the profile's median:
  ``(b+1) / (gap + l(b+1)/g) > g·b / l(b)`` (for an affine profile: ``gap < α/(g·b)``, the
  fixed cost each request of the batch carries), where ``g`` is the throughput the hardware gains
  by running this batch beside the ``k - 1`` already running, ``k/s(k) - (k-1)/s(k-1)`` batches'
  worth by the profile's slowdown ``s`` (1 without one: a batch alone, or no interference; a
  fourth co-located batch at DNNScaler's ``s(4) = 1.73`` adds only 0.13, so forming a bigger one
  pays); otherwise the batch runs now. The wake-up is the earlier of the latest start and the
  expected next arrival.

- **Calibration.** Every prediction above is the profile's, scaled by the median over the last
  ``calibration_window`` batches of observed / predicted median latency, once
  ``calibration_min`` batches have finished and when that median is more than
  ``calibration_band`` (5%) away from 1 (a drift that small is left to the profile's own tail
  margin, and the profile is not jostled by the sampling noise of the median);
  ``calibration_window=0`` turns it off. A profile measured on an idle machine underestimates a
  server whose front end shares the cores (measured: 1.22–1.44× on one core at 700 req/s), and
  a deadline packed against the idle profile's tail is then missed by about half the batches;
  the median follows such a steady drift and ignores stragglers.

  The **tail** is calibrated too. Once ``tail_min`` batches have finished, ``tail_ratio`` is the
  99th percentile of observed / predicted median latency over the last ``tail_window`` of them,
  and a batch's tail is ``tail_ratio`` times its profiled median wherever that is more than the
  band above the profile's own tail (scaled by the median's calibration); never below it, since a
  high quantile of a few hundred batches is too noisy to tighten on. A server's batches vary more
  than an idle machine's back-to-back runs — the front end takes the core mid-batch, a batch
  after an idle spell starts cold — and a tail that is too short packs batches against deadlines
  they then miss (measured, resnet18 on one core at 90 req/s: observed / profiled median p50
  1.08, p99 1.29, where the profile's p99 is 1.05x its median). On shared hardware only batches
  that no later batch started beside count: their slowdown is the scheduler's own doing (learnt
  as spread, it cost the batching experiment's co-located resnet18 row 11% of capacity).
  ``tail_window=0`` turns it off.

The only required knob is the SLO (per request through its deadline, or the model's ``slo``);
everything else comes from the profile.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import Field

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Drop, DropReason
from sloserve.core.profiles import ModelProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.base import Dispatcher, PolicyContext
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.params import (
    BatchCapParams,
    Count,
    Index,
    NonNegative,
    Number,
    SloParams,
    parse_params,
)
from sloserve.policies.queues import EdfQueue
from sloserve.policies.windows import SortedWindow

HEAD_OF_LINE_LOSS = 0.02
"""Throughput the head-of-line cap may give up: it never cuts a batch below the smallest size whose
throughput is within this fraction of the profile's peak."""

TAIL_WINDOW = 256
"""Finished batches the learnt tail (their 99th percentile of observed / profiled time) is taken over."""

_Item = tuple[float, float, int, Request]
"""A queue entry: (priority level, deadline, request id, request)."""


def _late_reason(deadline: float, now: float) -> DropReason:
    """Why a request that cannot make ``deadline`` is dropped at ``now``."""
    return DropReason.DEADLINE_EXPIRED if deadline < now else DropReason.DEADLINE_UNREACHABLE


class DeadlineQueue(EdfQueue):
    """EDF queue whose deadline for a request without one is ``arrival + slo``; can remove in bulk."""

    __slots__ = ("slo",)

    def __init__(self, default_priority: int = 1, slo: float | None = None) -> None:
        super().__init__(default_priority)
        self.slo = slo

    def deadline(self, request: Request) -> float:
        """The deadline the scheduler works with (the request's, else ``arrival + slo``)."""
        if math.isinf(request.deadline) and self.slo is not None:
            return request.arrival + self.slo
        return request.deadline

    def _key(self, request: Request) -> float:
        return self.deadline(request)

    def earliest_deadline(self) -> float:
        """Smallest deadline waiting (any level); ``inf`` when empty."""
        return min((item[1] for item in self._heap), default=math.inf)

    def ordered(self) -> list[_Item]:
        """The waiting entries ``(level, deadline, id, request)`` in queue order (a copy)."""
        return sorted(self._heap)

    def remove_ids(self, ids: set[int]) -> None:
        """Remove the requests with these ids."""
        if len(ids) == len(self._heap):
            self._heap = []
            self.rows = 0
            return
        self._heap = [item for item in self._heap if item[2] not in ids]
        self.rows = sum(item[3].rows for item in self._heap)
        heapq.heapify(self._heap)

    def remove_if(self, pred: Callable[[_Item], bool]) -> list[Request]:
        """Remove and return (in EDF order) the requests whose entry satisfies ``pred``."""
        keep: list[_Item] = []
        gone: list[_Item] = []
        for item in self._heap:
            (gone if pred(item) else keep).append(item)
        if not gone:
            return []
        heapq.heapify(keep)
        self._heap = keep
        self.rows -= sum(item[3].rows for item in gone)
        return [item[3] for item in sorted(gone)]


class SloBatcher(QueueScheduler):
    """The SLO-aware batcher; see the module docstring."""

    def __init__(
        self,
        profile: ModelProfile,
        max_batch: int,
        slo: float | None = None,
        *,
        default_priority: int = 1,
        max_queue_size: int = 0,
        dispatcher: Dispatcher | None = None,
        rate_window: int = 32,
        shared_hardware: bool = True,
        calibration_window: int = 64,
        calibration_min: int = 8,
        calibration_band: float = 0.05,
        tail_window: int = TAIL_WINDOW,
        tail_min: int = 64,
        plan_queue: bool = True,
        efficient_cap: bool = True,
        head_of_line_cap: bool = True,
    ) -> None:
        self.edf = DeadlineQueue(default_priority, slo)
        super().__init__(max_batch, self.edf, dispatcher, max_queue_size=max_queue_size)
        self.profile = profile
        self.slo = slo
        self._arrivals: deque[float] = deque(maxlen=max(2, rate_window))
        self._budgets: deque[float] = deque(maxlen=max(2, rate_window))
        """Deadline minus arrival of the last accepted requests (the head-of-line cap's budget)."""
        self.efficient_cap = efficient_cap
        """Whether batches are capped at the profile's most efficient size (False: for ablations)."""
        self.head_of_line_cap = head_of_line_cap
        """Whether batches are capped at half the smallest recent budget (False: for ablations)."""
        self._efficient: dict[tuple[int, int, int], tuple[int, int]] = {}
        """Most efficient and knee batch sizes per (cores, batches sharing the hardware, ``max_batch``)."""
        self.shared_hardware = shared_hardware
        """True: the model's instances share one machine, so every running batch slows a new one."""
        self._instances = 1
        self._running = 0
        """Batches running (or dispatched in this ``decide``) that a new batch would run beside."""
        self._best_single = 0.0
        """Tail latency of a batch of one on the fastest instance seen at the last ``decide`` (0 before)."""
        self._free = 1
        """Instances that can take a batch now (counted in ``decide``, less those given one since)."""
        self._ratios = SortedWindow(calibration_window)
        """Observed / predicted median latency of the last finished batches (none kept: calibration off)."""
        self.plan_queue = plan_queue
        """Whether the wider batch must leave fewer planned misses than the base one (False: it
        always replaces it, the rule before; for ablations)."""
        self._calibration_min = max(1, calibration_min)
        self._calibration_band = calibration_band
        self.latency_scale = 1.0
        """What the profile's latencies are multiplied by: the median of ``_ratios`` once there are
        ``calibration_min`` of them and it is more than ``calibration_band`` away from 1, else 1."""
        self._tail_ratios = SortedWindow(tail_window)
        """Observed / predicted median latency of the last ``tail_window`` finished batches."""
        self._tail_min = max(1, tail_min)
        self._dispatched = 0
        """Batches dispatched so far (a finished batch that sees more than at its dispatch ran
        beside later ones)."""
        self.tail_ratio = 0.0
        """The 99th percentile of ``_tail_ratios`` once there are ``tail_min`` of them (else 0):
        a batch's learnt tail is this times its profiled median."""
        self._tails: dict[tuple[int, int, int], float] = {}
        """``_tail`` per (batch, cores, sharing), valid for the calibration in ``_tails_for``."""
        self._tails_for = (self.latency_scale, self.tail_ratio)

    # ----------------------------------------------------------------- driver calls
    def submit(self, now: float, request: Request) -> Drop | None:
        """Called on arrival: refuses a request hopeless even alone on the fastest instance."""
        deadline = self.edf.deadline(request)
        if now + self._best_single > deadline:
            return Drop(request, _late_reason(deadline, now))
        drop = super().submit(now, request)
        if drop is None:
            self._arrivals.append(now)
            self._budgets.append(deadline - now)
        return drop

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        """Records how many instances share the load, how many are free, and the fastest one, then
        dispatches."""
        live = [i for i in instances if i.available]
        self._instances = max(1, len(live))
        self._free = max(1, sum(1 for i in live if i.free))
        if live:
            self._best_single = min(self._tail(1, i.cores, 1) for i in live)
        self._running = sum(i.in_flight for i in instances)
        return super().decide(now, instances)

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        """Called when a batch finished: its latency against the median predicted at dispatch
        recalibrates ``latency_scale`` and ``tail_ratio``."""
        predicted = batch.meta.get("predicted_s", 0.0)
        if not (predicted > 0 and math.isfinite(latency) and latency > 0):
            return
        ratio = latency / predicted
        self._ratios.add(ratio)
        if len(self._ratios) >= self._calibration_min:
            median = self._ratios.upper_median()
            self.latency_scale = median if abs(median - 1.0) > self._calibration_band else 1.0
        if self.shared_hardware and self._dispatched > batch.meta.get("dispatched", 0.0):
            return  # slowed by batches started after it: not its own spread
        self._tail_ratios.add(ratio)
        if len(self._tail_ratios) >= self._tail_min:
            self.tail_ratio = self._tail_ratios.quantile(0.99)

    # ----------------------------------------------------------------- the rule
    def _sharing(self, instance: InstanceView) -> int:
        """Batches a new one on ``instance`` would run beside, itself included: all of the model's
        running batches (``shared_hardware``) or the instance's own, plus one."""
        return (self._running if self.shared_hardware else instance.in_flight) + 1

    def tail(self, batch: int, instance: InstanceView) -> float:
        """Predicted p99 latency of ``batch`` started on ``instance`` now, slowed by the batches
        running beside it."""
        return self._tail(batch, instance.cores, self._sharing(instance))

    def _tail(self, batch: int, cores: int, sharing: int) -> float:
        """The profile's p99 latency scaled by the median's calibration, or the learnt tail
        (``tail_ratio`` times the profiled median) where that is more than the band above it;
        remembered until the calibration changes (the rules ask for the same few sizes many times)."""
        key = (batch, cores, sharing)
        if self._tails_for == (self.latency_scale, self.tail_ratio):
            known = self._tails.get(key)
            if known is not None:
                return known
        else:
            self._tails.clear()
            self._tails_for = (self.latency_scale, self.tail_ratio)
        tail = self.latency_scale * self.profile.tail_latency(batch, cores, sharing)
        if self.tail_ratio > 0:
            learnt = self.tail_ratio * self.profile.latency(batch, cores, sharing)
            if learnt > (1.0 + self._calibration_band) * tail:
                tail = learnt
        self._tails[key] = tail
        return tail

    def arrival_rate(self, now: float) -> float:
        """Requests/s over the last ``rate_window`` arrivals (0 with fewer than two)."""
        if len(self._arrivals) < 2:
            return 0.0
        span = max(now, self._arrivals[-1]) - self._arrivals[0]
        return (len(self._arrivals) - 1) / span if span > 0 else math.inf

    def next_batch(self, now: float, instance: InstanceView, drops: list[Decision]) -> Batch | float | None:
        single = self.tail(1, instance)

        def hopeless(item: _Item) -> bool:
            rows = item[3].rows
            return now + single > item[1] or (rows > 1 and now + self.tail(rows, instance) > item[1])

        for r in self.edf.remove_if(hopeless):
            drops.append(Drop(r, _late_reason(self.edf.deadline(r), now)))
        items = self.edf.ordered()
        if not items:
            return None
        limit = self.batch_limit(instance)
        size, rows, earliest = self._prefix(items, now, instance, limit)
        assert size > 0, "the hopeless were dropped above: the head makes it alone"
        chosen = items[:size]
        if size < len(items) and rows + items[size][3].rows <= limit:  # the deadline cut it
            wider = self._widest(now, instance, items, rows, limit)
            if wider is not None and (
                not self.plan_queue
                or self._planned_misses(now, instance, items, wider, limit)
                < self._planned_misses(now, instance, items, chosen, limit)
            ):
                chosen = wider
        elif size == len(items):
            wake = self._wait_until(now, instance, rows, earliest, limit)
            if wake is not None:
                return wake
        self.edf.remove_ids({item[2] for item in chosen})
        batch = Batch(tuple(item[3] for item in chosen))
        batch.meta["predicted_s"] = self.profile.latency(batch.size, instance.cores, self._sharing(instance))
        self._running += 1
        self._dispatched += 1
        batch.meta["dispatched"] = float(self._dispatched)
        self._free = max(1, self._free - 1)
        return batch

    def batch_limit(self, instance: InstanceView) -> int:
        """The most rows a batch on ``instance`` may have now: ``max_batch``; with
        ``efficient_cap`` at most the profile's most efficient size; with ``head_of_line_cap`` no
        longer, by its tail, than half the smallest recent budget, unless that means a batch
        below the smallest one within :data:`HEAD_OF_LINE_LOSS` of the peak throughput."""
        efficient, knee = self._efficient_sizes(instance)
        limit = min(self.max_batch, efficient) if self.efficient_cap else self.max_batch
        if self.head_of_line_cap and self._budgets and knee < limit:
            half = min(self._budgets) / 2
            # the tail grows with the batch: the largest b in [knee, limit] with tail(b) <= half
            lo, hi = knee, limit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.tail(mid, instance) <= half:
                    lo = mid
                else:
                    hi = mid - 1
            limit = lo
        return limit

    def _efficient_sizes(self, instance: InstanceView) -> tuple[int, int]:
        """``(most efficient, knee)`` batch sizes up to ``max_batch`` on ``instance`` now, by the
        profile's median throughput ``b / l(b)``: the size of the peak, and the smallest size
        within :data:`HEAD_OF_LINE_LOSS` of it."""
        sharing = self._sharing(instance)
        key = (instance.cores, sharing, self.max_batch)
        sizes = self._efficient.get(key)
        if sizes is None:
            rates = [
                b / self.profile.latency(b, instance.cores, sharing) for b in range(1, self.max_batch + 1)
            ]
            peak = max(rates)
            sizes = (
                rates.index(peak) + 1,
                next(b for b, r in enumerate(rates, 1) if r >= (1 - HEAD_OF_LINE_LOSS) * peak),
            )
            self._efficient[key] = sizes
        return sizes

    def _prefix(
        self, items: Sequence[_Item], start: float, instance: InstanceView, limit: int
    ) -> tuple[int, int, float]:
        """The largest EDF prefix of ``items`` within ``limit`` rows that, started at ``start``,
        meets its earliest deadline: ``(requests, rows, earliest deadline)``; ``(0, 0, inf)`` when
        even the first misses alone."""
        earliest = math.inf
        size = rows = 0
        for item in items:
            more = item[3].rows
            if size and rows + more > limit:
                break
            if start + self.tail(rows + more, instance) > min(earliest, item[1]):
                break
            earliest, size, rows = min(earliest, item[1]), size + 1, rows + more
        return size, rows, earliest

    def _planned_misses(
        self, now: float, instance: InstanceView, items: Sequence[_Item], first: Sequence[_Item], limit: int
    ) -> int:
        """Requests of the queue ``items`` predicted to miss their deadlines if ``first`` runs now
        and the rest follow in base batches one after another (no further arrivals assumed)."""
        taken = {item[2] for item in first}
        rest = [item for item in items if item[2] not in taken]
        at = now + self.tail(sum(item[3].rows for item in first), instance)
        misses = head = 0
        while head < len(rest):
            size, rows, _ = self._prefix(rest[head:], at, instance, limit)
            if size == 0:  # the head misses even alone
                misses += 1
                head += 1
            else:
                at += self.tail(rows, instance)
                head += size
        return misses

    def typical(self, batch: int, instance: InstanceView) -> float:
        """Predicted median latency of ``batch`` on ``instance`` now (throughput judgements)."""
        return self.latency_scale * self.profile.latency(batch, instance.cores, self._sharing(instance))

    def _keep_up_size(self, now: float, instance: InstanceView, cap: int) -> int:
        """Smallest batch whose typical throughput matches this instance's share of the arrival
        rate (``cap + 1`` when none up to ``cap`` does)."""
        share = self.arrival_rate(now) / self._instances
        return next((b for b in range(1, cap + 1) if b / self.typical(b, instance) >= share), cap + 1)

    def _widest(
        self, now: float, instance: InstanceView, items: list[_Item], rows: int, limit: int
    ) -> list[_Item] | None:
        """When batches of ``rows`` would fall behind the arrivals: the smallest batch that keeps
        up (else the largest) among those whose members all make it — EDF among the requests that
        can, passing over the most urgent. None when batches of ``rows`` keep up or none fits."""
        cap = min(limit, self.edf.rows)
        need = self._keep_up_size(now, instance, cap)
        if rows >= need:
            return None
        by_deadline = sorted((item[1], item[3].rows) for item in items)
        deadlines = [d for d, _ in by_deadline]
        # rows_from[i]: rows of the requests with the i-th smallest deadline or a later one
        rows_from = [*itertools.accumulate((n for _, n in reversed(by_deadline)), initial=0)][::-1]
        fits = [
            b
            for b in range(rows + 1, cap + 1)
            if rows_from[bisect.bisect_left(deadlines, now + self.tail(b, instance))] >= b
        ]
        if not fits:
            return None
        b = next((b for b in fits if b >= need), fits[-1])
        ready = now + self.tail(b, instance)
        chosen: list[_Item] = []
        taken = 0
        for item in items:
            if item[1] >= ready:
                if taken + item[3].rows > b:
                    break
                chosen.append(item)
                taken += item[3].rows
        return chosen or None

    def _wait_until(
        self, now: float, instance: InstanceView, size: int, earliest: float, limit: int
    ) -> float | None:
        """The time to hold a batch of ``size`` (the whole queue) until, or None to run it now."""
        if size >= limit or math.isinf(earliest):
            return None  # batch full, or no deadline to wait against
        latest_start = earliest - self.tail(size + 1, instance)
        rate = self.arrival_rate(now) / self._free
        if latest_start <= now or rate <= 0:
            return None
        gap = 1.0 / rate
        gain = self.added_capacity(self._sharing(instance))
        if gain > 0:
            alone = self.latency_scale * self.profile.latency(size, instance.cores, 1)
            bigger = self.latency_scale * self.profile.latency(size + 1, instance.cores, 1)
            now_rate = size * gain / alone
            waited_rate = (size + 1) / (gap + bigger / gain)
            if waited_rate <= now_rate:
                return None  # idling for the next request costs more throughput than it brings
        return min(latest_start, now + gap)

    def added_capacity(self, k: int) -> float:
        """Batches' worth of throughput the hardware gains by running ``k`` batches at once instead
        of ``k - 1``: ``k/s(k) - (k-1)/s(k-1)`` with the profile's slowdown ``s`` (1 without one)."""
        if k <= 1:
            return 1.0
        one = self.profile.latency(1, 1, 1)
        return k * one / self.profile.latency(1, 1, k) - (k - 1) * one / self.profile.latency(1, 1, k - 1)


class SloBatcherParams(SloParams, BatchCapParams):
    """``slo_ms`` (default the model's SLO; requests may carry their own deadlines instead),
    ``max_batch_size`` (default the model's), and the knobs of :class:`SloBatcher` of the same
    names, for ablations and tuning."""

    rate_window: Annotated[int, Number, Field(ge=2)] = 32
    shared_hardware: bool = True
    calibration_window: Index = 64
    calibration_min: Count = 8
    calibration_band: NonNegative = 0.05
    tail_window: Index = TAIL_WINDOW
    tail_min: Count = 64
    plan_queue: bool = True
    efficient_cap: bool = True
    head_of_line_cap: bool = True


def make_slo_batcher(ctx: PolicyContext, **params: Any) -> SloBatcher:
    """Registry factory (:class:`SloBatcherParams`); needs the model's profile."""
    p = parse_params(SloBatcherParams, params, "slo")
    if ctx.profile is None:
        raise ValueError(f"model {ctx.model!r}: scheduler 'slo' needs a latency profile")
    knobs = p.model_dump(exclude={"slo_ms", "max_batch_size"})
    return SloBatcher(
        ctx.profile,
        max_batch=p.batch_cap(ctx),
        slo=p.slo_or_none(ctx),
        default_priority=ctx.default_priority,
        max_queue_size=ctx.max_queue_size,
        **knobs,
    )
