"""Requests of several rows (client-side batches): every scheduler counts rows, not requests."""

from __future__ import annotations

from typing import Any

import pytest

from sloserve.core import AffineProfile
from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.request import Batch, Request
from sloserve.policies.base import PolicyContext, Scheduler
from sloserve.policies.queues import EdfQueue, FifoQueue, PriorityQueue, pop_rows
from sloserve.policies.registry import SCHEDULERS, make_scheduler
from sloserve.policies.slo_batcher import SloBatcher
from sloserve.policies.triton import TritonDynamicBatcher

PROFILE = AffineProfile("m", alpha=0.001, beta=0.001, tail_factor=1.0, max_batch=4)
ROWS = [3, 2, 1, 4, 2, 1, 1]

QOS = {
    "variants": [{"name": "small", "accuracy": 0.7}, {"name": "large", "accuracy": 0.8}],
    "profiles": [
        {"model": "small", "hardware": "cpu", "kind": "affine", "alpha_ms": 1, "beta_ms": 1},
        {"model": "large", "hardware": "cpu", "kind": "affine", "alpha_ms": 2, "beta_ms": 1},
    ],
    "utility": {"target_ms": 5000, "cutoff_ms": 9000, "alpha": 2},
    "batch_sizes": [1, 2, 4],
}
PLAN = {"tuples": [{"batch": 4, "exec_ms": 5, "rate": 100}], "budget_ms": 10_000}
PARAMS: dict[str, dict[str, Any]] = {
    "fixed": {"max_wait_s": 0.005},
    "ray": {"batch_wait_timeout_s": 0.0},
    "qos_heuristic": QOS,
    "qos_random": {**QOS, "seed": 1},
    "qos_triton": QOS,
    "harpagon": PLAN,
    "plan_round_robin": PLAN,
}


def request(i: int, rows: int, deadline: float = 10.0) -> Request:
    return Request(i, "m", 0.0, deadline, rows=rows)


def drive(s: Scheduler, rows: list[int]) -> list[Batch]:
    """Submit ``rows`` at time 0 and run batches on one instance (each ends at once) until the queue
    is empty; returns the batches in order."""
    view = InstanceView(0, "m")
    for i, n in enumerate(rows):
        assert s.submit(0.0, request(i, n)) is None
    now, batches = 0.0, []
    for _ in range(500):
        if not len(s):
            break
        out = s.decide(now, [view])
        assert not [d for d in out if isinstance(d, Drop)]
        for d in out:
            if isinstance(d, Dispatch):
                batches.append(d.batch)
                s.on_complete(now, d.batch, view, 0.001)
        wakes = [d.time for d in out if isinstance(d, WaitUntil)]
        now = max(now + 1e-4, min(wakes, default=now))
    return batches


def test_batch_and_queues_count_rows() -> None:
    batch = Batch((request(0, 3), request(1, 2)), padding=1)
    assert batch.rows == 5 and batch.size == 6
    for queue in (FifoQueue(), PriorityQueue(), EdfQueue()):
        for i, n in enumerate(ROWS):
            queue.push(request(i, n))
        assert queue.rows == sum(ROWS)
        assert [r.rows for r in pop_rows(queue, 6)] == [3, 2, 1]
        assert [r.rows for r in pop_rows(queue, 2)] == [4]  # the first always goes
        assert queue.rows == 4 and len(queue) == 3


def test_triton_fills_max_batch_rows_in_queue_order() -> None:
    s = TritonDynamicBatcher(4)
    for i, n in enumerate([3, 2, 1]):
        s.submit(0.0, request(i, n))
    first = s.decide(0.0, [InstanceView(0, "m")])
    second = s.decide(0.0, [InstanceView(0, "m")])
    got = [[r.id for r in d.batch.requests] for d in [*first, *second] if isinstance(d, Dispatch)]
    assert got == [[0], [1, 2]]  # 3 rows, then 2 + 1 (3 + 2 would exceed 4 rows)


@pytest.mark.parametrize("name", sorted(n for n in SCHEDULERS if n != "qos_rl"))
def test_no_batch_exceeds_max_batch_rows_and_every_request_runs_once(name: str) -> None:
    ctx = PolicyContext("m", max_batch=4, profile=PROFILE, slo=10.0, runs_variants=name.startswith("qos_"))
    batches = drive(make_scheduler(name, ctx, PARAMS.get(name, {})), ROWS)
    ids = [r.id for b in batches for r in b.requests]
    assert sorted(ids) == list(range(len(ROWS)))
    assert all(b.rows <= 4 for b in batches), [b.rows for b in batches]
    assert sum(b.rows for b in batches) == sum(ROWS)


def test_slo_batcher_predicts_a_batch_by_its_rows() -> None:
    # tail(b) = 1 ms + 1 ms * b: 3 rows take 4 ms, so a 3-row request with a 3.5 ms budget is hopeless
    s = SloBatcher(PROFILE, max_batch=4)
    s.submit(0.0, request(0, 3, deadline=0.0035))
    s.submit(0.0, request(1, 1, deadline=0.0035))
    s.submit(0.0, request(2, 2, deadline=0.010))
    out = s.decide(0.0, [InstanceView(0, "m")])
    drops = [d for d in out if isinstance(d, Drop)]
    assert [(d.request.id, d.reason) for d in drops] == [(0, DropReason.DEADLINE_UNREACHABLE)]
    # 1 + 2 rows end at 4 ms: past request 1's 3.5 ms, so request 1 runs alone first
    dispatched = [d.batch for d in out if isinstance(d, Dispatch)]
    assert [[r.id for r in b.requests] for b in dispatched] == [[1]]


def test_a_removed_request_leaves_the_queue_and_the_rest_keep_their_order() -> None:
    for queue in (FifoQueue(), PriorityQueue(), EdfQueue()):
        for i, n in enumerate(ROWS):
            queue.push(Request(i, "m", 0.0, 10.0 + i, rows=n))
        removed = queue.remove(3)
        assert removed is not None and removed.id == 3
        assert queue.remove(3) is None and queue.remove(99) is None
        assert queue.rows == sum(ROWS) - ROWS[3] and len(queue) == len(ROWS) - 1
        assert [queue.pop().id for _ in range(len(queue))] == [0, 1, 2, 4, 5, 6]


@pytest.mark.parametrize("name", sorted(n for n in SCHEDULERS if n != "qos_rl"))
def test_a_cancelled_request_never_runs(name: str) -> None:
    """What the server calls when a client goes away: the request leaves the queue, the others run."""
    ctx = PolicyContext("m", max_batch=4, profile=PROFILE, slo=10.0, runs_variants=name.startswith("qos_"))
    scheduler = make_scheduler(name, ctx, PARAMS.get(name, {}))
    for i in range(5):
        assert scheduler.submit(0.0, request(i, 1)) is None
    assert scheduler.cancel(0.0, request(1, 1)) and scheduler.cancel(0.0, request(3, 1))
    assert not scheduler.cancel(0.0, request(3, 1))  # not queued any more: nothing changes
    assert len(scheduler) == 3
    batches = drive(scheduler, [])
    assert sorted(r.id for b in batches for r in b.requests) == [0, 2, 4]
