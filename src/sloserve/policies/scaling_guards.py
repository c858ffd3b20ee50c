"""Guards composed around any scaler: replica bounds and up/down-scale delays (Ray Serve's names).

:class:`BoundedScaler` wraps a :class:`~sloserve.policies.base.Scaler`. Its ``SetInstanceCount``
decisions are clamped to ``[min_replicas, max_replicas]``, and a change of count is passed on only
once the inner scaler has asked for more (fewer) instances than run now at every tick for
``upscale_delay_s`` (``downscale_delay_s``) seconds — Ray Serve's meaning of these fields. Other
decisions pass through unchanged. Sans-I/O: the time comes in with each tick.
"""

from __future__ import annotations

import math

from sloserve.core.cluster import WindowStats
from sloserve.core.decisions import ScaleDecision, SetInstanceCount
from sloserve.policies.base import Scaler


class BoundedScaler:
    """See the module docstring."""

    def __init__(
        self,
        inner: Scaler,
        *,
        min_replicas: int = 0,
        max_replicas: int = 1 << 30,
        upscale_delay_s: float = 0.0,
        downscale_delay_s: float = 0.0,
    ) -> None:
        if min_replicas < 0 or max_replicas < max(1, min_replicas):
            raise ValueError(f"need 0 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}")
        if upscale_delay_s < 0 or downscale_delay_s < 0:
            raise ValueError("scale delays must be >= 0")
        self.inner = inner
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.upscale_delay_s = upscale_delay_s
        self.downscale_delay_s = downscale_delay_s
        self._up_since = math.nan
        self._down_since = math.nan
        self._wanted: SetInstanceCount | None = None
        """The count the inner scaler last asked for: scalers ask once, when their count changes,
        and it stays wanted while the delay runs (forgotten, no held-back change was ever applied)."""

    @property
    def interval(self) -> float:
        return self.inner.interval

    @property
    def onset_delay(self) -> float | None:
        return self.inner.onset_delay

    def clamp(self, count: int) -> int:
        """``count`` within the replica bounds."""
        return max(self.min_replicas, min(self.max_replicas, count))

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        out: list[ScaleDecision] = []
        for decision in self.inner.on_tick(now, window):
            if isinstance(decision, SetInstanceCount):
                self._wanted = SetInstanceCount(decision.model, self.clamp(decision.count))
            else:
                out.append(decision)
        if self._wanted is None or self._wanted.count == window.instances:
            self._up_since = self._down_since = math.nan
            return out
        model, wanted = self._wanted.model, self._wanted.count
        if wanted > window.instances:
            self._down_since = math.nan
            if math.isnan(self._up_since):
                self._up_since = now
            if now - self._up_since >= self.upscale_delay_s:
                out.append(SetInstanceCount(model, wanted))
                self._up_since = math.nan
        else:
            self._up_since = math.nan
            if math.isnan(self._down_since):
                self._down_since = now
            if now - self._down_since >= self.downscale_delay_s:
                out.append(SetInstanceCount(model, wanted))
                self._down_since = math.nan
        return out
