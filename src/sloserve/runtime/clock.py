"""The two things the serving loop needs from its environment: the time and a timer.

The server runs on :class:`MonotonicClock` and :class:`AsyncioTimers`; a test swaps in a manual
clock and a heap of timers (virtual time) and drives the very same loop code.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Seconds on a monotonic clock; the ``now`` every policy call receives."""

    def now(self) -> float: ...


class TimerHandle(Protocol):
    """A scheduled call that may still be cancelled."""

    def cancel(self) -> None: ...


class Timers(Protocol):
    """Runs a callback at a time on the loop's clock (on the loop's thread)."""

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class MonotonicClock:
    """``time.monotonic()``: the clock asyncio's own timers use."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()


class AsyncioTimers:
    """Timers on an asyncio event loop, with times given on ``clock``."""

    __slots__ = ("clock", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock) -> None:
        self.loop = loop
        self.clock = clock

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        delay = max(0.0, when - self.clock.now())
        return self.loop.call_at(self.loop.time() + delay, callback)


RECEIVED: contextvars.ContextVar[float] = contextvars.ContextVar("sloserve_received", default=math.nan)
"""``time.monotonic()`` when the request being handled reached the server (NaN when unknown): its
first byte over HTTP (set by the HTTP stack), the call's arrival over gRPC (set by an interceptor,
before the message is read); set in the handler's task, and a deadline budget counts from then."""


def seconds_since_received() -> float:
    """Seconds since the request being handled reached the server (0 when unknown); called by a
    front end's handler just before it submits the request."""
    received = RECEIVED.get()
    return time.monotonic() - received if math.isfinite(received) else 0.0
