"""Shared mechanics of queue-based schedulers: admission, the dispatch loop, taking batches.

A subclass says only what batch to form next (:meth:`QueueScheduler.next_batch`); this class owns
the queue, refuses requests when the queue is full, pairs batches with free instances through a
dispatcher, and turns the subclass's wishes into decision values.
"""

from __future__ import annotations

from collections.abc import Sequence

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.request import Batch, Request
from sloserve.policies.base import Dispatcher
from sloserve.policies.dispatch import LeastLoadedDispatcher
from sloserve.policies.queues import FifoQueue, RequestQueue


class QueueScheduler:
    """Base class for batchers over one queue; see the module docstring."""

    def __init__(
        self,
        max_batch: int,
        queue: RequestQueue | None = None,
        dispatcher: Dispatcher | None = None,
        *,
        drop_expired: bool = False,
        max_queue_size: int = 0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._max_batch = max_batch
        self.queue: RequestQueue = queue if queue is not None else FifoQueue()
        self.dispatcher: Dispatcher = dispatcher if dispatcher is not None else LeastLoadedDispatcher()
        self.drop_expired = drop_expired
        """When true, requests whose deadline has passed are dropped instead of run (REJECT)."""
        self.max_queue_size = max_queue_size
        """Requests beyond this many waiting are refused at arrival (0: unbounded)."""

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def set_max_batch(self, max_batch: int) -> None:
        self._max_batch = max(1, max_batch)

    def __len__(self) -> int:
        return len(self.queue)

    def submit(self, now: float, request: Request) -> Drop | None:
        if self.max_queue_size and len(self.queue) >= self.max_queue_size:
            return Drop(request, DropReason.QUEUE_FULL)
        self.queue.push(request)
        return None

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        out: list[Decision] = []
        if not len(self.queue):
            return out
        candidates = [i for i in instances if i.free]
        assigned: dict[int, int] = {}
        while candidates and len(self.queue):
            instance = self.dispatcher.choose(now, candidates)
            step = self.next_batch(now, instance, out)
            if step is None:
                break
            if isinstance(step, float):
                out.append(WaitUntil(step))
                break
            out.append(Dispatch(step, instance.id))
            assigned[instance.id] = assigned.get(instance.id, 0) + 1
            if instance.in_flight + assigned[instance.id] >= instance.max_concurrency:
                candidates = [c for c in candidates if c.id != instance.id]
        return out

    def next_batch(self, now: float, instance: InstanceView, drops: list[Decision]) -> Batch | float | None:
        """Called by :meth:`decide` for a free ``instance``; the batch to run on it now, or the
        time to ask again (a float), or None to wait for the next event. May append ``Drop``s."""
        raise NotImplementedError

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        """Batchers here learn nothing from completions."""

    def cancel(self, now: float, request: Request) -> bool:
        return self.queue.remove(request.id) is not None

    def drain(self, now: float, reason: DropReason) -> list[Drop]:
        out = []
        while len(self.queue):
            out.append(Drop(self.queue.pop(), reason))
        return out

    def take(self, n: int, now: float, drops: list[Decision]) -> Batch | None:
        """Pop requests in queue order into a batch of at most ``n`` rows (a request of more rows
        than ``n`` goes alone, first); expired ones are dropped instead when ``drop_expired`` is
        set. Stops at the first request that does not fit, so queue order holds. None when nothing
        runnable was left."""
        queue = self.queue
        picked: list[Request] = []
        rows = 0
        while len(queue) and (rows + queue.peek().rows <= n or not picked):
            r = queue.pop()
            if self.drop_expired and r.deadline < now:
                drops.append(Drop(r, DropReason.QUEUE_TIMEOUT))
                continue
            picked.append(r)
            rows += r.rows
        return Batch(tuple(picked)) if picked else None

    def drop_expired_head(self, now: float, drops: list[Decision]) -> None:
        """Drop expired requests at the head of the queue (when ``drop_expired`` is set)."""
        if not self.drop_expired:
            return
        queue = self.queue
        while len(queue) and queue.peek().deadline < now:
            drops.append(Drop(queue.pop(), DropReason.QUEUE_TIMEOUT))
