"""Inference threads give way to the front end on a shared core (Linux ``SCHED_BATCH``).

The event loop's thread receives requests and writes answers; an instance's worker thread (and
ONNX Runtime's intra-op threads) run batches. When both share a core, a worker woken to run the
next batch preempted the loop just as it was about to write the previous batch's answers, and those
waited for a slice of inference: measured on the development machine (mobilenet_v2, 10 ms SLO, 300
req/s, server on one core), the time from a request's end in the scheduler to its answer leaving the
handler had a p99 of 1.7–2.3 ms with the worker in the default class and 0.36–0.46 ms with it in
``SCHED_BATCH`` (the same server process switched between runs).

``SCHED_BATCH`` keeps the thread's fair share of the CPU (its nice value is unchanged, so inference
does not lose to other programs on the machine); it only stops the thread from preempting others
when it wakes. Elsewhere than Linux these calls do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger("sloserve.runtime")

_BATCH: int | None = getattr(os, "SCHED_BATCH", None)


def _set_policy(policy: int) -> bool:
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except (OSError, AttributeError) as exc:  # a sandbox may refuse; the server still serves
        log.debug("cannot set the scheduling class of an inference thread: %s", exc)
        return False
    return True


def mark_inference_thread() -> None:
    """Called by a thread that runs inference, as it starts: puts it in ``SCHED_BATCH`` for good."""
    if _BATCH is not None:
        _set_policy(_BATCH)


@contextlib.contextmanager
def inference_threads_born() -> Iterator[None]:
    """Threads created inside the block (ONNX Runtime's intra-op pool, made with a session) start in
    ``SCHED_BATCH``, as new threads inherit their creator's class; the caller's own is restored."""
    if _BATCH is None:
        yield
        return
    before = os.sched_getscheduler(0)
    changed = before != _BATCH and _set_policy(_BATCH)
    try:
        yield
    finally:
        if changed:
            _set_policy(before)
