"""A generic discrete-event loop on a virtual clock.

Actions are plain callables scheduled at a time; the loop runs them in time order (ties in the
order they were scheduled), advancing :attr:`EventLoop.now`. Nothing here knows about requests or
models: the cluster driver (:mod:`sloserve.sim.cluster`), CoFB's receive path and the RL
environment all drive their own actions on it.

Typical use::

    loop = EventLoop()
    loop.at(1.5, lambda: print("at", loop.now))
    h = loop.after(0.2, some_action)
    loop.cancel(h)
    loop.run(until=10.0)          # or: while loop.step(): ...
    loop.run_until(lambda: done)  # stop as soon as a condition holds (RL decision points)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

Action = Callable[[], None]
"""What an event does when its time comes; it may schedule or cancel further events."""


class EventLoop:
    """Heap-based event loop with a virtual clock (seconds).

    The loop owns the clock: :attr:`now` only moves forward, to the time of the event being run
    (or to ``until`` at the end of :meth:`run`). Scheduling in the past is an error.
    """

    __slots__ = ("_heap", "_live", "_seq", "now")

    def __init__(self, start: float = 0.0) -> None:
        self.now: float = start
        """The current virtual time; read it, never assign it from outside the loop's driver."""
        self._heap: list[tuple[float, int, Action]] = []
        self._live: set[int] = set()
        self._seq = 0

    def at(self, time: float, action: Action) -> int:
        """Schedule ``action`` at absolute ``time`` (>= :attr:`now`); returns a handle for :meth:`cancel`."""
        if not time >= self.now:  # also rejects NaN
            raise ValueError(f"cannot schedule at {time!r}: the clock is already at {self.now!r}")
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._heap, (time, seq, action))
        self._live.add(seq)
        return seq

    def after(self, delay: float, action: Action) -> int:
        """Schedule ``action`` ``delay`` (>= 0) seconds from now; returns a handle."""
        if not delay >= 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        return self.at(self.now + delay, action)

    def cancel(self, handle: int) -> None:
        """Forget a scheduled event. Cancelling one that already ran or was cancelled does nothing."""
        self._live.discard(handle)

    def pending(self, handle: int) -> bool:
        """Whether the event with ``handle`` is still scheduled."""
        return handle in self._live

    def peek(self) -> float:
        """Time of the next event, or ``inf`` when none is scheduled."""
        heap, live = self._heap, self._live
        while heap and heap[0][1] not in live:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def step(self) -> bool:
        """Run the next event (advancing :attr:`now` to its time); False when none is left."""
        heap, live = self._heap, self._live
        while heap:
            time, seq, action = heapq.heappop(heap)
            if seq in live:
                live.remove(seq)
                self.now = time
                action()
                return True
        return False

    def run(self, until: float = math.inf) -> None:
        """Run every event whose time is <= ``until``; then, if ``until`` is finite, set the clock to it.

        With the default it runs until no event is left (the clock stays at the last event's time).
        """
        heap, live = self._heap, self._live
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            time, seq, action = pop(heap)
            if seq in live:
                live.remove(seq)
                self.now = time
                action()
        if until != math.inf and until > self.now:
            self.now = until

    def run_until(self, predicate: Callable[[], bool], until: float = math.inf) -> bool:
        """Run events one by one until ``predicate()`` is true (checked before each event and after).

        Returns True when the predicate holds, False when the events (up to ``until``) ran out first.
        Used by drivers that stop at decision points, e.g. a reinforcement-learning environment.
        """
        while not predicate():
            if self.peek() > until or not self.step():
                return False
        return True

    def __len__(self) -> int:
        """Events still scheduled (cancelled ones excluded)."""
        return len(self._live)
