"""Requests and batches: the units every policy, driver and report talks about."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request as a policy sees it. Times are seconds on the driver's clock."""

    id: int
    """Unique per driver run (the server numbers requests as they arrive)."""
    model: str
    """Name of the model (or pipeline step) the request is for."""
    arrival: float
    """When the request reached the scheduler."""
    deadline: float = math.inf
    """Absolute time by which the answer must be sent; ``inf`` when the request has no SLO."""
    priority: int = 0
    """Triton convention: 0 = the model's default level, 1 = highest, larger = lower."""
    payload_bytes: int = 0
    """Size of the request body; used by network-delay and receive-cost models."""
    rows: int = 1
    """Batch rows the request brings (a client-side batch of ``rows`` samples, answered as one)."""

    @property
    def slo(self) -> float:
        """The latency budget the request arrived with (``deadline - arrival``)."""
        return self.deadline - self.arrival


@dataclass(frozen=True, slots=True)
class Batch:
    """Requests that run together in one call of a model instance."""

    requests: tuple[Request, ...]
    """The real requests, in the order the policy chose."""
    padding: int = 0
    """Dummy requests added to reach a batch size (Harpagon); they cost time but have no answer."""
    meta: dict[str, float] = field(default_factory=dict, compare=False)
    """Free-form numbers a policy wants back with the completion (e.g. predicted finish)."""
    rows: int = field(init=False, compare=False)
    """Rows of real requests: the sum of their ``rows`` (``len(requests)`` when each has one)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", sum(r.rows for r in self.requests))

    @property
    def size(self) -> int:
        """The batch size the model runs, in rows, padding included."""
        return self.rows + self.padding

    @property
    def earliest_deadline(self) -> float:
        """The tightest deadline in the batch (``inf`` for an empty batch)."""
        return min((r.deadline for r in self.requests), default=math.inf)
