"""Inference threads run in SCHED_BATCH (they never preempt the loop that writes the answers)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sloserve.runtime.instances import BatchResult, LocalInstance
from sloserve.runtime.thread_class import inference_threads_born, mark_inference_thread

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


def test_onnx_runtimes_intra_op_threads_are_born_in_the_batch_class() -> None:
    from sloserve.runtime.demo.models import mlp
    from sloserve.runtime.onnx_backend import OnnxBackend

    before = _thread_policies()
    backend = OnnxBackend(mlp((16, 8, 4)).proto.SerializeToString(), threads=3)
    born = {tid: p for tid, p in _thread_policies().items() if tid not in before}
    try:
        assert len(born) >= 2  # the session's pool (the calling thread is the third)
        assert set(born.values()) == {os.SCHED_BATCH}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # restored for the thread that built it
    finally:
        backend.close()


def test_the_callers_class_is_restored_even_when_the_block_fails() -> None:
    def body() -> None:
        with pytest.raises(RuntimeError), inference_threads_born():
            assert os.sched_getscheduler(0) == os.SCHED_BATCH
            raise RuntimeError("session failed")
        policies.append(os.sched_getscheduler(0))
        mark_inference_thread()
        policies.append(os.sched_getscheduler(0))

    policies: list[int] = []
    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    assert policies == [os.SCHED_OTHER, os.SCHED_BATCH]
