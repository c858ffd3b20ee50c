"""CoFB's sans-I/O policies: flow steering, least-slack batching with early drop, the throttle."""

from __future__ import annotations

import math

import pytest

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.profiles import AffineProfile
from sloserve.core.request import Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.cofb import CoFBScheduler
from sloserve.policies.flow_steering import LoadSteering, Resteer, StaticHashSteering, flow_hash
from sloserve.policies.registry import make_scheduler

MS = 1e-3
PROFILE = AffineProfile("m", alpha=10 * MS, beta=5 * MS, max_batch=32, slowdown=(1.0, 1.5, 2.2))


def flows_on(queue: int, queues: int, n: int, seed: int = 0) -> list[int]:
    """The first ``n`` flow ids that static hashing puts on ``queue``."""
    return [f for f in range(1000) if flow_hash(f, seed) % queues == queue][:n]


# -- flow steering ---------------------------------------------------------------------------------


def test_static_hashing_is_stable_and_never_moves() -> None:
    s = StaticHashSteering(4, seed=3)
    first = [s.queue_of(f) for f in range(50)]
    assert first == [s.queue_of(f) for f in range(50)]
    assert len(set(first)) == 4  # the hash spreads flows over every queue
    assert s.on_tick(0.0, [1e9, 0, 0, 0]) == []
    assert math.isinf(s.interval)


def loaded_steering(heavy: list[int], light: list[int]) -> LoadSteering:
    s = LoadSteering(4, seed=0, t_mon=1e-3, rate_tau=0.05, min_dwell=0.01)
    for f in heavy + light:
        s.queue_of(f)
    for step in range(20):  # 20 ms of equal per-flow traffic
        for f in heavy + light:
            s.on_bytes(step * 1e-3, f, 100_000)
    return s


def test_steering_moves_a_flow_off_the_overloaded_queue() -> None:
    heavy = flows_on(0, 4, 3)
    light = [flows_on(q, 4, 1)[0] for q in (1, 2, 3)]
    s = loaded_steering(heavy, light)
    moves = s.on_tick(0.02, [3e5, 1e5, 0.0, 1e5])
    assert len(moves) == 1
    (m,) = moves
    assert m.source == 0 and m.target == 2 and m.flow in heavy
    assert s.queue_of(m.flow) == 2
    assert s.moves == 1


def test_steering_leaves_balanced_queues_alone() -> None:
    heavy = flows_on(0, 4, 3)
    light = [flows_on(q, 4, 1)[0] for q in (1, 2, 3)]
    s = loaded_steering(heavy, light)
    before = {f: s.queue_of(f) for f in heavy + light}
    assert s.on_tick(0.02, [1.1e5, 1e5, 1e5, 1e5]) == []  # busiest < 1.2x mean
    assert s.on_tick(0.02, [0.0, 0.0, 0.0, 0.0]) == []  # idle
    assert {f: s.queue_of(f) for f in heavy + light} == before


def test_steering_does_not_move_a_flow_that_would_not_narrow_the_gap() -> None:
    # one elephant flow alone on queue 0: moving it only moves the imbalance elsewhere
    elephant = flows_on(0, 4, 1)
    others = [flows_on(q, 4, 1)[0] for q in (1, 2, 3)]
    s = LoadSteering(4, seed=0)
    for f in elephant + others:
        s.queue_of(f)
    s.on_bytes(0.0, elephant[0], 1_000_000)
    for f in others:
        s.on_bytes(0.0, f, 100_000)
    assert s.on_tick(0.001, [1e6, 1e5, 1e5, 1e5]) == []


def test_a_moved_flow_stays_put_for_min_dwell() -> None:
    heavy = flows_on(0, 4, 3)
    light = [flows_on(q, 4, 1)[0] for q in (1, 2, 3)]
    s = loaded_steering(heavy, light)
    (m,) = s.on_tick(0.02, [3e5, 1e5, 0.0, 1e5])
    # now queue 2 looks busiest; the flow just moved there must not bounce back at once
    again = s.on_tick(0.021, [1e5, 1e5, 4e5, 0.0])
    assert all(r.flow != m.flow for r in again)
    assert again == [] or isinstance(again[0], Resteer)


# -- reordering, batching, early drop ----------------------------------------------------------------


def req(i: int, arrival: float, slo: float) -> Request:
    return Request(i, "m", arrival, arrival + slo)


def idle(iid: int = 0, concurrency: int = 1) -> InstanceView:
    return InstanceView(iid, "m", max_concurrency=concurrency)


def dispatched(decisions: list) -> list[tuple[int, ...]]:
    return [tuple(r.id for r in d.batch.requests) for d in decisions if isinstance(d, Dispatch)]


def test_least_slack_order() -> None:
    s = CoFBScheduler(PROFILE, max_batch=1)
    for i, slo in enumerate([0.5, 0.1, 0.3, 0.2]):
        s.submit(0.0, req(i, 0.0, slo))
    order = []
    for _ in range(4):
        out = s.decide(0.0, [idle()])
        order += dispatched(out)
        (d,) = [x for x in out if isinstance(x, Dispatch)]
        s.on_complete(0.0, d.batch, idle(), 0.0)
    assert order == [(1,), (3,), (2,), (0,)]


def test_fifo_when_reordering_is_off() -> None:
    s = CoFBScheduler(PROFILE, max_batch=1, reorder=False)
    for i, slo in enumerate([0.5, 0.1, 0.3]):
        s.submit(0.0, req(i, 0.0, slo))
    assert dispatched(s.decide(0.0, [idle()])) == [(0,)]


def test_early_drop_of_negative_slack_with_reasons() -> None:
    s = CoFBScheduler(PROFILE, max_batch=8)
    s.submit(0.0, req(0, 0.0, 0.010))  # deadline passes before now=0.02
    s.submit(0.0, req(1, 0.0, 0.030))  # 10 ms left, batch of 1 takes 15 ms: unreachable
    s.submit(0.0, req(2, 0.0, 0.100))
    out = s.decide(0.02, [idle()])
    drops = {d.request.id: d.reason for d in out if isinstance(d, Drop)}
    assert drops == {0: DropReason.DEADLINE_EXPIRED, 1: DropReason.DEADLINE_UNREACHABLE}
    assert dispatched(out) == [(2,)]
    assert len(s) == 0


def test_no_drops_when_reordering_is_off() -> None:
    s = CoFBScheduler(PROFILE, max_batch=8, reorder=False)
    s.submit(0.0, req(0, 0.0, 0.010))
    out = s.decide(0.02, [idle()])
    assert not [d for d in out if isinstance(d, Drop)]
    assert dispatched(out) == [(0,)]


def test_batch_is_the_largest_that_meets_the_earliest_deadline() -> None:
    s = CoFBScheduler(PROFILE, max_batch=32)
    for i in range(20):
        s.submit(0.0, req(i, 0.0, 0.040 if i == 0 else 1.0))
    out = s.decide(0.0, [idle()])
    # 10 ms + 5 ms * b <= 40 ms  ->  b = 6, the tight request first
    assert dispatched(out) == [(0, 1, 2, 3, 4, 5)]
    assert len(s) == 14


def test_batching_off_takes_everything_up_to_max_batch() -> None:
    s = CoFBScheduler(PROFILE, max_batch=8, batching=False)
    for i in range(20):
        s.submit(0.0, req(i, 0.0, 0.040 if i == 0 else 1.0))
    assert [len(b) for b in dispatched(s.decide(0.0, [idle()]))] == [8]


# -- interference-aware throttle ---------------------------------------------------------------------


def start_one(s: CoFBScheduler, slo: float, n: int = 4) -> InstanceView:
    """Dispatch one batch of ``n`` at t=0 on a 2-slot instance; return the instance as the driver
    would show it afterwards (one batch in flight)."""
    for i in range(n):
        s.submit(0.0, req(i, 0.0, slo))
    inst = idle(concurrency=2)
    out = s.decide(0.0, [inst])
    assert [len(b) for b in dispatched(out)] == [n]
    inst.in_flight = 1
    return inst


def test_throttle_refuses_a_concurrent_batch_that_would_make_a_running_one_late() -> None:
    s = CoFBScheduler(PROFILE, max_batch=4)
    inst = start_one(s, slo=0.035)  # batch of 4 needs 30 ms alone, 45 ms at s(2) = 1.5
    s.submit(0.001, req(10, 0.001, 1.0))
    out = s.decide(0.001, [inst])
    assert dispatched(out) == []
    assert s.throttled == 1
    assert not [d for d in out if isinstance(d, Drop)]


def test_throttle_admits_when_every_deadline_still_holds() -> None:
    s = CoFBScheduler(PROFILE, max_batch=4)
    inst = start_one(s, slo=0.5)
    for i in range(10, 14):  # a full batch waits, so no reason to wait for more
        s.submit(0.001, req(i, 0.001, 0.5))
    out = s.decide(0.001, [inst])
    assert dispatched(out) == [(10, 11, 12, 13)]
    assert s.throttled == 0


def test_throttle_does_not_protect_a_batch_that_is_late_anyway() -> None:
    s = CoFBScheduler(PROFILE, max_batch=4, reorder=False)  # FIFO, no drops: a late batch runs
    inst = start_one(s, slo=0.012)  # even a batch of 1 needs 15 ms: it runs all 4, late anyway
    for i in range(10, 14):
        s.submit(0.001, req(i, 0.001, 0.5))
    assert dispatched(s.decide(0.001, [inst])) == [(10, 11, 12, 13)]
    assert s.throttled == 0


def test_throttle_off_admits_regardless() -> None:
    s = CoFBScheduler(PROFILE, max_batch=4, throttle=False, wait=False)
    inst = start_one(s, slo=0.035)
    s.submit(0.001, req(10, 0.001, 1.0))
    assert dispatched(s.decide(0.001, [inst])) == [(10,)]


def test_throttle_wakes_when_the_running_batch_has_progressed_enough() -> None:
    s = CoFBScheduler(PROFILE, max_batch=4, wait=False)
    inst = start_one(s, slo=0.040)  # alone: ends at 30 ms; remaining*1.5 fits 40 ms after t=10 ms
    s.submit(0.001, req(10, 0.001, 1.0))
    out = s.decide(0.001, [inst])
    (w,) = [d for d in out if isinstance(d, WaitUntil)]
    # f(t) = t + (30 ms - t) * 1.5 <= 40 ms  ->  t >= 10 ms
    assert w.time == pytest.approx(0.010)
    assert dispatched(s.decide(w.time, [inst])) == [(10,)]


def test_a_batch_smaller_than_the_load_needs_waits_while_slack_allows() -> None:
    # 3 requests in a 10 ms window = 300 req/s: more than batches below max_batch=4 sustain
    s = CoFBScheduler(PROFILE, max_batch=4, rate_window=0.01)
    for i in range(3):
        s.submit(0.0, req(i, 0.0, 0.2))
    out = s.decide(0.0, [idle()])
    assert dispatched(out) == []
    (w,) = [d for d in out if isinstance(d, WaitUntil)]
    # the latest start of a batch of 4: deadline 200 ms - (10 + 4 * 5) ms
    assert w.time == pytest.approx(0.170)
    assert [len(b) for b in dispatched(s.decide(w.time, [idle()]))] == [3]


def test_at_light_load_an_idle_instance_starts_at_once() -> None:
    s = CoFBScheduler(PROFILE, max_batch=4)  # 3 requests in 250 ms: b_load = 1
    for i in range(3):
        s.submit(0.0, req(i, 0.0, 0.2))
    assert dispatched(s.decide(0.0, [idle()])) == [(0, 1, 2)]


def test_load_aware_early_drop() -> None:
    # at 300 req/s a batch of 4 is needed: a request that only a batch of 1-3 could save is dropped
    s = CoFBScheduler(PROFILE, max_batch=4, rate_window=0.01)
    s.submit(0.0, req(0, 0.0, 0.022))  # alone: 15 ms fits; with all 3 queued (25 ms) it does not
    for i in range(1, 3):
        s.submit(0.0, req(i, 0.0, 0.2))
    out = s.decide(0.0, [idle()])
    assert [(d.request.id, d.reason) for d in out if isinstance(d, Drop)] == [
        (0, DropReason.DEADLINE_UNREACHABLE)
    ]
    plain = CoFBScheduler(PROFILE, max_batch=4, rate_window=0.01, load_aware_drop=False)
    plain.submit(0.0, req(0, 0.0, 0.022))
    for i in range(1, 3):
        plain.submit(0.0, req(i, 0.0, 0.2))
    assert dispatched(plain.decide(0.0, [idle()])) == [(0, 1)]  # 10 + 5 * 2 <= 22 ms


def test_concurrency_is_capped_where_it_adds_little_throughput() -> None:
    assert CoFBScheduler(PROFILE, 4).useful_concurrency(4) == 2  # 1/1, 2/1.5, 3/2.2: +33%, +2%
    steep = AffineProfile("m", 10 * MS, 5 * MS, slowdown=(1.0, 1.9, 2.8))
    assert CoFBScheduler(steep, 4).useful_concurrency(4) == 1
    assert CoFBScheduler(steep, 4, throttle=False).useful_concurrency(4) == 4


def test_every_queued_request_ends_once_on_drain() -> None:
    s = CoFBScheduler(PROFILE, max_batch=4)
    for i in range(5):
        s.submit(0.0, req(i, 0.0, 1.0))
    drops = s.drain(0.0, DropReason.UNAVAILABLE)
    assert sorted(d.request.id for d in drops) == list(range(5)) and len(s) == 0


def test_registry_builds_cofb_and_dvabatch() -> None:
    ctx = PolicyContext("m", max_batch=16, profile=PROFILE)
    cofb = make_scheduler("cofb", ctx, {"throttle": False, "slowdown": [1.0, 1.3]})
    assert isinstance(cofb, CoFBScheduler) and not cofb.throttle and cofb.slowdown(2) == 1.3
    dva = make_scheduler("dvabatch", ctx)
    assert isinstance(dva, CoFBScheduler) and not dva.reorder and not dva.throttle
    assert dva.slowdown(3) == pytest.approx(2.2)  # the profile's s(k)
    with pytest.raises(ValueError, match="needs a latency profile"):
        make_scheduler("cofb", PolicyContext("m"))


def test_a_flow_that_ended_is_forgotten() -> None:
    """The server tells the policy when a connection closes: nothing is kept for it after."""
    from sloserve.policies.flow_steering import LoadSteering

    steering = LoadSteering(2)
    for flow in range(100):
        steering.queue_of(flow)
        steering.on_bytes(0.0, flow, 1000)
    assert steering.flows == 100 and steering.flow_rate(0.0, 7) > 0
    for flow in range(100):
        steering.on_flow_end(flow)
    assert steering.flows == 0 and steering.flow_rate(0.0, 7) == 0.0
    assert steering.on_tick(0.0, [100.0, 0.0]) == []  # nothing left to move
