"""Model instances as the serving loop sees them: submit a batch, resize, stop.

:class:`InstanceRunner` is the one small interface between the loop and execution, so that an
instance could later live elsewhere (a Ray actor) without the loop, the policies or the front ends
changing. :class:`LocalInstance` is the first implementation: one execution backend (for ONNX
Runtime, one session with its own intra-op threads) driven by one worker thread of its own, in
``SCHED_BATCH`` (:mod:`sloserve.runtime.thread_class`).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from sloserve.runtime.backend import ExecutionBackend
from sloserve.runtime.thread_class import mark_worker_thread

log = logging.getLogger("sloserve.runtime")

Tensors = Mapping[str, np.ndarray]
Post = Callable[[Callable[[], None]], None]
"""Runs a callback on the serving loop's thread (``loop.call_soon_threadsafe``)."""


@dataclass(frozen=True, slots=True)
class RequestFailure:
    """A request of a batch that failed on its own, run alone (the batch's others were answered)."""

    message: str
    bad_input: bool
    """Whether the backend refused the request's input values (the client's error)."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What an instance reports when a batch ends, on the loop's thread."""

    outputs: list[dict[str, np.ndarray] | RequestFailure] | None
    """Per request, in batch order: the outputs, or why that request failed; None when the batch
    failed as a whole."""
    compute_s: float
    """Seconds the backend spent running the batch (stacking and splitting included)."""
    error: str | None = None
    """Why the batch failed (None on success)."""


class InstanceRunner:
    """Interface the loop drives; see the module docstring. Every callback runs on the loop's thread."""

    def start(self, ready: Callable[[str | None], None]) -> None:
        """Called once; ``ready(None)`` once batches can be submitted, ``ready(error)`` if it failed."""
        raise NotImplementedError

    def submit(self, inputs: Sequence[Tensors], done: Callable[[BatchResult], None]) -> None:
        """Run one batch (one input mapping per request); ``done`` gets the result."""
        raise NotImplementedError

    def resize(self, threads: int) -> None:
        """Change the instance's threads in place; batches in flight are not disturbed."""
        raise NotImplementedError

    def stop(self) -> None:
        """Release the instance after the batches already submitted have ended."""
        raise NotImplementedError


BatchRunner = Callable[[ExecutionBackend, Sequence[Tensors]], list[dict[str, np.ndarray] | RequestFailure]]
"""Runs one batch on a backend: stacks the requests' inputs, runs, splits the outputs per request."""


_STOP = object()


class LocalInstance(InstanceRunner):
    """An in-process instance: a backend and a worker thread that runs its batches one at a time."""

    def __init__(
        self,
        name: str,
        make_backend: Callable[[int], ExecutionBackend],
        threads: int,
        post: Post,
        run_batch: BatchRunner,
        backend: ExecutionBackend | None = None,
        concurrency: int = 1,
    ) -> None:
        """``make_backend(threads)`` builds the backend on the worker thread unless ``backend`` is given.

        ``concurrency`` > 1 (``instance_group.max_concurrency``) runs up to that many batches at once
        on the same backend, one worker thread each (they share, and slow, the instance's cores).
        """
        self.name = name
        self._make_backend = make_backend
        self._threads = threads
        self._post = post
        self._run_batch = run_batch
        self._backend = backend
        self._work: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=f"instance-{name}", daemon=True)
        self._ready: Callable[[str | None], None] | None = None
        self._concurrency = max(1, concurrency)
        self._extra = [
            threading.Thread(target=self._extra_worker, name=f"instance-{name}-{i}", daemon=True)
            for i in range(1, self._concurrency)
        ]
        self._started = threading.Event()
        self._workers_left = self._concurrency
        self._left_lock = threading.Lock()

    def start(self, ready: Callable[[str | None], None]) -> None:
        self._ready = ready
        self._thread.start()
        for t in self._extra:
            t.start()

    def submit(self, inputs: Sequence[Tensors], done: Callable[[BatchResult], None]) -> None:
        self._work.put((inputs, done))

    def resize(self, threads: int) -> None:
        self._threads = threads
        backend = self._backend
        if backend is not None:
            backend.set_threads(threads)  # in place: the backend swaps sessions between runs

    def stop(self) -> None:
        for _ in range(self._concurrency):
            self._work.put(_STOP)

    @property
    def backend(self) -> ExecutionBackend | None:
        """The backend, once built."""
        return self._backend

    def _main(self) -> None:
        mark_worker_thread()  # never preempt the loop thread that writes the answers
        ready = self._ready
        assert ready is not None
        if self._backend is None:
            try:
                self._backend = self._make_backend(self._threads)
            except Exception as exc:
                log.exception("instance %s failed to start", self.name)
                message = str(exc)
                self._post(lambda: ready(message))
                self._started.set()
                return
        elif self._backend.threads != self._threads:
            self._backend.set_threads(self._threads)
        self._post(lambda: ready(None))
        self._started.set()
        self._serve_batches()

    def _extra_worker(self) -> None:
        mark_worker_thread()
        self._serve_batches()

    def _serve_batches(self) -> None:
        """One worker's loop (``concurrency`` of them share the queue); the last one out closes."""
        self._started.wait()
        backend = self._backend
        if backend is None:  # the backend failed to build
            return
        run_batch = self._run_batch
        post = self._post
        while True:
            item = self._work.get()
            if item is _STOP:
                break
            inputs, done = cast(tuple[Sequence[Tensors], Callable[[BatchResult], None]], item)
            start = time.perf_counter()
            try:
                outputs = run_batch(backend, inputs)
                result = BatchResult(outputs, time.perf_counter() - start)
            except Exception as exc:
                log.warning("instance %s: batch failed: %s", self.name, exc)
                result = BatchResult(None, time.perf_counter() - start, str(exc) or type(exc).__name__)
            post(functools.partial(done, result))
        with self._left_lock:
            self._workers_left -= 1
            last = self._workers_left == 0
        if last:
            backend.close()
