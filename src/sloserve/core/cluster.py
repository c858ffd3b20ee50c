"""What a policy may read about the instances a driver runs, and window statistics for scalers."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class InstanceView:
    """The state of one model instance, owned and updated in place by the driver.

    Policies read it and never write it; they change instances only through decisions.
    """

    id: int
    """Driver-wide instance number (stable while the instance lives)."""
    model: str
    """Model the instance serves."""
    cores: int = 1
    """Threads the instance runs with now."""
    hardware: str = "cpu"
    """Hardware type name of the machine the instance is on."""
    in_flight: int = 0
    """Batches running on the instance now."""
    max_concurrency: int = 1
    """Batches the instance may run at once (CoFB's throttle raises it)."""
    busy_until: float = 0.0
    """Predicted time the last running batch ends (<= now when idle)."""
    available: bool = True
    """False while starting (cold start), resizing or being removed."""

    @property
    def free(self) -> bool:
        """Whether the instance can take another batch now."""
        return self.available and self.in_flight < self.max_concurrency


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What happened to one model during the last control interval; scalers decide from it."""

    start: float
    """Start of the window (driver clock, seconds)."""
    end: float
    """End of the window; the scaler is called at this time."""
    arrivals: int
    """Requests that arrived in the window."""
    completed: int
    """Requests answered in the window."""
    dropped: int
    """Requests dropped in the window."""
    met: int
    """Requests answered in the window within their deadline."""
    mean_latency: float
    """Mean latency of the answered requests (seconds; 0 when none)."""
    p95_latency: float
    """95th percentile latency of the answered requests (seconds; 0 when none)."""
    queue_length: int
    """Requests waiting at the end of the window."""
    instances: int
    """Instances running at the end of the window."""
    cores: int
    """Cores in use by all instances at the end of the window."""
    max_batch: int
    """The scheduler's batch cap at the end of the window."""
    min_remaining_budget: float
    """Smallest ``deadline - arrival`` among the window's arrivals (``inf`` when none)."""
    first_arrival: float = math.inf
    """Time of the window's first arrival (``inf`` when none)."""

    @property
    def duration(self) -> float:
        """Window length in seconds."""
        return self.end - self.start

    @property
    def arrival_rate(self) -> float:
        """Arrivals per second over the window."""
        return self.arrivals / self.duration if self.duration > 0 else 0.0

    @property
    def onset_rate(self) -> float:
        """The arrival rate, or if higher the rate after the window's first arrival: ``arrivals - 1``
        over ``end - first_arrival``, that span taken as at least a quarter of the window.

        A window in which traffic began part-way (a model idle, then loaded) reads as a fraction of
        the rate that follows by :attr:`arrival_rate`; this reads it as the rate since it began.
        """
        if self.duration <= 0 or not math.isfinite(self.first_arrival):
            return self.arrival_rate
        span = min(self.duration, max(self.end - self.first_arrival, self.duration / 4))
        return max(self.arrival_rate, (self.arrivals - 1) / span)
