"""CoFB's flow scheduling in the server: request decoding on a pool of workers balanced by load.

Decoding a large infer body (:func:`~sloserve.runtime.codec.decode_http_infer`: the JSON header,
then the tensors over the body's binary part) runs on one of K decode workers (threads with their
own queue) instead of on the event loop; bodies under ``min_bytes`` are decoded inline. Which
worker a request goes to is decided by the same sans-I/O
:class:`~sloserve.policies.flow_steering.FlowSteering` policies the simulator's receive path runs:

- ``balance="connection"``: :class:`~sloserve.policies.flow_steering.StaticHashSteering`, a fixed
  hash of the connection (what RSS or a per-connection worker does);
- ``balance="load"``: :class:`~sloserve.policies.flow_steering.LoadSteering`, which every
  ``T_mon`` (1 ms) looks at each worker's pending bytes and re-steers whole connections from the
  busiest worker to the least loaded one when the busiest exceeds 1.2x the mean.

The connection a request came on is read from :data:`CONNECTION` (set by the HTTP server for the
task serving that connection). Everything here is called on the event loop's thread except the
decode functions themselves, which run on the workers.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

from sloserve.policies.flow_steering import FlowSteering, LoadSteering, StaticHashSteering

T = TypeVar("T")

CONNECTION: contextvars.ContextVar[int] = contextvars.ContextVar("sloserve_connection", default=0)
"""Id of the client connection the current request arrived on (0 when unknown)."""

Balance = Literal["load", "connection"]


class DecodePool:
    """K decode workers chosen by a flow-steering policy (see the module docstring)."""

    def __init__(
        self, workers: int, balance: Balance = "load", *, t_mon: float = 1e-3, min_bytes: int = 64 * 1024
    ) -> None:
        if workers < 1:
            raise ValueError(f"decode workers must be >= 1, got {workers}")
        if balance not in ("load", "connection"):
            raise ValueError(f"balance must be 'load' or 'connection', got {balance!r}")
        self.balance = balance
        self.min_bytes = min_bytes
        """Bodies smaller than this are decoded inline (a thread hop costs more than they do)."""
        self.steering: FlowSteering = (
            LoadSteering(workers, t_mon=t_mon) if balance == "load" else StaticHashSteering(workers)
        )
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sloserve-decode-{i}")
            for i in range(workers)
        ]
        self.pending_bytes = [0] * workers
        """Bytes submitted to each worker and not yet decoded (the load the policy samples)."""
        self.decoded = [0] * workers
        """Requests each worker decoded (for reports and tests)."""
        self._tick: asyncio.TimerHandle | None = None

    @property
    def workers(self) -> int:
        return len(self._executors)

    async def run(self, nbytes: int, decode: Callable[[], T]) -> T:
        """Decode a request of ``nbytes`` bytes from the current connection on its worker."""
        if nbytes < self.min_bytes:
            return decode()
        loop = asyncio.get_running_loop()
        flow = CONNECTION.get()
        q = self.steering.queue_of(flow)
        self.pending_bytes[q] += nbytes
        self.steering.on_bytes(loop.time(), flow, nbytes)
        if self._tick is None and math.isfinite(self.steering.interval):
            self._tick = loop.call_later(self.steering.interval, self._on_tick, loop)
        try:
            return await loop.run_in_executor(self._executors[q], decode)
        finally:
            self.pending_bytes[q] -= nbytes
            self.decoded[q] += 1

    def connection_closed(self, connection: int) -> None:
        """Called by the HTTP server when connection ``connection`` (a :data:`CONNECTION` id) has
        closed: the steering policy forgets its flow (else what it keeps per flow grows for ever,
        and so does the work of each tick)."""
        self.steering.on_flow_end(connection)

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tick = None
        self.steering.on_tick(loop.time(), [float(b) for b in self.pending_bytes])
        if any(self.pending_bytes):
            self._tick = loop.call_later(self.steering.interval, self._on_tick, loop)

    def close(self) -> None:
        """Stop the workers (after the decodes already submitted)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for ex in self._executors:
            ex.shutdown(wait=False)


__all__ = ["CONNECTION", "Balance", "DecodePool"]
