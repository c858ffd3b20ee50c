"""A fixed-batch batcher: always runs batches of exactly ``batch_size`` (the static baseline)."""

from __future__ import annotations

import math
from typing import Any

from sloserve.core.cluster import InstanceView
from sloserve.core.config import ConfigError
from sloserve.core.decisions import Decision
from sloserve.core.request import Batch
from sloserve.policies.base import Dispatcher, PolicyContext
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.params import Count, PolicyParams, Wait, parse_params


class FixedBatcher(QueueScheduler):
    """Waits for ``batch_size`` requests; after ``max_wait`` seconds it sends a partial batch."""

    def __init__(
        self,
        batch_size: int,
        max_wait: float = math.inf,
        *,
        max_queue_size: int = 0,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        super().__init__(batch_size, None, dispatcher, max_queue_size=max_queue_size)
        self.max_wait = max_wait

    def next_batch(self, now: float, instance: InstanceView, drops: list[Decision]) -> Batch | float | None:
        n = self.queue.rows
        if n >= self.max_batch:
            return self.take(self.max_batch, now, drops)
        if n == 0 or math.isinf(self.max_wait):
            return None
        ready_at = self.queue.oldest_arrival() + self.max_wait
        if now >= ready_at:
            return self.take(n, now, drops)
        return ready_at


class FixedParams(PolicyParams):
    """``batch_size`` (default the model's max batch) and ``max_wait_s`` (default: wait for a full batch)."""

    batch_size: Count | None = None
    max_wait_s: Wait | None = None

    def batch(self, ctx: PolicyContext) -> int:
        """``batch_size``, else the model's largest batch; ConfigError when ``batch_size`` is above
        it (as :meth:`~sloserve.policies.params.BatchCapParams.batch_cap` for ``max_batch_size``)."""
        if self.batch_size is None:
            return ctx.max_batch
        if self.batch_size > ctx.max_batch:
            raise ConfigError(
                f"{self._policy!r} params: batch_size: {self.batch_size} is above the largest batch "
                f"of model {ctx.model!r} ({ctx.max_batch})"
            )
        return self.batch_size


def make_fixed(ctx: PolicyContext, **params: Any) -> FixedBatcher:
    """Registry factory (:class:`FixedParams`)."""
    p = parse_params(FixedParams, params, "fixed")
    return FixedBatcher(
        batch_size=p.batch(ctx),
        max_wait=p.max_wait_s if p.max_wait_s is not None else math.inf,
        max_queue_size=ctx.max_queue_size,
    )
