"""The SLO-aware batcher: EDF order, deadline-safe maximal batches, early drops, waiting."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sloserve.core import (
    AffineProfile,
    Batch,
    Decision,
    Dispatch,
    Drop,
    DropReason,
    InstanceView,
    Request,
    WaitUntil,
)
from sloserve.policies import PolicyContext, make_scheduler
from sloserve.policies.slo_batcher import HEAD_OF_LINE_LOSS, SloBatcher
from sloserve.sim import ModelSetup, simulate, workload

PROFILE = AffineProfile("m", alpha=0.004, beta=0.001, tail_factor=1.25, max_batch=64)


def _tail(b: int) -> float:
    return PROFILE.tail_latency(b)


def _req(i: int, arrival: float, slo: float, priority: int = 0) -> Request:
    return Request(i, "m", arrival, arrival + slo, priority)


def test_batch_is_largest_prefix_meeting_earliest_deadline() -> None:
    s = SloBatcher(PROFILE, max_batch=32, head_of_line_cap=False)
    for i in range(20):
        s.submit(0.0, _req(i, 0.0, 0.02))  # tail(b) = 1.25 * (4 + b) ms <= 20 ms  ->  b <= 12
    out = s.decide(0.0, [InstanceView(0, "m")])
    dispatch = out[0]
    assert isinstance(dispatch, Dispatch)
    assert dispatch.batch.size == 12
    assert len(s) == 8


def test_no_batch_is_larger_than_the_profiles_most_efficient_size() -> None:
    from sloserve.core.profiles import ProfilePoint, TabulatedProfile

    # measured-style CPU curve: 1000, 1111, 1176, 1053, 1000 rows/s at batch 1, 2, 4, 8, 16
    times = {1: 1.0, 2: 1.8, 4: 3.4, 8: 7.6, 16: 16.0}
    curve = TabulatedProfile(
        "m", tuple(ProfilePoint(b, 1, 1, t * 1e-3, 1.1 * t * 1e-3) for b, t in times.items())
    )

    def first_batch(**flags: bool) -> int:
        s = SloBatcher(curve, max_batch=16, **flags)
        for i in range(20):
            s.submit(0.0, _req(i, 0.0, 1.0))  # a budget far beyond any batch: only the caps limit
        out = s.decide(0.0, [InstanceView(0, "m")])
        assert isinstance(out[0], Dispatch)
        return out[0].batch.size

    assert first_batch() == 4  # 4 batches of 4 finish all 16 sooner than one of 16
    assert first_batch(efficient_cap=False) == 16
    # the cap follows max_batch when a scaler lowers it
    s = SloBatcher(curve, max_batch=16)
    s.set_max_batch(2)
    assert s.batch_limit(InstanceView(0, "m")) == 2


def test_no_batch_is_longer_than_half_the_smallest_recent_budget() -> None:
    # nearly proportional, as measured CPU profiles are: tail(b) = 1.25 * (0.05 + b) ms; a 20 ms
    # budget allows 15 by its deadline but only 7 within 10 ms: a request arriving as the batch
    # starts waits for it, then runs in the next one
    linear = AffineProfile("m", alpha=0.00005, beta=0.001, tail_factor=1.25, max_batch=32)
    s = SloBatcher(linear, max_batch=32, rate_window=4)
    for i in range(20):
        s.submit(0.0, _req(i, 0.0, 0.02))
    out = s.decide(0.0, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch) and out[0].batch.size == 7
    # one request with a 14 ms budget among the last four arrivals: tail <= 7 ms, 5
    inst = InstanceView(0, "m")
    s.submit(0.0, _req(20, 0.0, 0.014))
    assert s.batch_limit(inst) == 5
    # once four later arrivals have pushed it out of the window, the cap is the 20 ms budget's again
    for i in range(21, 25):
        s.submit(0.0, _req(i, 0.0, 0.02))
    assert s.batch_limit(inst) == 7
    s.head_of_line_cap = False
    assert s.batch_limit(inst) == 32
    # where batching pays (tail(b) = 1.25 * (4 + b) ms: below 28 a batch loses more than 2% of the
    # peak throughput) the cap stops there, and the deadline's 12 stands
    s = SloBatcher(PROFILE, max_batch=32)
    for i in range(20):
        s.submit(0.0, _req(i, 0.0, 0.02))
    assert s.batch_limit(inst) == 28
    out = s.decide(0.0, [inst])
    assert isinstance(out[0], Dispatch) and out[0].batch.size == 12


def test_edf_order_and_priority_levels() -> None:
    s = SloBatcher(PROFILE, max_batch=3)
    s.submit(0.0, _req(0, 0.0, 0.5))
    s.submit(0.0, _req(1, 0.0, 0.1))
    s.submit(0.0, _req(2, 0.0, 0.3, priority=2))  # lower level: after every level-1 request
    s.submit(0.0, _req(3, 0.0, 0.2))
    out = s.decide(0.0, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch)
    assert [r.id for r in out[0].batch.requests] == [1, 3, 0]


def test_hopeless_requests_are_dropped_with_a_reason() -> None:
    s = SloBatcher(PROFILE, max_batch=8)
    s.submit(0.0, _req(0, 0.0, 0.001))  # cannot finish even alone (tail(1) = 6.25 ms)
    s.submit(0.0, _req(1, 0.0, 0.1))
    out = s.decide(0.0, [InstanceView(0, "m")])
    drops = [d for d in out if isinstance(d, Drop)]
    assert [(d.request.id, d.reason) for d in drops] == [(0, DropReason.DEADLINE_UNREACHABLE)]
    # once the batcher has seen an instance, hopeless arrivals are refused at once
    refused = s.submit(1.0, _req(2, 1.0, 0.002))
    assert refused is not None and refused.reason is DropReason.DEADLINE_UNREACHABLE


def test_cores_and_running_batches_change_the_prediction() -> None:
    from sloserve.core import SpongeProfile

    sp = SpongeProfile("m", gamma=0.004, delta=0.0, epsilon=0.0, eta=0.001, slowdown=(1.0, 2.0))
    for cores, in_flight, expected in [(1, 0, 4), (4, 0, 19), (1, 1, 2)]:
        s = SloBatcher(sp, max_batch=64, head_of_line_cap=False)
        for i in range(40):
            s.submit(0.0, _req(i, 0.0, 0.02))
        inst = InstanceView(0, "m", cores=cores, in_flight=in_flight, max_concurrency=in_flight + 1)
        out = s.decide(0.0, [inst])
        assert isinstance(out[-1], Dispatch), (cores, in_flight, out)
        assert out[-1].batch.size == expected, (cores, in_flight)
    # instances on one machine: a batch running on another instance slows this one too
    for shared, expected in [(True, 2), (False, 4)]:
        s = SloBatcher(sp, max_batch=64, shared_hardware=shared, head_of_line_cap=False)
        for i in range(40):
            s.submit(0.0, _req(i, 0.0, 0.02))
        busy = InstanceView(1, "m", in_flight=1)
        out = s.decide(0.0, [InstanceView(0, "m"), busy])
        assert isinstance(out[0], Dispatch) and out[0].batch.size == expected, shared


def test_waits_only_while_the_next_arrival_is_cheaper_than_idling() -> None:
    # l(b) = 4 + b ms: waiting for a third request pays iff it comes within l(2)/2 - 1 = 2 ms
    # (3 / (gap + 7 ms) > 2 / 6 ms). Arrivals every 0.2 ms: it does
    s = SloBatcher(PROFILE, max_batch=32)
    for i in range(2):
        s.submit(i * 0.0002, _req(i, i * 0.0002, 0.05))
    out = s.decide(0.0004, [InstanceView(0, "m")])
    assert len(out) == 1 and isinstance(out[0], WaitUntil)
    assert out[0].time == pytest.approx(0.0004 + 0.0004)  # the expected next arrival
    # ... but never past the latest start that keeps the earliest deadline with one more request
    s = SloBatcher(PROFILE, max_batch=32, head_of_line_cap=False)
    for i in range(2):
        s.submit(i * 0.0002, _req(i, i * 0.0002, 0.0093))
    out = s.decide(0.0004, [InstanceView(0, "m")])
    assert len(out) == 1 and isinstance(out[0], WaitUntil)
    assert out[0].time == pytest.approx(0.0093 - _tail(3))
    # arrivals every 2 ms (rate estimate: one more in 4 ms): idling costs more, so it runs now
    s = SloBatcher(PROFILE, max_batch=32)
    for i in range(2):
        s.submit(i * 0.002, _req(i, i * 0.002, 0.05))
    out = s.decide(0.004, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch) and out[0].batch.size == 2


def test_next_arrival_is_shared_among_the_free_instances_only() -> None:
    # arrivals every 0.5 ms (2000/s); three queued: waiting for a fourth pays iff it comes within
    # 1.25 ms (4 / (gap + 8 ms) > 3 / 7 ms)
    def decide(busy: int) -> list[Decision]:
        s = SloBatcher(PROFILE, max_batch=32, shared_hardware=False)
        for i in range(3):
            s.submit(i * 0.0005, _req(i, i * 0.0005, 0.05))
        views = [InstanceView(k, "m", in_flight=1 if k < busy else 0) for k in range(4)]
        return s.decide(0.001, views)

    # three of four instances busy: every arrival comes to the free one, 0.5 ms apart -> wait
    out = decide(busy=3)
    assert len(out) == 1 and isinstance(out[0], WaitUntil)
    assert out[0].time == pytest.approx(0.001 + 0.0005)
    # all four free: the next arrival may go to another instance (2 ms per instance) -> run now
    out = decide(busy=0)
    assert isinstance(out[0], Dispatch) and out[0].batch.size == 3


def test_on_a_shared_machine_waiting_counts_the_capacity_a_new_batch_adds() -> None:
    # l(b) = 4 + b ms; two queued, one more expected in 5 ms; three batches run on the machine.
    # s(k) = 1, 1.1, 1.375, 1.73: a fourth concurrent batch adds 4/1.73 - 3/1.375 = 0.13 batches'
    # worth of throughput, so it waits while the gap is under alpha / (b * 0.13) = 15 ms; without
    # a slowdown (gain 1) only under alpha / b = 2 ms, and 5 ms is not.
    slowed = AffineProfile("m", alpha=0.004, beta=0.001, tail_factor=1.25, slowdown=(1.0, 1.1, 1.375, 1.73))
    for profile, waits in [(slowed, True), (PROFILE, False)]:
        s = SloBatcher(profile, max_batch=32, shared_hardware=True)
        assert s.added_capacity(4) == pytest.approx(4 / 1.73 - 3 / 1.375 if profile is slowed else 1.0)
        for i in range(2):
            s.submit(i * 0.005, _req(i, i * 0.005, 0.05))
        views = [InstanceView(0, "m")] + [InstanceView(k, "m", in_flight=1) for k in range(1, 4)]
        out = s.decide(0.005, views)
        if waits:
            assert len(out) == 1 and isinstance(out[0], WaitUntil), out
            assert out[0].time == pytest.approx(0.005 + 0.005)
        else:
            assert isinstance(out[0], Dispatch) and out[0].batch.size == 2, out


def test_overload_passes_over_the_most_urgent_for_a_wider_batch() -> None:
    s = SloBatcher(PROFILE, max_batch=16, head_of_line_cap=False)
    # a burst: 1 urgent request that limits an EDF prefix to 1, then 30 with room for 16
    s.submit(0.0, _req(0, 0.0, 0.0075))
    for i in range(1, 31):
        s.submit(i * 1e-5, _req(i, i * 1e-5, 0.04))
    out = s.decide(0.0004, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch)
    assert out[0].batch.size == 16 and 0 not in [r.id for r in out[0].batch.requests]
    # at a low rate the urgent request is served first instead
    s = SloBatcher(PROFILE, max_batch=16, head_of_line_cap=False)
    for i in range(1, 4):
        s.submit((i - 1) * 0.01, _req(i, (i - 1) * 0.01, 0.06))
    s.submit(0.03, _req(0, 0.03, 0.008))
    out = s.decide(0.03, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch)
    assert [r.id for r in out[0].batch.requests] == [0, 1]


def test_the_urgent_are_passed_over_only_when_that_leaves_fewer_predicted_misses() -> None:
    def burst(loose_slo: float, loose: int, plan_queue: bool = True) -> list[int]:
        s = SloBatcher(PROFILE, max_batch=16, plan_queue=plan_queue, head_of_line_cap=False)
        s.submit(0.0, _req(0, 0.0, 0.0075))  # limits an EDF prefix to itself
        for i in range(1, loose + 1):  # a high rate: batches of one fall far behind it
            s.submit(i * 1e-5, _req(i, i * 1e-5, loose_slo))
        out = s.decide(0.0004, [InstanceView(0, "m")])
        assert isinstance(out[0], Dispatch)
        return [r.id for r in out[0].batch.requests]

    # ten with a 100 ms SLO can wait: the urgent one alone (6.25 ms), then all ten (17.5 ms) — no
    # miss; the ten first would lose the urgent one
    assert burst(0.1, 10) == [0]
    assert burst(0.1, 10, plan_queue=False) == list(range(1, 11))  # the rule before: always wider
    # thirty with 40 ms: serving the urgent one first leaves 12 of them predicted to miss, the
    # widest batch (16 now) 8 including the urgent one — it is passed over
    ids = burst(0.04, 30)
    assert len(ids) == 16 and 0 not in ids


def test_with_mixed_slos_the_urgent_are_served_and_those_with_slack_wait() -> None:
    """The batching experiment's mixed row (mobilenet_v2-like profile, half the requests with an
    18.1 ms SLO, half with 72.3 ms, Poisson): at 900 req/s passing over the urgent to keep batches
    wide lost 1.9% of the requests, all urgent ones; planning the queue both ways loses under 1%."""
    from sloserve.experiments import batching

    cases, _ = batching.load_cases(["published"], quick=False, scenarios=["base"])
    (case,) = [c for c in cases if c.profile.model == "mobilenet_v2" and c.label == "mixed"]
    for seed in (0, 1):
        metrics = batching.run_once(case, batching.make_slo(case.profile, case.slo), 900.0, seed, 10.0)
        assert metrics.attainment >= 0.99


def test_under_bursts_the_head_of_line_cap_keeps_the_requests_behind_a_batch() -> None:
    """The batching experiment's bursty row on four instances (the demo bert profile, 10.1 ms SLO,
    gamma arrivals with CV 3, 400 req/s): without the cap a burst is served in long batches and
    the requests arriving behind them miss — several times as many misses (the tail calibration,
    which halves the misses without the cap there, is off to show the cap alone)."""
    from sloserve.experiments import batching

    cases, _ = batching.load_cases(["demo"], quick=False, scenarios=["gamma3-inst4"])
    (case,) = [c for c in cases if c.profile.model == "bert" and c.label == "tight"]
    missed: dict[bool, float] = {}
    for cap in (True, False):

        def make(cap: bool = cap) -> tuple[SloBatcher, None]:
            p = case.profile
            batcher = SloBatcher(
                p, p.max_batch, case.slo, shared_hardware=False, head_of_line_cap=cap, tail_window=0
            )
            return batcher, None

        attainment = [batching.run_once(case, make, 400.0, seed, 20.0).attainment for seed in (0, 1, 2)]
        missed[cap] = sum(1 - a for a in attainment)
    assert missed[True] <= 0.03  # 99% on average
    assert missed[False] >= 3 * missed[True]


def test_does_not_wait_at_low_rate_or_without_deadline() -> None:
    s = SloBatcher(PROFILE, max_batch=32)
    s.submit(0.9, _req(0, 0.9, 0.5))
    s.submit(1.0, _req(1, 1.0, 0.5))
    out = s.decide(1.0, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch) and out[0].batch.size == 2
    s2 = SloBatcher(PROFILE, max_batch=32)
    for i in range(3):
        s2.submit(i * 1e-4, Request(i, "m", i * 1e-4))
    out = s2.decide(3e-4, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch) and out[0].batch.size == 3


def test_model_slo_gives_requests_without_deadline_one() -> None:
    s = SloBatcher(PROFILE, max_batch=32, slo=0.02, head_of_line_cap=False)
    for i in range(20):
        s.submit(0.0, Request(i, "m", 0.0))
    out = s.decide(0.0, [InstanceView(0, "m")])
    assert isinstance(out[0], Dispatch) and out[0].batch.size == 12


def test_registry_factory_needs_a_profile() -> None:
    ctx = PolicyContext(model="m", max_batch=16, profile=PROFILE, slo=0.05)
    s = make_scheduler("slo", ctx)
    assert isinstance(s, SloBatcher) and s.max_batch == 16 and s.slo == pytest.approx(0.05)
    with pytest.raises(ValueError, match="profile"):
        make_scheduler("slo", PolicyContext(model="m", max_batch=16))


def _first_batch(s: SloBatcher, inst: InstanceView) -> Batch:
    """The batch ``s`` dispatches on ``inst`` once eight requests with a 1 s budget are queued."""
    for i in range(8):
        s.submit(0.0, _req(i, 0.0, 1.0))
    return next(d for d in s.decide(0.0, [inst]) if isinstance(d, Dispatch)).batch


def test_calibration_scales_predictions_by_the_median_observed_ratio() -> None:
    s = SloBatcher(PROFILE, max_batch=8, calibration_window=5, calibration_min=3)
    inst = InstanceView(0, "m")
    batch = _first_batch(s, inst)
    predicted = PROFILE.latency(batch.size)
    assert batch.meta["predicted_s"] == pytest.approx(predicted)
    before = s.tail(4, inst)
    for ratio in (1.5, 1.4):  # fewer than calibration_min: the profile as it is
        s.on_complete(0.0, batch, inst, ratio * predicted)
    assert s.latency_scale == 1.0
    s.on_complete(0.0, batch, inst, 9.0 * predicted)  # a straggler does not move the median far
    assert s.latency_scale == pytest.approx(1.5)
    assert s.tail(4, inst) == pytest.approx(1.5 * before)
    s.on_complete(0.0, batch, inst, 0.0)  # a failed batch reports no time: ignored
    for ratio in (0.9, 0.8, 0.85):  # the window keeps the last 5: 1.4, 9, 0.9, 0.8, 0.85
        s.on_complete(0.0, batch, inst, ratio * predicted)
    assert s.latency_scale == pytest.approx(0.9)
    for _ in range(5):  # a drift inside the band (5%) leaves the profile as it is
        s.on_complete(0.0, batch, inst, 1.04 * predicted)
    assert s.latency_scale == 1.0
    off = SloBatcher(PROFILE, max_batch=8, calibration_window=0)
    for _ in range(20):
        off.on_complete(0.0, batch, inst, 2.0 * predicted)
    assert off.latency_scale == 1.0


def test_calibration_keeps_deadlines_when_the_profile_is_too_fast() -> None:
    """The instance runs 1.3x slower than the profile the batcher was given (a front end sharing
    its core): calibrated, it packs batches against the real times and answers almost nothing
    late; with calibration off it serves hundreds late (the tail calibration, which would catch
    the drift too, is off in both)."""
    believed = AffineProfile("m", alpha=0.0012, beta=0.00108, max_batch=32, tail_factor=1.15)
    actual = AffineProfile("m", alpha=0.0012 * 1.3, beta=0.00108 * 1.3, max_batch=32)
    for seed in (1, 2):
        runs = {}
        for window in (0, 64):
            batcher = SloBatcher(believed, 32, 0.04, calibration_window=window, tail_window=0)
            w = workload.with_slo(workload.poisson(rate=600, duration=10, seed=seed), slo=0.04)
            m = simulate(ModelSetup("m", actual, batcher, noise_cv=0.08), w).metrics
            runs[window] = (m.attainment, m.completed - m.met, batcher.latency_scale)
        (att_off, late_off, scale_off), (att_on, late_on, scale_on) = runs[0], runs[64]
        assert scale_off == 1.0 and 1.2 < scale_on < 1.4
        assert late_off > 100 and late_on <= late_off / 10
        assert att_on > att_off + 0.02


def test_tail_calibration_follows_the_observed_spread_of_batch_times() -> None:
    s = SloBatcher(PROFILE, max_batch=8, tail_window=100, tail_min=50)
    inst = InstanceView(0, "m")
    batch = _first_batch(s, inst)
    median = PROFILE.latency(batch.size)
    before = s.tail(4, inst)
    # the median as profiled, but one batch in fifty takes 1.6x it where the profile says 1.25x
    ratios = [1.6 if k % 50 == 0 else 1.0 for k in range(100)]
    for ratio in ratios[:49]:  # fewer than tail_min: the profile's tail as it is
        s.on_complete(0.0, batch, inst, ratio * median)
    assert s.tail_ratio == 0.0 and s.tail(4, inst) == pytest.approx(before)
    for ratio in ratios[49:]:
        s.on_complete(0.0, batch, inst, ratio * median)
    assert s.latency_scale == 1.0  # the median did not move ...
    assert s.tail_ratio == pytest.approx(1.6)  # ... the tail did
    assert s.tail(4, inst) == pytest.approx(1.6 * PROFILE.latency(4)) == pytest.approx(1.6 / 1.25 * before)
    assert s.typical(4, inst) == pytest.approx(PROFILE.latency(4))  # throughput judgements keep the median
    for _ in range(100):  # a steady drift (every batch 1.3x): the median's scale, for the tail too
        s.on_complete(0.0, batch, inst, 1.3 * median)
    assert s.latency_scale == pytest.approx(1.3) and s.tail(4, inst) == pytest.approx(1.3 * before)
    for _ in range(100):  # a spread narrower than the profile's does not tighten its tail
        s.on_complete(0.0, batch, inst, 1.0 * median)
    assert s.tail_ratio == 1.0 and s.tail(4, inst) == pytest.approx(before)
    wide = AffineProfile("m", alpha=0.004, beta=0.001, tail_factor=1.55, max_batch=64)
    w = SloBatcher(wide, max_batch=8, tail_window=100, tail_min=50)
    for ratio in ratios:  # the learnt 1.6x is within the band of a profile whose tail is 1.55x
        w.on_complete(0.0, batch, inst, ratio * median)
    assert w.tail_ratio == pytest.approx(1.6) and w.tail(4, inst) == pytest.approx(wide.tail_latency(4))
    off = SloBatcher(PROFILE, max_batch=8, tail_window=0)
    for ratio in ratios * 3:
        off.on_complete(0.0, batch, inst, ratio * median)
    assert off.tail_ratio == 0.0 and off.tail(4, inst) == pytest.approx(before)


def test_tail_calibration_skips_batches_slowed_by_batches_started_after_them() -> None:
    """On shared hardware a batch started beside later ones runs slower than predicted at its
    dispatch; that is interference the scheduler chose, not the spread of one batch's time."""
    for shared in (True, False):
        s = SloBatcher(PROFILE, max_batch=2, tail_window=10, tail_min=1, shared_hardware=shared)
        views = [InstanceView(0, "m"), InstanceView(1, "m")]
        for i in range(4):
            s.submit(0.0, _req(i, 0.0, 1.0))
        first, second = (d.batch for d in s.decide(0.0, views) if isinstance(d, Dispatch))
        s.on_complete(0.01, first, views[0], 2.0 * PROFILE.latency(first.size))
        assert s.tail_ratio == (0.0 if shared else pytest.approx(2.0))
        s.on_complete(0.01, second, views[1], 1.5 * PROFILE.latency(second.size))
        assert s.tail_ratio == pytest.approx(1.5 if shared else 2.0)


def test_tail_calibration_turns_late_answers_into_timely_ones() -> None:
    """The profile says batches vary by 5% (p99 / median), the instance varies as much as a
    server's does (lognormal, CV 0.15: p99 1.41x the median): with the tail learnt, the batcher
    stops packing batches against deadlines they then miss; without, it serves ~100 late."""
    believed = AffineProfile("m", alpha=0.0012, beta=0.00108, max_batch=32, tail_factor=1.05)
    for seed in (1, 2):
        runs = {}
        for window in (0, 256):
            batcher = SloBatcher(believed, 32, 0.02, tail_window=window)
            w = workload.with_slo(workload.poisson(rate=700, duration=10, seed=seed), slo=0.02)
            m = simulate(ModelSetup("m", believed, batcher, noise_cv=0.15), w, seed=seed).metrics
            runs[window] = (m.attainment, m.completed - m.met, batcher.tail_ratio)
        (att_off, late_off, ratio_off), (att_on, late_on, ratio_on) = runs[0], runs[256]
        assert ratio_off == 0.0 and 1.3 < ratio_on < 1.55
        assert late_off >= 50 and late_on <= 5
        assert att_on > att_off + 0.003


_request_specs = st.lists(
    st.tuples(
        st.floats(0.0, 0.05),  # arrival
        st.floats(0.0, 0.08),  # slo
        st.integers(0, 2),  # priority
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=_request_specs,
    max_batch=st.integers(1, 40),
    cores=st.integers(1, 4),
    in_flight=st.integers(0, 1),
    now_offset=st.floats(0.0, 0.03),
)
@pytest.mark.parametrize("head_of_line", [True, False])
def test_invariants(
    specs: list[tuple[float, float, int]],
    max_batch: int,
    cores: int,
    in_flight: int,
    now_offset: float,
    head_of_line: bool,
) -> None:
    profile = AffineProfile("m", alpha=0.003, beta=0.0015, tail_factor=1.2, slowdown=(1.0, 1.6))
    s = SloBatcher(profile, max_batch=max_batch, default_priority=1, head_of_line_cap=head_of_line)
    reqs = sorted(
        (Request(i, "m", a, a + slo, p) for i, (a, slo, p) in enumerate(specs)), key=lambda r: r.arrival
    )
    ended: list[Request] = []
    for r in reqs:
        drop = s.submit(r.arrival, r)
        if drop is not None:
            ended.append(drop.request)
    now = reqs[-1].arrival + now_offset
    inst = InstanceView(0, "m", cores=cores, in_flight=in_flight, max_concurrency=in_flight + 1)
    queued_before = list(s.queue)
    out = s.decide(now, [inst])

    def tail(b: int) -> float:
        return profile.tail_latency(b, cores, in_flight + 1)

    def level(r: Request) -> int:
        return r.priority or 1

    dispatched = [d for d in out if isinstance(d, Dispatch)]
    drops = [d for d in out if isinstance(d, Drop)]
    waits = [d for d in out if isinstance(d, WaitUntil)]
    assert len(dispatched) <= 1 and len(waits) <= 1
    # drops only the hopeless, with the right reason
    for d in drops:
        assert now + tail(1) > d.request.deadline
        assert d.reason in (DropReason.DEADLINE_UNREACHABLE, DropReason.DEADLINE_EXPIRED)
    survivors = [r for r in queued_before if r not in {d.request for d in drops}]
    assert all(now + tail(1) <= r.deadline for r in survivors)
    # every request ends once or stays queued
    in_batch = [r for d in dispatched for r in d.batch.requests]
    left = list(s.queue)
    assert sorted(r.id for r in ended + [d.request for d in drops] + in_batch + left) == sorted(
        r.id for r in reqs
    )
    if not dispatched:
        assert not survivors or waits
        return
    batch = dispatched[0].batch
    b = batch.size
    assert 1 <= b <= max_batch
    # never predicted to miss
    assert now + tail(b) <= batch.earliest_deadline
    # EDF among the requests that can make it: what is passed over could not join this batch
    key = max((level(r), r.deadline, r.id) for r in batch.requests)
    assert all((level(r), r.deadline, r.id) > key or now + tail(b) > r.deadline for r in left)
    # at least the largest EDF prefix that makes its earliest deadline
    order = sorted(queued_before, key=lambda r: (level(r), r.deadline, r.id))
    order = [r for r in order if r in survivors]
    # the head-of-line cap: no batch whose tail exceeds half the smallest budget among the last
    # 32 accepted arrivals (at least one request); the profile is affine, so no efficiency cap
    limit = max_batch
    if head_of_line:
        rates = [n / profile.latency(n, cores, in_flight + 1) for n in range(1, max_batch + 1)]
        knee = next(n for n, r in enumerate(rates, 1) if r >= (1 - HEAD_OF_LINE_LOSS) * max(rates))
        recent = [r.deadline - r.arrival for r in reqs if r not in ended][-32:]
        limit = max([knee, *(n for n in range(1, max_batch + 1) if tail(n) <= min(recent) / 2)])
    assert b <= limit
    prefix = 0
    for n in range(1, min(limit, len(order)) + 1):
        if now + tail(n) > min(r.deadline for r in order[:n]):
            break
        prefix = n
    assert b >= prefix
    assert not math.isinf(now)
