"""Ray Serve's ``@serve.batch``: ``max_batch_size`` and ``batch_wait_timeout_s``.

Rule (Ray Serve's documented behaviour): once a replica is ready for a batch and a request is
waiting, collect for at most ``batch_wait_timeout_s`` or until ``max_batch_size`` requests are
there, then run. Requests are never dropped for lateness; they run and count as misses.
"""

from __future__ import annotations

from typing import Any

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision
from sloserve.core.request import Batch
from sloserve.policies.base import Dispatcher, PolicyContext
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.params import BatchCapParams, Wait, parse_params


class RayServeBatcher(QueueScheduler):
    """Ray-Serve-like batching (see module docstring). Defaults are Ray Serve's: 10 and 10 ms."""

    def __init__(
        self,
        max_batch_size: int = 10,
        batch_wait_timeout_s: float = 0.01,
        *,
        max_queue_size: int = 0,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        if batch_wait_timeout_s < 0:
            raise ValueError(f"batch_wait_timeout_s must be >= 0, got {batch_wait_timeout_s}")
        super().__init__(max_batch_size, None, dispatcher, max_queue_size=max_queue_size)
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self._window_start: float | None = None

    def next_batch(self, now: float, instance: InstanceView, drops: list[Decision]) -> Batch | float | None:
        n = min(self.queue.rows, self.max_batch)
        if n == 0:
            return None
        if self._window_start is None:
            self._window_start = now
        ready_at = self._window_start + self.batch_wait_timeout_s
        if n >= self.max_batch or now >= ready_at:
            self._window_start = None
            return self.take(n, now, drops)
        return ready_at


class RayParams(BatchCapParams):
    """Ray Serve's names: ``max_batch_size`` (default Ray's 10, capped by the model's) and
    ``batch_wait_timeout_s`` (default 0.01)."""

    batch_wait_timeout_s: Wait = 0.01


def make_ray(ctx: PolicyContext, **params: Any) -> RayServeBatcher:
    """Registry factory (:class:`RayParams`)."""
    p = parse_params(RayParams, params, "ray")
    return RayServeBatcher(
        max_batch_size=p.batch_cap(ctx, default=min(10, ctx.max_batch)),
        batch_wait_timeout_s=p.batch_wait_timeout_s,
        max_queue_size=ctx.max_queue_size,
    )
