"""DNNScaler's detector, batch-size search and instance-count control (SEEDS §3)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest

from sloserve.core import (
    AffineProfile,
    ProfilePoint,
    SetInstanceCount,
    SetMaxBatch,
    TabulatedProfile,
    WindowStats,
)
from sloserve.policies.base import PolicyContext
from sloserve.policies.dnnscaler import (
    Approach,
    BatchSearch,
    DnnInstanceScaler,
    DnnScaler,
    InstanceControl,
    Readings,
    colocated_latency,
    detect,
    detect_from_points,
    detect_from_profile,
    initial_instances,
    predict_instance_latencies,
)
from sloserve.policies.dnnscaler_data import PUBLISHED_INSTANCE_LATENCY_MS
from sloserve.policies.registry import make_scaler

MS = 1e-3


def window(now: float, mean: float, *, max_batch: int = 1, instances: int = 1) -> WindowStats:
    return WindowStats(
        start=now - 1,
        end=now,
        arrivals=10,
        completed=10,
        dropped=0,
        met=10,
        mean_latency=mean,
        p95_latency=mean,
        queue_length=0,
        instances=instances,
        cores=instances,
        max_batch=max_batch,
        min_remaining_budget=math.inf,
    )


# -- detector ------------------------------------------------------------------------------------


def test_detector_picks_batching_when_batches_are_cheap_and_instances_contend() -> None:
    # batch 4 costs 13 ms vs 10 ms for batch 1; 4 co-located instances take 4x as long each
    prof = AffineProfile("m", alpha=9 * MS, beta=1 * MS, slowdown=(1, 2, 3, 4, 5))
    d = detect_from_profile(prof)
    assert d.approach is Approach.BATCHING
    assert d.batching_gain == pytest.approx(4 * 10 / 13)
    assert d.multi_tenancy_gain == pytest.approx(1.0)


def test_detector_picks_multi_tenancy_when_instances_overlap_and_batches_do_not() -> None:
    # a batch of b costs b times batch 1 (no amortisation); co-located instances barely interfere
    prof = AffineProfile("m", alpha=0.0, beta=10 * MS, slowdown=(1, 1.1, 1.2, 1.3))
    d = detect_from_profile(prof, k=4)
    assert d.approach is Approach.MULTI_TENANCY
    assert d.multi_tenancy_gain == pytest.approx(4 / 1.3)
    assert d.batching_gain == pytest.approx(1.0)


def test_detector_on_published_mobilenet_row_picks_multi_tenancy() -> None:
    lat = dict(((d, s), row) for d, s, row in PUBLISHED_INSTANCE_LATENCY_MS)[("MobileNetV1-0.25", "ImageNet")]
    # even a perfectly amortised batch (batch 4 as fast as batch 1) loses to 4 instances at 6.64 ms
    d = detect(lat[0] * MS, lat[0] * MS, lat[3] * MS, k=4)
    assert d.approach is Approach.MULTI_TENANCY


def test_detector_on_a_measured_profile_uses_its_slowdown_not_the_time_sliced_point() -> None:
    # with 4 one-thread instances on 2 cores the batch-1 median at k = 4 looks like no slowdown,
    # while the profile's s(k) (over all batch sizes) shows the contention
    pts = tuple(
        ProfilePoint(b, 1, k, med, med * 2)
        for b, k, med in (
            (1, 1, 0.010), (4, 1, 0.025), (1, 4, 0.011), (4, 4, 0.100), (1, 8, 0.011), (4, 8, 0.200),
        )
    )  # fmt: skip
    prof = TabulatedProfile("m", pts, slowdown=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0))
    assert colocated_latency(prof, 4) == pytest.approx(0.040)
    assert detect_from_profile(prof).approach is Approach.BATCHING  # 4 / 2.5 beats 4 / 4
    assert detect_from_points(pts).approach is Approach.MULTI_TENANCY  # the raw medians are fooled
    affine = AffineProfile("a", 0.009, 0.001, slowdown=(1.0, 1.5))
    assert colocated_latency(affine, 2) == pytest.approx(affine.latency(1, 1, 2))


def test_detector_ties_go_to_batching_and_bad_input_is_refused() -> None:
    assert detect(0.01, 0.02, 0.02, 4).approach is Approach.BATCHING
    with pytest.raises(ValueError, match="k must be"):
        detect(0.01, 0.02, 0.02, 1)
    with pytest.raises(ValueError, match="latency_batch_k"):
        detect(0.01, 0.0, 0.02, 4)


def test_detector_from_profiler_points_uses_matching_cores_and_names_missing_points() -> None:
    pts = [
        ProfilePoint(1, 1, 1, 0.010, 0.012),
        ProfilePoint(4, 1, 1, 0.030, 0.033),
        ProfilePoint(1, 1, 4, 0.015, 0.020),
        ProfilePoint(1, 2, 1, 0.006, 0.007),  # other core count, incomplete: ignored
    ]
    d = detect_from_points(pts, k=4)
    assert d.approach is Approach.MULTI_TENANCY
    assert d.multi_tenancy == pytest.approx(4 / 0.015)
    with pytest.raises(ValueError, match=r"batch 1, 4 instances"):
        detect_from_points(pts[:2], k=4)


# -- batching: binary search ---------------------------------------------------------------------


def drive_search(search: BatchSearch, latency: Callable[[int], float], steps: int) -> list[int]:
    out = []
    for _ in range(steps):
        out.append(search.update(latency(search.batch)))
    return out


def test_batch_search_converges_into_the_band_and_holds() -> None:
    slo = 0.100
    lat = lambda b: 0.005 + 0.001 * b  # noqa: E731  band [85, 100] ms -> b in 80..95
    s = BatchSearch(slo=slo, max_batch=127)
    trace = drive_search(s, lat, 12)
    assert 0.85 * slo <= lat(s.batch) <= slo
    settled = trace.index(s.batch)
    assert settled <= 8  # binary search: a handful of 3-second steps
    assert set(trace[settled:]) == {s.batch}


def test_batch_search_reopens_downwards_when_the_device_slows() -> None:
    slo = 0.100
    s = BatchSearch(slo=slo, max_batch=127)
    drive_search(s, lambda b: 0.005 + 0.001 * b, 12)
    before = s.batch
    slow = lambda b: 0.010 + 0.004 * b  # noqa: E731  band now b in 19..22
    drive_search(s, slow, 20)
    assert s.batch < before
    assert 0.85 * slo <= slow(s.batch) <= slo


def test_batch_search_reopens_upwards_when_the_device_speeds_up() -> None:
    slo = 0.100
    s = BatchSearch(slo=slo, max_batch=127)
    drive_search(s, lambda b: 0.010 + 0.004 * b, 15)
    before = s.batch
    fast = lambda b: 0.002 + 0.0007 * b  # noqa: E731  band b in 119..127
    drive_search(s, fast, 25)
    assert s.batch > before
    assert 0.85 * slo <= fast(s.batch) <= slo or s.batch == 127


def test_batch_search_does_not_keep_breaching_when_no_batch_lands_in_the_band() -> None:
    slo = 0.100
    lat = lambda b: 0.040 * b  # noqa: E731  b=2 -> 80 ms (below), b=3 -> 120 ms (over): nothing in band
    s = BatchSearch(slo=slo, max_batch=127)
    trace = drive_search(s, lat, 40)
    over = [b for b in trace[10:] if lat(b) > slo]
    assert over == []
    assert s.batch == 2
    # 10% faster: b = 3 would still take 108 ms, and is not tried again
    assert drive_search(s, lambda b: 0.036 * b, 40).count(3) == 0
    # twice as fast: b = 5 lands in the band (100 ms) and is found
    drive_search(s, lambda b: 0.020 * b, 20)
    assert s.batch == 5


def test_batch_search_holds_on_empty_windows_and_respects_bounds() -> None:
    s = BatchSearch(slo=0.1, max_batch=8)
    assert s.update(0.0) == 1
    for _ in range(10):
        s.update(0.001)
    assert s.batch == 8
    with pytest.raises(ValueError):
        BatchSearch(slo=0.0, max_batch=8)


def test_batch_search_once_in_band_needs_two_low_windows_in_a_row_to_move() -> None:
    s = BatchSearch(slo=0.1, max_batch=127, batch=40, lo=1, hi=127)
    for latency in (0.090, 0.084, 0.090, 0.084, 0.090, 0.084):  # noise around the band's lower edge
        s.update(latency)
    assert s.batch == 40
    s.update(0.084)
    s.update(0.084)
    assert s.batch > 40
    paper = BatchSearch(slo=0.1, max_batch=127, batch=40, lo=1, hi=127, patience=1)
    paper.update(0.090)
    paper.update(0.084)
    assert paper.batch > 40


def test_readings_pool_windows_until_enough_answers() -> None:
    r = Readings(min_samples=20)
    assert r.add(0.010, 5) is None
    assert r.add(0.0, 0) is None  # an empty window adds nothing
    assert r.add(0.020, 15) == pytest.approx((0.010 * 5 + 0.020 * 15) / 20)
    assert r.add(0.030, 19) is None  # pooled afresh after each decision
    r.clear()
    assert r.add(0.040, 25) == pytest.approx(0.040)


# -- multi-tenancy: instance count ---------------------------------------------------------------


def drive_instances(
    ctl: InstanceControl, latency: Callable[[int], float], seconds: int, t0: float = 0.0
) -> list[tuple[float, int]]:
    out = []
    for i in range(seconds):
        now = t0 + i
        before = ctl.count
        after = ctl.update(now, latency(ctl.count))
        if after != before:
            out.append((now, after))
    return out


def test_instances_grow_until_the_band_and_settle_five_seconds_between_changes() -> None:
    slo = 0.100
    lat = lambda k: 0.010 * k  # noqa: E731  band [85, 100] ms: k = 9 (90 ms) or 10
    ctl = InstanceControl(slo=slo, count=1, max_instances=10)
    changes = drive_instances(ctl, lat, 60)
    assert ctl.count == 9
    times = [t for t, _ in changes]
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(times))


def test_instances_hysteresis_no_oscillation_at_a_breaching_step() -> None:
    slo = 0.100
    # k = 4 is below the band (80 ms) and k = 5 is over L (120 ms): the plain rule would flap.
    lat = lambda k: 0.020 * k if k <= 4 else 0.120  # noqa: E731
    ctl = InstanceControl(slo=slo, count=1, max_instances=10)
    changes = drive_instances(ctl, lat, 300)
    assert ctl.count == 4
    assert [c for _, c in changes].count(5) == 1  # tried once, removed, never again
    assert changes[-1][1] == 4


def test_instances_unblock_when_conditions_improve_and_shrink_when_they_worsen() -> None:
    slo = 0.100
    ctl = InstanceControl(slo=slo, count=1, max_instances=10)
    drive_instances(ctl, lambda k: 0.020 * k if k <= 4 else 0.120, 100)
    assert ctl.count == 4
    drive_instances(ctl, lambda k: 0.010 * k, 100, t0=100.0)  # twice as fast now
    assert ctl.count == 9
    drive_instances(ctl, lambda k: 0.025 * k, 100, t0=200.0)  # slower than at the start
    assert ctl.count == 4


def test_too_high_a_start_is_corrected_and_then_held() -> None:
    ctl = InstanceControl(slo=0.100, count=8, max_instances=10)
    changes = drive_instances(ctl, lambda k: 0.030 * k, 120)
    assert ctl.count == 3
    assert [c for _, c in changes] == [7, 6, 5, 4, 3]


# -- completion-based start and the scalers ------------------------------------------------------


def test_initial_instances_from_predicted_latencies() -> None:
    row = dict(((d, s), r) for d, s, r in PUBLISHED_INSTANCE_LATENCY_MS)[("InceptionV1", "ImageNet")]
    pred = predict_instance_latencies(row[0], row[7])
    assert len(pred) == 10
    assert pred[0] == pytest.approx(row[0]) and pred[7] == pytest.approx(row[7])
    assert initial_instances(pred, 35.0) == 8  # published SLO 35 ms: measured latency at k = 8 is 33.55
    assert initial_instances(pred, 1.0) == 1


def test_registry_builds_the_detected_scaler_and_it_sets_its_knob() -> None:
    mt_prof = AffineProfile(
        "mt", alpha=0.0, beta=10 * MS, slowdown=(1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8)
    )
    ctx = PolicyContext(model="mt", max_batch=127, profile=mt_prof, slo=0.016)
    scaler = make_scaler("dnnscaler", ctx)
    assert isinstance(scaler, DnnScaler)
    assert scaler.approach is Approach.MULTI_TENANCY
    assert scaler.interval == 1.0
    assert isinstance(scaler.inner, DnnInstanceScaler)
    k0 = scaler.inner.control.count
    assert k0 > 1  # predicted from the profile's k = 1 and k = 8 latencies
    first = scaler.on_tick(1.0, window(1.0, 0.0, max_batch=32, instances=1))
    assert SetMaxBatch("mt", 1) in first and SetInstanceCount("mt", k0) in first

    b_prof = AffineProfile("b", alpha=9 * MS, beta=1 * MS, slowdown=(1, 2, 3, 4, 5))
    bctx = PolicyContext(model="b", max_batch=64, profile=b_prof, slo=0.1)
    bs = make_scaler("dnnscaler", bctx)
    assert bs.approach is Approach.BATCHING and bs.interval == 3.0
    assert bs.on_tick(3.0, window(3.0, 0.01, max_batch=64)) == [SetMaxBatch("b", 1)]
    assert bs.on_tick(6.0, window(6.0, 0.01, max_batch=1)) == []  # 10 answers: pooled, not enough
    assert bs.on_tick(9.0, window(9.0, 0.01, max_batch=1)) == [SetMaxBatch("b", 33)]
    with pytest.raises(ValueError, match="needs an SLO"):
        make_scaler("dnnscaler_batch", PolicyContext(model="b", max_batch=8))
    with pytest.raises(ValueError, match="'dnnscaler_mt' params: nonsense: Extra inputs"):
        make_scaler("dnnscaler_mt", bctx, {"nonsense": 1})
    with pytest.raises(ValueError, match=r"'dnnscaler \(batching\)' params: settle_s: Extra inputs"):
        make_scaler("dnnscaler", bctx, {"settle_s": 2})  # a multi-tenancy knob; the detector chose batching
