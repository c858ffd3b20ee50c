"""Baseline policies: Triton's dynamic batcher, Ray Serve batching, fixed batches, dispatch, registry."""

from __future__ import annotations

import math

import pytest

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.request import Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.dispatch import LeastLoadedDispatcher, RoundRobinDispatcher
from sloserve.policies.fixed import FixedBatcher
from sloserve.policies.queues import FifoQueue, PriorityQueue
from sloserve.policies.ray_batch import RayServeBatcher
from sloserve.policies.registry import make_dispatcher, make_scheduler
from sloserve.policies.triton import TritonDynamicBatcher


def req(i: int, t: float = 0.0, slo: float = math.inf, prio: int = 0) -> Request:
    return Request(i, "m", t, t + slo, prio)


def one(n: int = 1) -> list[InstanceView]:
    return [InstanceView(i, "m") for i in range(n)]


def sizes(decisions: list[Decision]) -> list[int]:
    return [d.batch.size for d in decisions if isinstance(d, Dispatch)]


def waits(decisions: list[Decision]) -> list[float]:
    return [d.time for d in decisions if isinstance(d, WaitUntil)]


def test_triton_sends_the_largest_preferred_size() -> None:
    s = TritonDynamicBatcher(8, preferred_batch_sizes=(2, 4), max_queue_delay=0.1)
    for i in range(7):
        s.submit(0.0, req(i))
    assert sizes(s.decide(0.0, one())) == [4]
    assert sizes(s.decide(0.0, one())) == [2]
    # one left: no preferred size fits; it waits for max_queue_delay from its arrival
    assert waits(s.decide(0.05, one())) == [pytest.approx(0.1)]
    assert sizes(s.decide(0.1, one())) == [1]


def test_triton_sends_max_batch_and_without_delay_sends_at_once() -> None:
    s = TritonDynamicBatcher(4)
    for i in range(6):
        s.submit(0.0, req(i))
    d = s.decide(0.0, one(2))
    assert sizes(d) == [4, 2]
    assert [x.instance for x in d if isinstance(x, Dispatch)] == [0, 1]
    assert [r.id for r in d[0].batch.requests] == [0, 1, 2, 3]  # type: ignore[union-attr]


def test_triton_rejects_expired_requests_and_delay_runs_them() -> None:
    reject = TritonDynamicBatcher(4, max_queue_delay=0.0)
    delay = TritonDynamicBatcher(4, max_queue_delay=0.0, timeout_action="delay")
    for s in (reject, delay):
        s.submit(0.0, req(0, 0.0, slo=0.01))
        s.submit(0.0, req(1, 0.0, slo=1.0))
    d = reject.decide(0.5, one())
    assert [(x.request.id, x.reason) for x in d if isinstance(x, Drop)] == [(0, DropReason.QUEUE_TIMEOUT)]
    assert sizes(d) == [1]
    assert sizes(delay.decide(0.5, one())) == [2]


def test_triton_priority_levels_queue_full_and_drain() -> None:
    s = TritonDynamicBatcher(2, priority_levels=2, default_priority=2, max_queue_size=3)
    assert isinstance(s.queue, PriorityQueue)
    assert s.submit(0.0, req(0, 0.0, prio=2)) is None
    assert s.submit(0.1, req(1, 0.1, prio=1)) is None
    assert s.submit(0.2, req(2, 0.2)) is None  # priority 0 = default level 2
    full = s.submit(0.3, req(3, 0.3))
    assert isinstance(full, Drop) and full.reason == DropReason.QUEUE_FULL
    d = s.decide(0.3, one())
    assert [r.id for r in d[0].batch.requests] == [1, 0]  # type: ignore[union-attr]
    drops = s.drain(1.0, DropReason.UNAVAILABLE)
    assert [(x.request.id, x.reason) for x in drops] == [(2, DropReason.UNAVAILABLE)]
    assert len(s) == 0


def test_triton_skips_busy_instances_and_validates() -> None:
    s = TritonDynamicBatcher(4)
    s.submit(0.0, req(0))
    busy = InstanceView(0, "m", in_flight=1)
    assert s.decide(0.0, [busy]) == []
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        TritonDynamicBatcher(4, preferred_batch_sizes=(8,))
    with pytest.raises(ValueError, match="max_queue_delay"):
        TritonDynamicBatcher(4, max_queue_delay=-1)
    with pytest.raises(ValueError, match="timeout_action"):
        TritonDynamicBatcher(4, timeout_action="drop")
    with pytest.raises(ValueError, match="max_batch"):
        TritonDynamicBatcher(0)


def test_ray_waits_for_the_window_or_a_full_batch() -> None:
    s = RayServeBatcher(max_batch_size=4, batch_wait_timeout_s=0.01)
    s.submit(0.0, req(0))
    assert waits(s.decide(0.0, one())) == [pytest.approx(0.01)]
    s.submit(0.004, req(1, 0.004))
    assert waits(s.decide(0.004, one())) == [pytest.approx(0.01)]  # the window does not restart
    assert sizes(s.decide(0.01, one())) == [2]
    for i in range(2, 7):
        s.submit(0.02, req(i, 0.02))
    assert sizes(s.decide(0.02, one())) == [4]  # full batch at once
    assert waits(s.decide(0.021, one())) == [pytest.approx(0.031)]  # a new window for the rest
    # Ray never drops late requests: they run
    late = RayServeBatcher(2, 0.0)
    late.submit(0.0, req(9, 0.0, slo=0.001))
    assert sizes(late.decide(5.0, one())) == [1]


def test_fixed_waits_for_full_batches_or_max_wait() -> None:
    forever = FixedBatcher(3)
    for i in range(2):
        forever.submit(0.0, req(i))
    assert forever.decide(100.0, one()) == []
    forever.submit(100.0, req(2, 100.0))
    assert sizes(forever.decide(100.0, one())) == [3]
    bounded = FixedBatcher(3, max_wait=0.05)
    bounded.submit(0.0, req(0))
    assert waits(bounded.decide(0.01, one())) == [pytest.approx(0.05)]
    assert sizes(bounded.decide(0.05, one())) == [1]
    with pytest.raises(ValueError, match="max_wait"):
        FixedBatcher(3, max_wait=-1)


def test_dispatchers() -> None:
    a, b, c = InstanceView(0, "m"), InstanceView(1, "m"), InstanceView(2, "m")
    rr = RoundRobinDispatcher()
    assert [rr.choose(0.0, [a, b, c]).id for _ in range(4)] == [0, 1, 2, 0]
    assert rr.choose(0.0, [a, c]).id == 2
    a.in_flight, b.busy_until, c.busy_until = 1, 5.0, 3.0
    assert LeastLoadedDispatcher().choose(0.0, [a, b, c]).id == 2
    s = TritonDynamicBatcher(1, dispatcher=RoundRobinDispatcher())
    for i in range(3):
        s.submit(0.0, req(i))
    d = s.decide(0.0, [InstanceView(0, "m"), InstanceView(1, "m", max_concurrency=2)])
    assert [x.instance for x in d if isinstance(x, Dispatch)] == [0, 1, 1]


def test_fifo_queue_order() -> None:
    q = FifoQueue()
    for i, t in enumerate((0.3, 0.1, 0.2)):
        q.push(req(i, t))
    assert q.oldest_arrival() == 0.3 and q.peek().id == 0
    assert [q.pop().id for _ in range(3)] == [0, 1, 2]


def test_registry_builds_by_name_with_config_names() -> None:
    ctx = PolicyContext("m", max_batch=16)
    t = make_scheduler("triton", ctx, {"max_queue_delay_microseconds": 5000, "preferred_batch_size": [4, 8]})
    assert isinstance(t, TritonDynamicBatcher)
    assert t.max_queue_delay == pytest.approx(0.005) and t.preferred == [8, 4] and t.max_batch == 16
    r = make_scheduler("ray", ctx)
    assert isinstance(r, RayServeBatcher) and r.max_batch == 10 and r.batch_wait_timeout_s == 0.01
    f = make_scheduler("sloserve.policies.fixed:make_fixed", ctx, {"batch_size": 4})
    assert isinstance(f, FixedBatcher) and f.max_batch == 4
    assert isinstance(make_dispatcher("round_robin"), RoundRobinDispatcher)
    with pytest.raises(ValueError, match="unknown scheduler 'nope'"):
        make_scheduler("nope", ctx)
    with pytest.raises(ValueError, match="'fixed' params: colour: Extra inputs are not permitted"):
        make_scheduler("fixed", ctx, {"colour": "red"})
    with pytest.raises(ValueError, match="cannot load"):
        make_scheduler("no.such.module:factory", ctx)
