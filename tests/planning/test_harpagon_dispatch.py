"""Harpagon's batch-aware dispatcher and the round-robin one, as sans-I/O schedulers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Dispatch, DropReason, WaitUntil
from sloserve.core.request import Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.harpagon_dispatch import HarpagonDispatcher, RoundRobinPlanDispatcher, TupleRoute
from sloserve.policies.registry import make_scheduler

BUDGET = 0.1


def req(i: int, t: float = 0.0) -> Request:
    return Request(i, "m", t, t + BUDGET)


def machines(n: int, hardware: str = "gpu", first: int = 0) -> list[InstanceView]:
    return [InstanceView(first + i, "m", 4, hardware) for i in range(n)]


def dispatches(decisions: Sequence[object]) -> list[Dispatch]:
    return [d for d in decisions if isinstance(d, Dispatch)]


def route(batch: int = 4, count: int = 2, **kw: float) -> TupleRoute:
    return TupleRoute(
        "gpu",
        batch,
        count,
        kw.get("rate", 100.0),
        kw.get("dummy_rate", 0.0),
        kw.get("exec_time", 0.02),
        kw.get("wait", 0.01),
    )


def test_batch_aware_fills_one_batch_from_the_whole_stream() -> None:
    s = HarpagonDispatcher([route()], BUDGET)
    inst = machines(2)
    for i in range(4):
        assert s.submit(0.001 * i, req(i, 0.001 * i)) is None
    out = dispatches(s.decide(0.003, inst))
    assert len(out) == 1 and out[0].batch.size == 4 and out[0].batch.padding == 0
    assert [r.id for r in out[0].batch.requests] == [0, 1, 2, 3]
    assert len(s) == 0


def test_round_robin_spreads_requests_so_each_machine_batches_alone() -> None:
    s = RoundRobinPlanDispatcher([route()], BUDGET)
    inst = machines(2)
    for i in range(4):
        s.submit(0.0, req(i))
    decisions = s.decide(0.0, inst)
    assert dispatches(decisions) == []  # two requests per machine: neither batch of 4 is full
    (wake,) = [d for d in decisions if isinstance(d, WaitUntil)]
    assert wake.time == pytest.approx(BUDGET - 0.02 - 0.01)  # deadline - exec - wait allowance
    out = dispatches(s.decide(wake.time, inst))
    assert sorted(d.instance for d in out) == [0, 1]
    assert {tuple(r.id for r in d.batch.requests) for d in out} == {(0, 2), (1, 3)}


def test_partial_batch_leaves_in_time_for_its_deadline() -> None:
    s = HarpagonDispatcher([route()], BUDGET)
    inst = machines(2)
    s.submit(0.0, req(0))
    (wake,) = s.decide(0.0, inst)
    assert isinstance(wake, WaitUntil) and wake.time == pytest.approx(0.07)
    assert dispatches(s.decide(0.069, inst)) == []
    (d,) = dispatches(s.decide(0.07, inst))
    assert d.batch.size == 1


def test_dummy_stream_tops_up_the_batch_and_pads_it() -> None:
    # 1 real request, 3 missing; dummies arrive at 300/s, so the batch is full 10 ms after it opened.
    s = HarpagonDispatcher([route(dummy_rate=300.0)], BUDGET)
    inst = machines(1)
    s.submit(0.0, req(0))
    (wake,) = s.decide(0.0, inst)
    assert isinstance(wake, WaitUntil) and wake.time == pytest.approx(0.01)
    (d,) = dispatches(s.decide(0.01, inst))
    assert d.batch.size == 4 and d.batch.padding == 3 and len(d.batch.requests) == 1


def test_busy_machines_hold_a_full_batch_until_one_frees() -> None:
    s = HarpagonDispatcher([route(count=1)], BUDGET)
    (m,) = machines(1)
    m.in_flight = 1
    for i in range(4):
        s.submit(0.0, req(i))
    assert dispatches(s.decide(0.0, [m])) == []
    m.in_flight = 0
    assert len(dispatches(s.decide(0.005, [m]))) == 1


def test_requests_are_split_by_planned_rate_and_machines_by_hardware() -> None:
    a = TupleRoute("t4", 1, 1, 300.0, 0.0, 0.001)
    b = TupleRoute("a10", 1, 1, 100.0, 0.0, 0.001)
    s = HarpagonDispatcher([a, b], BUDGET)
    inst = [InstanceView(7, "m", 4, "a10"), InstanceView(3, "m", 4, "t4")]
    seen = {3: 0, 7: 0}
    for i in range(400):
        s.submit(i * 1e-3, req(i, i * 1e-3))
        for d in dispatches(s.decide(i * 1e-3, inst)):
            seen[d.instance] += len(d.batch.requests)
    assert seen == {3: 300, 7: 100}  # exactly 3:1, t4 requests on the t4 machine


def test_drain_ends_every_waiting_request() -> None:
    s = RoundRobinPlanDispatcher([route()], BUDGET)
    for i in range(5):
        s.submit(0.0, req(i))
    drops = s.drain(1.0, DropReason.UNAVAILABLE)
    assert sorted(d.request.id for d in drops) == list(range(5)) and len(s) == 0


def test_registry_builds_both_from_plan_parameters() -> None:
    tuples = [{"hardware": "gpu", "batch": 8, "count": 2, "rate": 50, "exec_ms": 12, "wait_ms": 3}]
    params = {"tuples": tuples, "budget_ms": 80}
    ctx = PolicyContext("m", max_batch=8)
    h = make_scheduler("harpagon", ctx, params)
    r = make_scheduler("plan_round_robin", ctx, dict(params))
    assert isinstance(h, HarpagonDispatcher) and isinstance(r, RoundRobinPlanDispatcher)
    assert h.max_batch == 8 and h.budget == pytest.approx(0.08)
    with pytest.raises(ValueError, match="tuples"):
        make_scheduler("harpagon", ctx, {"budget_ms": 80})
