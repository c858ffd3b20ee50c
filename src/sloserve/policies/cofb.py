"""CoFB's model-side scheduler: least-slack reordering and batching with early drop, and
interference-aware concurrent batch throttling (SEEDS.md §2, mechanisms 2 and 3).

Paper (Zhang, Liu, Liu, Qian, J. Supercomputing 2023): fully received requests wait in least-slack
order; the batch is sized so that it finishes before the earliest deadline in it, including the
slowdown from batches already running; another concurrent batch is admitted only if every batch in
flight still meets its deadline under the profiled slowdown ``s(k)``.

*Ours (spec)*, where the text gives no exact rule:

- Prediction: ``pred(b, k) = profile.tail_latency(b, cores) · s(k)``; ``s(k)`` is the profile's
  slowdown (``latency(1, cores, k) / latency(1, cores, 1)``; measured by the profiler on the real
  server where a profile has it) unless ``slowdown`` is given.
- ``b_load``: the smallest batch whose throughput at the best concurrency an instance allows
  (``k·b / (latency(b)·s(k))``) keeps up with the arrival rate per instance, measured over the
  last ``rate_window`` seconds; 1 at light load.
- Slack of a request: ``deadline - now - pred(min(b_load, queued), 1)``. With one profile per
  model, least slack is earliest deadline, so the queue is the EDF queue. Requests at the head
  with negative slack are dropped (``deadline_expired`` if the deadline has passed, else
  ``deadline_unreachable``): a request that only a batch too small for the load could save is
  dropped rather than allowed to shrink every batch (Nexus-style early drop;
  ``load_aware_drop=False`` uses ``b_load = 1``, i.e. drops only what cannot make it alone).
- Batch on an instance running ``j`` batches: the largest ``b <= min(queued, max_batch)`` with
  ``now + pred(b, j+1) <= `` the earliest deadline among the first ``b`` (the head's under EDF).
  If none fits (possible only with reordering off), the largest available batch runs.
- Waiting, while slack allows, until the latest time a batch one larger could still start
  (``head.deadline - pred(n+1, j+1) - margin``), when the batch would take all ``n`` queued
  requests and: on an idle instance, ``n < b_load`` (at light load it starts at once); for a
  *concurrent* batch (``j > 0``), ``n < max_batch`` — concurrency is used when slack runs out,
  not to start small batches early (each one slows the running ones by ``s(k)``).
- Throttle, part 1 (interference-aware cap): a ``k``-th concurrent batch is never started unless
  each step up to ``k`` raises the throughput ``k / s(k)`` by at least ``min_concurrency_gain``
  (10%): for a model whose ``s(k)`` grows about like ``k`` concurrency only adds latency.
- Throttle, part 2: in-flight batches are tracked with their remaining work (progress at rate ``1/s(k)``
  while ``k`` run); with ``j`` running, another is admitted only if each in-flight batch that is
  on time now would still end by its earliest deadline when slowed to ``s(j+1)``, and the new
  batch, if on time alone, is on time at ``s(j+1)`` (a batch late anyway is not protected, so
  lateness cannot lock the instance at one batch). When refused, the scheduler asks to be woken
  when the in-flight batches will have progressed enough.

Switches (for the ablation): ``reorder`` (EDF + early drop, else FIFO and no drops), ``batching``
(deadline-sized batches and slack-bounded waiting, else the largest available batch at once),
``throttle`` (else any free slot up to ``max_concurrency`` is used), ``wait`` (the waiting
above).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.profiles import ModelProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.base import Dispatcher, PolicyContext
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.params import BatchCapParams, Interval, NonNegative, Slowdown, parse_params
from sloserve.policies.queues import EdfQueue, FifoQueue, RequestQueue


@dataclass(slots=True)
class _Running:
    """A dispatched batch as the throttle sees it."""

    key: int
    """Id of the batch's first request (unique among batches in flight)."""
    deadline: float
    """Earliest deadline in the batch."""
    work: float
    """Predicted service time if it ran alone (``pred(b, 1)``), seconds."""
    done: float = 0.0
    """Fraction of ``work`` done so far."""

    def remaining(self, slowdown: float) -> float:
        """Seconds left if ``slowdown`` holds from now on."""
        return max(0.0, 1.0 - self.done) * self.work * slowdown


class CoFBScheduler(QueueScheduler):
    """CoFB reordering, batching and throttling for one model (see module docstring)."""

    def __init__(
        self,
        profile: ModelProfile,
        max_batch: int,
        *,
        reorder: bool = True,
        batching: bool = True,
        throttle: bool = True,
        wait: bool = True,
        slowdown: Sequence[float] | None = None,
        margin: float = 0.0,
        load_aware_drop: bool = True,
        min_concurrency_gain: float = 0.1,
        rate_window: float = 0.25,
        default_priority: int = 1,
        max_queue_size: int = 0,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if slowdown is not None and any(s < 1.0 for s in slowdown):
            raise ValueError(f"slowdown factors must be >= 1, got {list(slowdown)}")
        queue: RequestQueue = EdfQueue(default_priority) if reorder else FifoQueue()
        super().__init__(max_batch, queue, dispatcher, max_queue_size=max_queue_size)
        self.profile = profile
        self.reorder = reorder
        self.batching = batching
        self.throttle = throttle
        self.wait = wait
        self.margin = margin
        self.load_aware_drop = load_aware_drop and reorder
        self.min_concurrency_gain = min_concurrency_gain
        self._track_rate = self.load_aware_drop or (batching and wait)
        self._b_load = 1
        self.rate_window = rate_window
        self._recent: deque[float] = deque()
        """Submit times within the last ``rate_window`` seconds (the arrival-rate estimate)."""
        self._slowdown = tuple(slowdown) if slowdown is not None else None
        self._running: dict[int, list[_Running]] = {}
        self._advanced_at: dict[int, float] = {}
        self.throttled = 0
        """Times the throttle refused a concurrent batch (a counter for reports)."""

    # -- predictions ---------------------------------------------------------------------------
    def slowdown(self, k: int) -> float:
        """``s(k)``: the factor by which each of ``k`` concurrent batches runs slower."""
        if k <= 1:
            return 1.0
        if self._slowdown is not None:
            table = self._slowdown
            if k <= len(table):
                return table[k - 1]
            step = table[-1] - table[-2] if len(table) > 1 else 0.0
            return table[-1] + step * (k - len(table)) if table else 1.0
        return self.profile.latency(1, 1, k) / self.profile.latency(1, 1, 1)

    def useful_concurrency(self, limit: int) -> int:
        """With the throttle: the largest ``k <= limit`` such that each step up to it raises the
        throughput ``k / s(k)`` by at least ``min_concurrency_gain``; without it, ``limit``."""
        if not self.throttle:
            return limit
        k = 1
        while k < limit and (k + 1) / self.slowdown(k + 1) >= k / self.slowdown(k) * (
            1 + self.min_concurrency_gain
        ):
            k += 1
        return k

    def predict(self, batch: int, cores: int, concurrent: int) -> float:
        """Predicted (tail) service time of a batch run with ``concurrent`` batches in flight."""
        return self.profile.tail_latency(batch, cores, 1) * self.slowdown(concurrent)

    def load_batch(self, now: float, instances: Sequence[InstanceView]) -> int:
        """``b_load``: the smallest batch whose throughput (at the best concurrency an instance
        allows, ``k·b / (latency(b)·s(k))``) keeps up with the recent arrival rate per instance."""
        if not self._track_rate:
            return 1
        recent = self._recent
        while recent and recent[0] < now - self.rate_window:
            recent.popleft()
        live = [i for i in instances if i.available] or list(instances)
        if not live:
            return 1
        per_instance = len(recent) / self.rate_window / len(live)
        cores = max(i.cores for i in live)
        kmax = self.useful_concurrency(max(i.max_concurrency for i in live))
        best_k = max(range(1, kmax + 1), key=lambda k: k / self.slowdown(k))
        gain = best_k / self.slowdown(best_k)
        for b in range(1, self.max_batch + 1):
            if gain * b / self.profile.latency(b, cores, 1) >= per_instance:
                return b
        return self.max_batch

    # -- driver calls --------------------------------------------------------------------------
    def submit(self, now: float, request: Request) -> Drop | None:
        if self._track_rate:
            self._recent.append(now)
        return super().submit(now, request)

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        out: list[Decision] = []
        for inst in instances:
            self._advance(now, inst.id)
        self._b_load = self.load_batch(now, instances)
        if self.reorder:
            self._drop_hopeless(now, instances, out)
        candidates = [i for i in instances if i.free]
        extra: dict[int, int] = {}
        wake = math.inf
        while candidates and len(self.queue):
            inst = self.dispatcher.choose(now, candidates)
            running = inst.in_flight + extra.get(inst.id, 0)
            step = self._batch_for(now, inst, running, out)
            if isinstance(step, float) or step is None:
                if step is not None:
                    wake = min(wake, step)
                candidates = [c for c in candidates if c.id != inst.id]
                continue
            out.append(Dispatch(step, inst.id))
            self._record(now, step, inst, running)
            extra[inst.id] = extra.get(inst.id, 0) + 1
            if running + 1 >= inst.max_concurrency:
                candidates = [c for c in candidates if c.id != inst.id]
        if len(self.queue) and math.isfinite(wake):
            out.append(WaitUntil(max(wake, now)))
        return out

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        self._advance(now, instance.id)
        if not batch.requests:
            return
        key = batch.requests[0].id
        running = self._running.get(instance.id, [])
        self._running[instance.id] = [r for r in running if r.key != key]

    # -- internals -----------------------------------------------------------------------------
    def _advance(self, now: float, instance: int) -> None:
        """Move the in-flight batches of ``instance`` forward to ``now`` at rate ``1/s(k)``."""
        running = self._running.get(instance)
        last = self._advanced_at.get(instance, now)
        self._advanced_at[instance] = now
        if not running or now <= last:
            return
        rate = (now - last) / self.slowdown(len(running))
        for r in running:
            if r.work > 0:
                r.done = min(1.0, r.done + rate / r.work)

    def _record(self, now: float, batch: Batch, inst: InstanceView, running: int) -> None:
        if not batch.requests:
            return
        self._running.setdefault(inst.id, []).append(
            _Running(batch.requests[0].id, batch.earliest_deadline, self.predict(batch.size, inst.cores, 1))
        )
        self._advanced_at[inst.id] = now

    def _drop_hopeless(self, now: float, instances: Sequence[InstanceView], out: list[Decision]) -> None:
        """Drop requests at the head whose slack is negative even on the fastest instance alone."""
        cores = max((i.cores for i in instances), default=1)
        queue = self.queue
        b_load = self._b_load if self.load_aware_drop else 1
        while (
            len(queue) and queue.peek().deadline - now - self.predict(min(b_load, queue.rows), cores, 1) < 0
        ):
            r = queue.pop()
            reason = DropReason.DEADLINE_EXPIRED if r.deadline < now else DropReason.DEADLINE_UNREACHABLE
            out.append(Drop(r, reason))

    def _earliest_deadlines(self, upto: int) -> list[float]:
        """Earliest deadline among the first ``b`` rows in queue order, for b = 1..upto (a request
        of ``n`` rows fills ``n`` places)."""
        if self.reorder:  # EDF: the head has the earliest deadline of any prefix
            return [self.queue.peek().deadline] * upto
        out: list[float] = []
        for r in self.queue:  # FIFO iterates in queue order
            earliest = min(r.deadline, out[-1]) if out else r.deadline
            out.extend([earliest] * r.rows)
            if len(out) >= upto:
                break
        return out[:upto]

    def _largest_fitting(self, now: float, deadlines: Sequence[float], upto: int, cores: int, k: int) -> int:
        """Largest ``b <= upto`` with ``now + pred(b, k) <= deadlines[b-1]`` (0 if none)."""
        lo, hi = 0, upto
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if now + self.predict(mid, cores, k) <= deadlines[mid - 1]:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _batch_for(
        self, now: float, inst: InstanceView, running: int, drops: list[Decision]
    ) -> Batch | float | None:
        """The batch to start on ``inst`` now, a time to ask again, or None (nothing fits here)."""
        n = self.queue.rows
        upto = min(n, self.max_batch)
        head = self.queue.peek()
        k = running + 1
        if running and k > self.useful_concurrency(inst.max_concurrency):
            return None
        if self.batching:
            b = self._largest_fitting(now, self._earliest_deadlines(upto), upto, inst.cores, k)
            if b == 0:
                if running > 0:
                    return self._throttle_wake(now, inst, running, head.deadline)
                b = upto  # nothing saves the head (reorder off): run the largest batch
        else:
            b = upto
        if (
            self.throttle
            and running > 0
            and not (self._in_flight_hold(now, inst.id, k) and self._new_batch_holds(now, b, inst.cores, k))
        ):
            self.throttled += 1
            return self._throttle_wake(now, inst, running, head.deadline)
        if self.batching and self.wait and b == n and n < self._b_load:
            latest = head.deadline - self.predict(n + 1, inst.cores, k) - self.margin
            if latest > now:
                return latest
        return self.take(b, now, drops)

    def _new_batch_holds(self, now: float, b: int, cores: int, k: int) -> bool:
        """Whether a batch of the first ``b`` queued requests, on time if run alone, stays on time
        run as the ``k``-th concurrent batch (a batch late anyway does not block concurrency)."""
        deadline = self._earliest_deadlines(b)[-1]
        return now + self.predict(b, cores, 1) > deadline or now + self.predict(b, cores, k) <= deadline

    def _in_flight_hold(self, now: float, instance: int, k: int) -> bool:
        """Whether every batch in flight on ``instance`` still ends by its deadline at ``s(k)``."""
        s_now, s_next = self.slowdown(k - 1), self.slowdown(k)
        return all(
            now + r.remaining(s_next) <= r.deadline
            for r in self._running.get(instance, [])
            if now + r.remaining(s_now) <= r.deadline
        )

    def _throttle_wake(
        self, now: float, inst: InstanceView, running: int, head_deadline: float
    ) -> float | None:
        """Earliest time the throttle would admit a 1-batch next to the in-flight ones, if the head
        can still make its deadline then; None when only a completion can help."""
        batches = self._running.get(inst.id, [])
        if not batches:
            return None
        s_now, s_next = self.slowdown(len(batches)), self.slowdown(running + 1)
        ratio = s_next / s_now
        t = now
        for r in batches:
            if now + r.remaining(s_now) > r.deadline:
                continue  # late anyway: not protected
            # f(t) = t + (remaining_now - (t - now)/s_now) * s_next must be <= deadline
            excess = now + r.remaining(s_next) - r.deadline
            if excess > 0:
                if ratio <= 1.0:
                    return None
                t = max(t, now + excess / (ratio - 1.0))
        if t <= now or t + self.predict(1, inst.cores, running + 1) > head_deadline:
            return None
        return t


class CoFBParams(BatchCapParams):
    """``max_batch_size`` (default the model's), ``slowdown`` (s(k) for k = 1, 2, ...; default the
    profile's), the switches ``reorder``, ``batching``, ``throttle``, ``wait`` (default on),
    ``margin_ms``, and :class:`CoFBScheduler`'s ``load_aware_drop``, ``min_concurrency_gain`` and
    ``rate_window`` (seconds)."""

    slowdown: Slowdown | None = None
    reorder: bool = True
    batching: bool = True
    throttle: bool = True
    wait: bool = True
    margin_ms: NonNegative = 0.0
    load_aware_drop: bool = True
    min_concurrency_gain: NonNegative = 0.1
    rate_window: Interval = 0.25


def make_cofb(ctx: PolicyContext, **params: Any) -> CoFBScheduler:
    """Registry factory (:class:`CoFBParams`); needs the model's profile."""
    p = parse_params(CoFBParams, params, "cofb")
    if ctx.profile is None:
        raise ValueError(f"scheduler 'cofb' for model {ctx.model!r} needs a latency profile")
    return CoFBScheduler(
        ctx.profile,
        max_batch=p.batch_cap(ctx),
        reorder=p.reorder,
        batching=p.batching,
        throttle=p.throttle,
        wait=p.wait,
        slowdown=None if p.slowdown is None else tuple(p.slowdown),
        margin=p.margin_ms * 1e-3,
        load_aware_drop=p.load_aware_drop,
        min_concurrency_gain=p.min_concurrency_gain,
        rate_window=p.rate_window,
        default_priority=ctx.default_priority,
        max_queue_size=ctx.max_queue_size,
    )
