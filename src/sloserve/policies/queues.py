"""Queue orders: FIFO, priority-then-FIFO, and EDF (priority, then earliest deadline)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from sloserve.core.request import Request


class RequestQueue(Protocol):
    """A queue of waiting requests in some order. Owned by one scheduler."""

    rows: int
    """Batch rows waiting: the sum of the queued requests' ``rows`` (their count when each has one)."""

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

    def remove(self, request_id: int) -> Request | None:
        """Called when a waiting request is withdrawn (its client went away): takes it out wherever
        it stands and returns it; None when it is not in the queue."""
        ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Request]:
        """All waiting requests, in no guaranteed order."""
        ...


class FifoQueue:
    """First come, first served."""

    __slots__ = ("_items", "rows")

    def __init__(self) -> None:
        self._items: deque[Request] = deque()
        self.rows = 0

    def push(self, request: Request) -> None:
        self._items.append(request)
        self.rows += request.rows

    def pop(self) -> Request:
        request = self._items.popleft()
        self.rows -= request.rows
        return request

    def peek(self) -> Request:
        return self._items[0]

    def oldest_arrival(self) -> float:
        return self._items[0].arrival

    def remove(self, request_id: int) -> Request | None:
        for request in self._items:
            if request.id == request_id:
                self._items.remove(request)
                self.rows -= request.rows
                return request
        return None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._items)


class _HeapQueue:
    """A heap ordered by a per-request key; subclasses give the key."""

    __slots__ = ("_heap", "default_priority", "rows")

    def __init__(self, default_priority: int = 1) -> None:
        self._heap: list[tuple[float, float, int, Request]] = []
        self.default_priority = default_priority
        self.rows = 0

    def level(self, request: Request) -> int:
        """Effective priority level: 1 is highest; 0 means the default level."""
        return request.priority if request.priority > 0 else self.default_priority

    def _key(self, request: Request) -> float:
        raise NotImplementedError

    def push(self, request: Request) -> None:
        heapq.heappush(self._heap, (self.level(request), self._key(request), request.id, request))
        self.rows += request.rows

    def pop(self) -> Request:
        request = heapq.heappop(self._heap)[3]
        self.rows -= request.rows
        return request

    def peek(self) -> Request:
        return self._heap[0][3]

    def oldest_arrival(self) -> float:
        return min(item[3].arrival for item in self._heap)

    def remove(self, request_id: int) -> Request | None:
        for i, item in enumerate(self._heap):
            if item[2] == request_id:
                last = self._heap.pop()
                if i < len(self._heap):  # the last entry fills the hole; the heap is rebuilt
                    self._heap[i] = last
                    heapq.heapify(self._heap)
                self.rows -= item[3].rows
                return item[3]
        return None

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


def pop_rows(queue: RequestQueue, rows: int) -> list[Request]:
    """Pop requests in queue order while their rows fit in ``rows`` (the first always goes, even when
    it alone brings more); stops at the first that does not fit, so queue order holds."""
    picked: list[Request] = []
    taken = 0
    while len(queue) and (not picked or taken + queue.peek().rows <= rows):
        request = queue.pop()
        picked.append(request)
        taken += request.rows
    return picked
