"""Decision values that policies return and drivers carry out.

A policy never acts: it returns these, and the simulator or the server executes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sloserve.core.request import Batch, Request


class DropReason(StrEnum):
    """Why a request ended without an answer. The value is what reports and HTTP errors show."""

    DEADLINE_UNREACHABLE = "deadline_unreachable"
    """Cannot finish before its deadline even if run alone right now."""
    DEADLINE_EXPIRED = "deadline_expired"
    """Its deadline passed while it waited."""
    QUEUE_TIMEOUT = "queue_timeout"
    """Waited longer than the queue policy's timeout (Triton ``timeout_action: REJECT``)."""
    QUEUE_FULL = "queue_full"
    """The queue was at ``max_queue_size``."""
    UNAVAILABLE = "unavailable"
    """The model was unloaded or the server shut down before the request ran."""
    FAILED = "failed"
    """The backend raised while running the batch."""
    REJECTED_INPUT = "rejected_input"
    """The backend refused the request's input values (an index out of range, say): the client's
    error, found only when the model ran them (alone: one bad request does not fail a batch). The
    server also ends so a request whose output does not fit the shared-memory region it named."""
    CANCELLED = "cancelled"
    """The client went away before its answer (it cancelled the call, or its own deadline passed):
    taken out of the queue if it was waiting, its answer discarded if it was running."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Run ``batch`` on instance ``instance`` now."""

    batch: Batch
    instance: int


@dataclass(frozen=True, slots=True)
class Drop:
    """End ``request`` without running it, for ``reason``."""

    request: Request
    reason: DropReason


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Call ``decide`` again at ``time`` even if nothing else happens before."""

    time: float


Decision = Dispatch | Drop | WaitUntil


@dataclass(frozen=True, slots=True)
class SetInstanceCount:
    """Run ``count`` instances of ``model`` (horizontal scaling / multi-tenancy)."""

    model: str
    count: int


@dataclass(frozen=True, slots=True)
class SetInstanceCores:
    """Give instance ``instance`` ``cores`` threads, in place (vertical scaling)."""

    instance: int
    cores: int


@dataclass(frozen=True, slots=True)
class SetMaxBatch:
    """Cap the batch size the scheduler of ``model`` may form."""

    model: str
    max_batch: int


ScaleDecision = SetInstanceCount | SetInstanceCores | SetMaxBatch
