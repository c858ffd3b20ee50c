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
- Slack of a request: ``deadline - now - pred(1, 1)``. With one profile per model, least slack is
  earliest deadline, so the queue is the EDF queue. Requests at the head with negative slack are
  dropped (``deadline_expired`` if the deadline has passed, else ``deadline_unreachable``).
- Batch on an instance running ``j`` batches: the largest ``b <= min(queued, max_batch)`` with
  ``now + pred(b, j+1) <= `` the head's deadline (the earliest in the batch).
- Waiting: an idle instance starts at once (work-conserving). A *concurrent* batch (``j > 0``) that
  would take every queued request waits, while slack allows, until the latest time a batch one
  larger could still start: ``head.deadline - pred(n+1, j+1) - margin``.
- Throttle: in-flight batches are tracked with their remaining work (progress at rate ``1/s(k)``
  while ``k`` run); with ``j`` running, another is admitted only if each in-flight batch would
  still end by its earliest deadline when slowed to ``s(j+1)``. When refused, the scheduler asks
  to be woken at the time the in-flight batches will have progressed enough.

Switches (for the ablation): ``reorder`` (EDF + early drop, else FIFO and no drops), ``batching``
(deadline-sized batches and slack-bounded waiting, else the largest available batch at once),
``throttle`` (else any free slot up to ``max_concurrency`` is used), ``wait`` (slack-bounded
waiting before a concurrent batch).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.profiles import ModelProfile
from sloserve.core.request import Batch
from sloserve.policies.base import Dispatcher, PolicyContext
from sloserve.policies.batching import QueueScheduler
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

    def predict(self, batch: int, cores: int, concurrent: int) -> float:
        """Predicted (tail) service time of a batch run with ``concurrent`` batches in flight."""
        return self.profile.tail_latency(batch, cores, 1) * self.slowdown(concurrent)

    # -- driver calls --------------------------------------------------------------------------
    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        out: list[Decision] = []
        for inst in instances:
            self._advance(now, inst.id)
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
        alone = self.predict(1, cores, 1)
        queue = self.queue
        while len(queue) and queue.peek().deadline - now - alone < 0:
            r = queue.pop()
            reason = DropReason.DEADLINE_EXPIRED if r.deadline < now else DropReason.DEADLINE_UNREACHABLE
            out.append(Drop(r, reason))

    def _earliest_deadlines(self, upto: int) -> list[float]:
        """Earliest deadline among the first ``b`` requests in queue order, for b = 1..upto."""
        if self.reorder:  # EDF: the head has the earliest deadline of any prefix
            return [self.queue.peek().deadline] * upto
        out: list[float] = []
        for r in itertools.islice(self.queue, upto):  # FIFO iterates in queue order
            out.append(min(r.deadline, out[-1]) if out else r.deadline)
        return out

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
        n = len(self.queue)
        upto = min(n, self.max_batch)
        head = self.queue.peek()
        k = running + 1
        if self.batching:
            b = self._largest_fitting(now, self._earliest_deadlines(upto), upto, inst.cores, k)
            if b == 0:
                if running > 0:
                    return self._throttle_wake(now, inst, running, head.deadline)
                b = 1  # nothing fits even alone: run the head anyway (reachable only with reorder off)
        else:
            b = upto
        if self.throttle and running > 0 and not self._in_flight_hold(now, inst.id, k):
            self.throttled += 1
            return self._throttle_wake(now, inst, running, head.deadline)
        if self.batching and self.wait and running > 0 and b == n and n < self.max_batch:
            latest = head.deadline - self.predict(n + 1, inst.cores, k) - self.margin
            if latest > now:
                return latest
        return self.take(b, now, drops)

    def _in_flight_hold(self, now: float, instance: int, k: int) -> bool:
        """Whether every batch in flight on ``instance`` still ends by its deadline at ``s(k)``."""
        s = self.slowdown(k)
        return all(now + r.remaining(s) <= r.deadline for r in self._running.get(instance, []))

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
            # f(t) = t + (remaining_now - (t - now)/s_now) * s_next must be <= deadline
            excess = now + r.remaining(s_next) - r.deadline
            if excess > 0:
                if ratio <= 1.0:
                    return None
                t = max(t, now + excess / (ratio - 1.0))
        if t <= now or t + self.predict(1, inst.cores, running + 1) > head_deadline:
            return None
        return t


def _flag(params: dict[str, Any], name: str, default: bool = True) -> bool:
    value = params.pop(name, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def make_cofb(ctx: PolicyContext, **params: Any) -> CoFBScheduler:
    """Registry factory. Parameters: ``reorder``, ``batching``, ``throttle``, ``wait`` (booleans,
    default on), ``slowdown`` (list of s(k) for k = 1, 2, ...; default the profile's),
    ``margin_ms``, ``max_batch_size``. Needs the model's profile."""
    if ctx.profile is None:
        raise ValueError(f"scheduler 'cofb' for model {ctx.model!r} needs a latency profile")
    slowdown = params.pop("slowdown", None)
    return CoFBScheduler(
        ctx.profile,
        max_batch=int(params.pop("max_batch_size", ctx.max_batch)),
        reorder=_flag(params, "reorder"),
        batching=_flag(params, "batching"),
        throttle=_flag(params, "throttle"),
        wait=_flag(params, "wait"),
        slowdown=None if slowdown is None else tuple(float(s) for s in slowdown),
        margin=float(params.pop("margin_ms", 0.0)) * 1e-3,
        default_priority=ctx.default_priority,
        max_queue_size=ctx.max_queue_size,
        **params,
    )
