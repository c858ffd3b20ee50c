"""Queue orders: FIFO, priority-then-FIFO, and EDF (priority, then earliest deadline)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from sloserve.core.request import Request


class RequestQueue(Protocol):
    """A queue of waiting requests in some order. Owned by one scheduler."""

    def push(self, request: Request) -> None:
        """Called when the scheduler admits a request."""
        ...

    def pop(self) -> Request:
        """Removes and returns the first request in order; the queue must not be empty."""
        ...

    def peek(self) -> Request:
        """The first request in order, left in place; the queue must not be empty."""
        ...

    def oldest_arrival(self) -> float:
        """Arrival time of the request that has waited longest (any position)."""
        ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Request]:
        """All waiting requests, in no guaranteed order."""
        ...


class FifoQueue:
    """First come, first served."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[Request] = deque()

    def push(self, request: Request) -> None:
        self._items.append(request)

    def pop(self) -> Request:
        return self._items.popleft()

    def peek(self) -> Request:
        return self._items[0]

    def oldest_arrival(self) -> float:
        return self._items[0].arrival

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._items)


class _HeapQueue:
    """A heap ordered by a per-request key; subclasses give the key."""

    __slots__ = ("_heap", "default_priority")

    def __init__(self, default_priority: int = 1) -> None:
        self._heap: list[tuple[float, float, int, Request]] = []
        self.default_priority = default_priority

    def level(self, request: Request) -> int:
        """Effective priority level: 1 is highest; 0 means the default level."""
        return request.priority if request.priority > 0 else self.default_priority

    def _key(self, request: Request) -> float:
        raise NotImplementedError

    def push(self, request: Request) -> None:
        heapq.heappush(self._heap, (self.level(request), self._key(request), request.id, request))

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[3]

    def peek(self) -> Request:
        return self._heap[0][3]

    def oldest_arrival(self) -> float:
        return min(item[3].arrival for item in self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (item[3] for item in self._heap)


class PriorityQueue(_HeapQueue):
    """Highest priority level first, then first come first served (Triton with priority levels)."""

    __slots__ = ()

    def _key(self, request: Request) -> float:
        return request.arrival


class EdfQueue(_HeapQueue):
    """Highest priority level first, then earliest deadline (ties: earliest request id)."""

    __slots__ = ()

    def _key(self, request: Request) -> float:
        return request.deadline
