"""A sliding window of the last ``n`` values, kept sorted as well, for quantiles on every update.

Policies that recalibrate after every finished batch (the SLO-aware batcher's median and tail)
read a quantile of the last few hundred observations each time one arrives. Sorting the window
for each read cost more than the rest of the batcher's bookkeeping for the batch; this keeps a
sorted copy up to date instead: one binary search to drop the oldest value, one to insert the new.
"""

from __future__ import annotations

import bisect
import math
from collections import deque


class SortedWindow:
    """The last ``size`` values added (``size=0``: none are kept), and their order statistics."""

    __slots__ = ("_order", "_sorted", "size")

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._order)

    def add(self, value: float) -> None:
        """Called with each new observation; the oldest one leaves once the window is full."""
        if self.size == 0:
            return
        if len(self._order) == self.size:
            oldest = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._order.append(value)
        bisect.insort(self._sorted, value)

    def upper_median(self) -> float:
        """The value at index ``len // 2`` of the sorted window (the upper of two middles)."""
        return self._sorted[len(self._sorted) // 2]

    def quantile(self, q: float) -> float:
        """The smallest value with at least a share ``q`` of the window at or below it."""
        return self._sorted[max(0, math.ceil(q * len(self._sorted)) - 1)]
