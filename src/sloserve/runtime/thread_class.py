"""An instance's worker thread gives way to the front end on a shared core (Linux ``SCHED_BATCH``).

The event loop's thread receives requests and writes answers; an instance's worker thread runs
batches. When both share a core, a worker woken to run the next batch preempted the loop just as
it was about to write the previous batch's answers, and those waited for a slice of inference:
measured on the development machine (mobilenet_v2, 10 ms SLO, 300 req/s, server on one core), the
time from a request's end in the scheduler to its answer leaving the handler had a p99 of 1.7–2.5
ms with the worker in the default class and 0.36–0.49 ms with it in ``SCHED_BATCH`` (the same server
process switched between runs). ``SCHED_BATCH`` keeps the thread's fair share of the CPU (its nice
value is unchanged, so inference does not lose to other programs on the machine); it only stops
the thread from preempting others when it wakes.

ONNX Runtime's intra-op threads stay in the default class: they must all start a parallel step
together, and one that waits for a core delays the whole step. Measured with a 2-thread resnet18
instance on both cores beside the load generator (``sloserve experiment sponge --server
--server-model resnet18 --server-rate 250``): 200–312 of 10,058 requests late with the pool in
``SCHED_BATCH``, 58 with everything in the default class, 76 with only the worker in ``SCHED_BATCH``.
Elsewhere than Linux these calls do nothing.
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


def mark_worker_thread() -> None:
    """Called by an instance's worker thread as it starts: puts it in ``SCHED_BATCH`` for good."""
    if _BATCH is not None:
        _set_policy(_BATCH)


def worker_threads(pid: int) -> list[int]:
    """Thread ids of process ``pid``'s instance workers (those :func:`mark_worker_thread` put in
    ``SCHED_BATCH``); read from Linux's ``/proc`` (empty where there is none). For benchmarks that
    tell a server's workers from its event loop."""
    if _BATCH is None:
        return []
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []
    out = []
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) == _BATCH:
                out.append(tid)
        except OSError:  # the thread ended meanwhile
            continue
    return out


@contextlib.contextmanager
def threads_born_in_default_class() -> Iterator[None]:
    """Threads created inside the block (ONNX Runtime's intra-op pool, made with a session) start in
    the default class even when the caller is a worker in ``SCHED_BATCH`` (new threads inherit their
    creator's class); the caller's own class is restored after."""
    if _BATCH is None:
        yield
        return
    before = os.sched_getscheduler(0)
    changed = before == _BATCH and _set_policy(os.SCHED_OTHER)
    try:
        yield
    finally:
        if changed:
            _set_policy(before)
