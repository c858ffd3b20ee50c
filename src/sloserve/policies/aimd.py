"""Clipper's AIMD batch-size controller (the baseline DNNScaler and sloserve compare against).

Rule (SEEDS §3, Clipper, NSDI 2017): every ``interval`` (3 s) look at the p95 latency of the
requests answered since the last decision; below ``0.85·L`` add ``step`` (4) to the batch cap;
above ``L`` multiply it by ``backoff`` (0.9); in between, hold. ``L`` is the SLO.

Ours (*spec*): the decreased cap is ``floor(cap·0.9)`` but at least one less than before and at
least 1 (so a small cap still backs off); a window with no answers holds the cap; the cap stays in
``1..max_batch``. The batcher that forms the batches is whichever scheduler the model runs
(Clipper's own sends what is queued, up to the cap, as soon as a replica is free: ``triton`` with
no queue delay); this module only moves the cap, through ``SetMaxBatch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sloserve.core.cluster import WindowStats
from sloserve.core.decisions import ScaleDecision, SetMaxBatch
from sloserve.policies.base import PolicyContext
from sloserve.policies.params import Count, Fraction, Interval, SloParams, parse_params


@dataclass(slots=True)
class AimdController:
    """The AIMD state machine, without a clock: feed it one latency per decision."""

    slo: float
    """The latency objective L, seconds."""
    max_batch: int
    """Upper bound of the cap (the model's ``max_batch_size``)."""
    batch: int = 1
    """The current cap; starts at ``initial_batch``."""
    step: int = 4
    """Additive increase."""
    backoff: float = 0.9
    """Multiplicative decrease factor."""
    low: float = 0.85
    """Increase while the latency is below ``low·L``."""

    def __post_init__(self) -> None:
        if self.slo <= 0:
            raise ValueError(f"AIMD needs a positive SLO, got {self.slo}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 < self.backoff < 1:
            raise ValueError(f"backoff must lie in (0, 1), got {self.backoff}")
        self.batch = min(max(1, self.batch), self.max_batch)

    def update(self, latency: float) -> int:
        """Called once per decision with the observed (p95) latency in seconds; returns the new
        cap. A latency <= 0 (no answers in the window) holds the cap."""
        if latency <= 0:
            return self.batch
        if latency < self.low * self.slo:
            self.batch = min(self.max_batch, self.batch + self.step)
        elif latency > self.slo:
            self.batch = max(1, min(self.batch - 1, math.floor(self.batch * self.backoff)))
        return self.batch


class AimdScaler:
    """Scaler ``aimd``: every ``interval`` seconds moves the model's batch cap by AIMD on p95."""

    def __init__(self, model: str, controller: AimdController, interval: float = 3.0) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.model = model
        self.controller = controller
        self._interval = interval

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def onset_delay(self) -> float | None:
        return None

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        """Called every ``interval``; returns ``SetMaxBatch`` when the cap in force differs from
        AIMD's (compared with the window's cap, so a driver that started elsewhere is corrected)."""
        after = self.controller.update(window.p95_latency)
        return [SetMaxBatch(self.model, after)] if after != window.max_batch else []


class AimdParams(SloParams):
    """``slo_ms`` (default the model's SLO), ``initial_batch`` (1), ``step`` (4), ``backoff`` (0.9),
    ``interval_s`` (3)."""

    initial_batch: Count = 1
    step: Count = 4
    backoff: Fraction = 0.9
    interval_s: Interval = 3.0


def make_aimd(ctx: PolicyContext, **params: Any) -> AimdScaler:
    """Registry factory (:class:`AimdParams`)."""
    p = parse_params(AimdParams, params, "aimd")
    controller = AimdController(
        slo=p.slo(ctx),
        max_batch=ctx.max_batch,
        batch=p.initial_batch,
        step=p.step,
        backoff=p.backoff,
    )
    return AimdScaler(ctx.model, controller, p.interval_s)
