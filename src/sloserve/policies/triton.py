"""Triton's dynamic batcher, as the baseline users know.

Rule (Triton's documented behaviour): if a preferred batch size can be formed, send the largest
one; if the queue holds ``max_batch`` requests, send them; otherwise hold until the oldest request
has waited ``max_queue_delay``, then send what is there. With no delay (Triton's default) it sends
at once. Queue order is FIFO, or priority-then-FIFO with several priority levels. Requests whose
timeout (deadline) passed while queued are rejected (``timeout_action: REJECT``) or run anyway
(``DELAY``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision
from sloserve.core.request import Batch
from sloserve.policies.base import Dispatcher, PolicyContext
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.params import MAX_SECONDS, BatchCapParams, Count, Number, parse_params
from sloserve.policies.queues import FifoQueue, PriorityQueue, RequestQueue


class TritonDynamicBatcher(QueueScheduler):
    """Triton-like dynamic batching (see module docstring)."""

    def __init__(
        self,
        max_batch: int,
        preferred_batch_sizes: Sequence[int] = (),
        max_queue_delay: float = 0.0,
        *,
        timeout_action: str = "reject",
        priority_levels: int = 1,
        default_priority: int = 1,
        max_queue_size: int = 0,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        if max_queue_delay < 0:
            raise ValueError(f"max_queue_delay must be >= 0, got {max_queue_delay}")
        if timeout_action not in ("reject", "delay"):
            raise ValueError(f"timeout_action must be 'reject' or 'delay', got {timeout_action!r}")
        bad = [p for p in preferred_batch_sizes if p < 1 or p > max_batch]
        if bad:
            raise ValueError(f"preferred_batch_sizes must lie in 1..max_batch={max_batch}, got {bad}")
        queue: RequestQueue = PriorityQueue(default_priority) if priority_levels > 1 else FifoQueue()
        super().__init__(
            max_batch,
            queue,
            dispatcher,
            drop_expired=timeout_action == "reject",
            max_queue_size=max_queue_size,
        )
        self.preferred = sorted(set(preferred_batch_sizes), reverse=True)
        self.max_queue_delay = max_queue_delay

    def next_batch(self, now: float, instance: InstanceView, drops: list[Decision]) -> Batch | float | None:
        self.drop_expired_head(now, drops)
        n = min(self.queue.rows, self.max_batch)
        if n == 0:
            return None
        if n >= self.max_batch:
            return self.take(n, now, drops)
        for size in self.preferred:
            if size <= n:
                return self.take(size, now, drops)
        ready_at = self.queue.oldest_arrival() + self.max_queue_delay
        if now >= ready_at:
            return self.take(n, now, drops)
        return ready_at


class TritonParams(BatchCapParams):
    """Triton's config names: ``max_batch_size``, ``preferred_batch_size``,
    ``max_queue_delay_microseconds``, ``timeout_action`` (``reject`` or ``delay``, any case)."""

    preferred_batch_size: tuple[Count, ...] = ()
    max_queue_delay_microseconds: Annotated[float, Number, Field(ge=0, le=MAX_SECONDS * 1e6)] = 0.0
    timeout_action: Literal["reject", "delay"] = "reject"

    @field_validator("timeout_action", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


def make_triton(ctx: PolicyContext, **params: Any) -> TritonDynamicBatcher:
    """Registry factory (:class:`TritonParams`) over the model context."""
    p = parse_params(TritonParams, params, "triton")
    return TritonDynamicBatcher(
        max_batch=p.batch_cap(ctx),
        preferred_batch_sizes=p.preferred_batch_size,
        max_queue_delay=p.max_queue_delay_microseconds * 1e-6,
        timeout_action=p.timeout_action,
        priority_levels=ctx.priority_levels,
        default_priority=ctx.default_priority,
        max_queue_size=ctx.max_queue_size,
    )
