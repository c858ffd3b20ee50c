"""The open-loop load generator: sends requests at planned times, whatever the server does.

Open loop means a slow server does not slow the sender down: each request goes at its planned
time, and its latency is measured from that planned time (so a late send, by the client or by a
full connection pool, counts against the result instead of hiding it). Every request's outcome is
recorded; a refusal or a transport error is a miss, never an abort. ``client_lag`` tells how late
the generator itself sent: when it grows, the client is the limit, not the server.

Each request carries, as its ``timeout``, the time left to its deadline when it is sent (the SLO
less the send's lag behind plan), as a caller propagating a deadline would: a server told the full
SLO after the client already spent part of it would plan against a later deadline than the one
the latency is judged by. A request sent after its deadline carries 1 µs (the server refuses it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sloserve.bench.targets import SendResult, Target


@dataclass(slots=True)
class LoadResult:
    """Per-request outcomes of one run, in planned-send order (seconds from the run's start)."""

    planned: np.ndarray
    """Planned send times."""
    sent: np.ndarray
    """Actual send times."""
    done: np.ndarray
    """Times the answer or the refusal arrived (NaN if none by the end)."""
    ok: np.ndarray
    """True where the server answered with outputs."""
    slo: np.ndarray
    """Each request's latency objective (seconds; inf when none was sent)."""
    status: np.ndarray
    """HTTP status / gRPC code value per request; -1 transport error."""
    reasons: list[str]
    """Error text per request ('' on success)."""
    duration: float
    """Planned length of the run, seconds."""

    @property
    def latency(self) -> np.ndarray:
        """Latency from planned send to answer, seconds."""
        return np.asarray(self.done - self.planned)

    @property
    def met(self) -> np.ndarray:
        """Answered within the objective."""
        return self.ok & (self.latency <= self.slo)


async def run_open_loop(
    target: Target,
    planned: np.ndarray,
    slo: np.ndarray,
    *,
    priorities: np.ndarray | None = None,
    max_outstanding: int = 4096,
    on_progress: Callable[[int, int], None] | None = None,
    drain_timeout: float = 30.0,
) -> LoadResult:
    """Send ``len(planned)`` requests at ``planned`` times (seconds from now) with deadlines ``slo``.

    More than ``max_outstanding`` requests in flight makes the generator wait (and the wait shows
    up as latency, not as a silent skip). Requests still unanswered ``drain_timeout`` seconds after
    the last send end as transport errors.
    """
    n = len(planned)
    sent = np.full(n, np.nan)
    done = np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)
    status = np.full(n, -1, dtype=np.int32)
    reasons = [""] * n
    gate = asyncio.Semaphore(max_outstanding)
    finished = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def one(i: int, timeout_us: int | None) -> None:
        nonlocal finished
        prio = int(priorities[i]) if priorities is not None else 0
        try:
            res: SendResult = await target.send(timeout_us, prio)
        finally:
            gate.release()
        done[i] = loop.time() - t0
        ok[i], status[i], reasons[i] = res.ok, res.status, res.reason
        finished += 1

    tasks: list[asyncio.Task[None]] = []
    for i in range(n):
        delay = planned[i] - (loop.time() - t0)
        if delay > 0.0005:
            await asyncio.sleep(delay)
        await gate.acquire()
        sent[i] = loop.time() - t0
        left = slo[i] - max(0.0, sent[i] - planned[i])
        timeout_us = None if not np.isfinite(slo[i]) else max(1, int(left * 1e6))
        tasks.append(asyncio.create_task(one(i, timeout_us)))
        if on_progress is not None and i % 256 == 0:
            on_progress(i, finished)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
        for task in pending:
            task.cancel()
        for late in np.flatnonzero(np.isnan(done)):
            reasons[int(late)] = "no answer before the end of the run"
    if on_progress is not None:
        on_progress(n, finished)
    return LoadResult(planned, sent, done, ok, slo, status, reasons, float(planned[-1]) if n else 0.0)


def wall_clock() -> float:
    """Seconds since the epoch (for report stamps)."""
    return time.time()
