"""Dispatchers: which free instance gets the next batch."""

from __future__ import annotations

from collections.abc import Sequence

from sloserve.core.cluster import InstanceView


class RoundRobinDispatcher:
    """Cycles through instances by id, skipping those without spare capacity."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = -1

    def choose(self, now: float, candidates: Sequence[InstanceView]) -> InstanceView:
        after = [c for c in candidates if c.id > self._last]
        chosen = min(after or candidates, key=lambda c: c.id)
        self._last = chosen.id
        return chosen


class LeastLoadedDispatcher:
    """Fewest batches in flight, then the earliest predicted free time, then the lowest id."""

    __slots__ = ()

    def choose(self, now: float, candidates: Sequence[InstanceView]) -> InstanceView:
        return min(candidates, key=lambda c: (c.in_flight, c.busy_until, c.id))
