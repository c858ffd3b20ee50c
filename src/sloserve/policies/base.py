"""The contracts every policy follows.

Policies are sans-I/O: they never read a clock, sleep or touch a socket. A driver (the simulator
or the server) calls them with ``now`` and carries out the decisions they return.

Call order for a model's scheduler, on both drivers:

1. ``submit(now, request)`` when a request arrives (may refuse it at once);
2. ``decide(now, instances)`` after arrivals, whenever an instance becomes free, and when the time
   of a returned ``WaitUntil`` comes;
3. ``on_complete(now, batch, instance, latency)`` when a dispatched batch finishes;
4. ``drain(now, reason)`` when the model is unloaded or the run ends: every queued request ends;
5. ``cancel(now, request)`` (the server only) when a queued request's client has gone away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sloserve.core.cluster import InstanceView, WindowStats
from sloserve.core.config import ConfigError
from sloserve.core.decisions import Decision, Drop, DropReason, ScaleDecision
from sloserve.core.profiles import ModelProfile
from sloserve.core.request import Batch, Request


class PolicyError(ConfigError, RuntimeError):
    """A policy broke the contract of this module: a request dispatched or dropped when it was not
    waiting, one lost, a value that is not a decision, a batch or instance outside its limits, a
    scaler acting on another model. Raised by the drivers, naming the model, the policy and what it
    did: the simulator stops the run (the command line prints one line, exit 2), the server stops
    the model with it as its fault (every request still ends)."""


def short_repr(value: object, limit: int = 160) -> str:
    """``repr(value)`` cut to ``limit`` characters, for :class:`PolicyError` messages (a policy's
    value may be anything, and a plug-in's ``__repr__`` may raise)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Scheduler(Protocol):
    """Queues the requests of one model and decides which batches run where and when."""

    @property
    def max_batch(self) -> int:
        """The largest batch it may form now."""
        ...

    def set_max_batch(self, max_batch: int) -> None:
        """Called when a scaler's ``SetMaxBatch`` is applied."""
        ...

    def submit(self, now: float, request: Request) -> Drop | None:
        """Called on arrival; returns a ``Drop`` to refuse the request at once, else queues it."""
        ...

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        """Called after arrivals, when an instance frees and at a ``WaitUntil``; returns decisions.

        At most one ``WaitUntil`` is returned: the next time the scheduler wants to be asked.
        """
        ...

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        """Called when ``batch`` finished on ``instance`` after ``latency`` seconds of service."""
        ...

    def drain(self, now: float, reason: DropReason) -> list[Drop]:
        """Called on unload or at the end of a run; ends every queued request with ``reason``."""
        ...

    def cancel(self, now: float, request: Request) -> bool:
        """Called when the client of ``request`` has gone away; takes it out of the queue. Returns
        whether it was queued (False: already dispatched or dropped, nothing changes)."""
        ...

    def __len__(self) -> int:
        """Requests waiting."""
        ...


class Dispatcher(Protocol):
    """Chooses which of the instances that can take a batch now gets the next one."""

    def choose(self, now: float, candidates: Sequence[InstanceView]) -> InstanceView:
        """Called with a non-empty list of instances with spare capacity; returns one of them."""
        ...


class Scaler(Protocol):
    """Changes instances, cores or batch caps from what happened in the last control interval."""

    @property
    def interval(self) -> float:
        """Seconds between two calls of ``on_tick``."""
        ...

    @property
    def onset_delay(self) -> float | None:
        """Seconds after traffic begins (the first arrival after a window with none, or since the
        start) at which the scaler wants an extra ``on_tick``, the periodic ticks going on from
        there; None: the periodic ticks only. Read by the driver at each such first arrival."""
        ...

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        """Called every ``interval`` seconds with the statistics of the window that just ended (and
        once ``onset_delay`` after traffic begins, when the scaler asks for it)."""
        ...


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What a policy factory may know about the model it is made for."""

    model: str
    """Model the policy serves."""
    max_batch: int = 1
    """Largest batch the model accepts (``max_batch_size``; 1 when it does not batch)."""
    profile: ModelProfile | None = None
    """Latency profile of the model, when one is known."""
    slo: float | None = None
    """Default latency objective in seconds (``slo_ms``), when configured."""
    default_priority: int = 1
    """Priority level that requests sent with priority 0 get."""
    priority_levels: int = 1
    """Number of priority levels (1 = highest)."""
    max_queue_size: int = 0
    """Queue cap; 0 means unbounded."""
    runs_variants: bool = False
    """Whether the driver runs each batch on the model variant its ``meta["variant"]`` names (the
    heterogeneous-pool simulator behind ``experiment qos`` and ``train-rl``); the server and
    ``sloserve simulate`` run the model itself, whatever a QoS scheduler chooses."""
