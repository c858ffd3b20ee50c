"""An instance's worker threads run in SCHED_BATCH (they never preempt the loop that writes the
answers); ONNX Runtime's intra-op threads stay in the default class."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sloserve.runtime.instances import BatchResult, LocalInstance
from sloserve.runtime.thread_class import mark_worker_thread, threads_born_in_default_class, worker_threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux's")


class _Backend:
    threads = 1

    def close(self) -> None:
        pass


def _thread_policies() -> dict[int, int]:
    """Scheduling class of every thread of this process, by thread id."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            out[int(task.name)] = os.sched_getscheduler(int(task.name))
        except (ProcessLookupError, FileNotFoundError):  # a thread that just ended
            continue
    return out


def _on_a_thread(body: Any) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:  # reported on the test's thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_an_instance_runs_its_batches_on_threads_in_the_batch_class(concurrency: int) -> None:
    seen: list[int] = []
    barrier = threading.Barrier(concurrency, timeout=10)

    def run_batch(backend: Any, inputs: Any) -> list[dict[str, np.ndarray]]:
        seen.append(os.sched_getscheduler(0))
        barrier.wait()  # every worker thread runs one batch
        return [{}]

    results: list[BatchResult] = []
    done = threading.Event()

    def collect(result: BatchResult) -> None:
        results.append(result)
        if len(results) == concurrency:
            done.set()

    inst = LocalInstance(
        "m",
        lambda t: _Backend(),
        1,
        lambda cb: cb(),
        run_batch,
        _Backend(),
        concurrency=concurrency,  # type: ignore[arg-type]
    )
    inst.start(lambda error: None)
    for _ in range(concurrency):
        inst.submit([{}], collect)
    assert done.wait(15)
    inst.stop()
    assert [r.error for r in results] == [None] * concurrency
    assert seen == [os.SCHED_BATCH] * concurrency
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller (the loop's thread) is untouched


def test_a_worker_builds_sessions_whose_intra_op_threads_are_in_the_default_class() -> None:
    from sloserve.runtime.demo.models import mlp
    from sloserve.runtime.onnx_backend import OnnxBackend

    def body() -> None:
        mark_worker_thread()
        before = _thread_policies()
        backend = OnnxBackend(mlp((16, 8, 4)).proto.SerializeToString(), threads=3)
        born = {tid: p for tid, p in _thread_policies().items() if tid not in before}
        try:
            assert len(born) >= 2  # the session's pool (the calling thread is the third)
            assert set(born.values()) == {os.SCHED_OTHER}
            assert os.sched_getscheduler(0) == os.SCHED_BATCH  # the worker's own class is back
        finally:
            backend.close()

    _on_a_thread(body)


def test_the_callers_class_is_restored_even_when_the_block_fails() -> None:
    policies: list[int] = []

    def body() -> None:
        mark_worker_thread()
        with pytest.raises(RuntimeError), threads_born_in_default_class():
            policies.append(os.sched_getscheduler(0))
            raise RuntimeError("session failed")
        policies.append(os.sched_getscheduler(0))

    _on_a_thread(body)
    assert policies == [os.SCHED_OTHER, os.SCHED_BATCH]


def test_worker_threads_lists_the_marked_threads_of_a_process_and_nothing_else() -> None:
    marked = threading.Event()
    release = threading.Event()
    tid: list[int] = []

    def worker() -> None:
        mark_worker_thread()
        tid.append(threading.get_native_id())
        marked.set()
        release.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert marked.wait(10)
        found = worker_threads(os.getpid())
        assert tid[0] in found and threading.get_native_id() not in found
    finally:
        release.set()
        t.join()
    assert worker_threads(2**22 + 12345) == []  # no such process
