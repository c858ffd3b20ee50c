"""Sponge: the integer program against exhaustive enumeration, the rate predictor, the scalers."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sloserve.core import SetInstanceCores, SetInstanceCount, SetMaxBatch, SpongeProfile, WindowStats
from sloserve.planning.sponge_ip import solve_sponge_ip
from sloserve.policies import PolicyContext, make_scaler
from sloserve.policies.sponge import (
    ONSET_TICK,
    STABLE_BUSY,
    HorizontalScaler,
    MaxRatePredictor,
    RecentBudget,
    SpongeScaler,
    enumerate_solve,
    horizontal_replicas,
    sponge_cost,
)
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import ModelSetup, simulate
from sloserve.sim import workload as wl

PROFILE = SpongeProfile("m", gamma=0.008, delta=0.0005, epsilon=0.004, eta=0.001, max_batch=32)


def _window(end: float, arrivals: int, budget: float = math.inf, duration: float = 1.0) -> WindowStats:
    return WindowStats(
        start=end - duration,
        end=end,
        arrivals=arrivals,
        completed=arrivals,
        dropped=0,
        met=arrivals,
        mean_latency=0.01,
        p95_latency=0.02,
        queue_length=0,
        instances=1,
        cores=1,
        max_batch=1,
        min_remaining_budget=budget,
    )


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    gamma=st.floats(0.0, 0.02),
    delta=st.floats(0.0, 0.002),
    epsilon=st.floats(0.0, 0.01),
    eta=st.floats(0.0001, 0.005),
    lam=st.floats(0.5, 400.0),
    budget=st.floats(0.005, 1.0),
    max_cores=st.integers(1, 12),
    max_batch=st.integers(1, 48),
)
def test_integer_program_equals_enumeration(
    gamma: float,
    delta: float,
    epsilon: float,
    eta: float,
    lam: float,
    budget: float,
    max_cores: int,
    max_batch: int,
) -> None:
    profile = SpongeProfile("m", gamma=gamma, delta=delta, epsilon=epsilon, eta=eta)
    found = solve_sponge_ip(lam, budget, profile, max_cores, max_batch)
    assert found == enumerate_solve(lam, budget, profile, max_cores, max_batch)
    if found is not None:
        c, b = found
        assert sponge_cost(lam, b, c, profile) <= budget


def test_enumeration_is_lexicographic_fewest_cores_then_smallest_batch() -> None:
    # at 100 req/s and a 0.6 s budget: 1 core never fits; 2 cores fit first at some batch
    c, b = enumerate_solve(100.0, 0.6, PROFILE, 8, 32) or (0, 0)
    assert c > 1
    assert all(sponge_cost(100.0, bb, cc, PROFILE) > 0.6 for cc in range(1, c) for bb in range(1, 33))
    assert all(sponge_cost(100.0, bb, c, PROFILE) > 0.6 for bb in range(1, b))
    assert sponge_cost(100.0, b, c, PROFILE) <= 0.6
    assert solve_sponge_ip(100.0, 0.6, PROFILE, 8, 32) == (c, b)
    assert solve_sponge_ip(1e6, 0.01, PROFILE, 2, 4) is None
    assert solve_sponge_ip(10.0, -1.0, PROFILE, 2, 4) is None


def test_rate_predictor_is_max_of_recent_windows() -> None:
    p = MaxRatePredictor(windows=3)
    assert p.predict() == 0.0
    assert [p.observe(_window(t, n)) for t, n in [(1, 10), (2, 50), (3, 20), (4, 30), (5, 5), (6, 5)]] == [
        10,
        50,
        50,
        50,
        30,
        30,
    ]
    half = MaxRatePredictor(windows=1)
    assert half.observe(_window(0.5, 10, duration=0.5)) == pytest.approx(20.0)
    onset = MaxRatePredictor(windows=2)
    late_start = dataclasses.replace(_window(1, 126), first_arrival=0.5)  # idle, then 250 req/s
    assert onset.observe(late_start) == pytest.approx(250.0)
    assert onset.observe(_window(2, 250)) == pytest.approx(250.0)
    with pytest.raises(ValueError):
        MaxRatePredictor(windows=0)


def test_recent_budget_ignores_empty_windows() -> None:
    q = RecentBudget(default=0.5, windows=2)
    assert q.observe(_window(1, 0)) == 0.5
    assert q.observe(_window(2, 3, 0.2)) == pytest.approx(0.2)
    assert q.observe(_window(3, 3, 0.4)) == pytest.approx(0.2)
    assert q.observe(_window(4, 3, 0.4)) == pytest.approx(0.4)


def test_sponge_scaler_sets_cores_and_batch_with_margin() -> None:
    calls: list[tuple[float, float]] = []

    def solve(lam: float, budget: float, profile: object, max_cores: int, max_batch: int) -> tuple[int, int]:
        calls.append((lam, budget))
        return (3, 7) if lam > 50 else (1, 2)

    s = SpongeScaler("m", PROFILE, slo=0.5, solve=solve, max_cores=8, max_batch=32, instance=4)
    assert s.on_tick(1.0, _window(1.0, 20, 0.3)) == [SetInstanceCores(4, 1), SetMaxBatch("m", 2)]
    assert calls[-1] == (20, pytest.approx(0.3 - 0.05))
    assert s.on_tick(2.0, _window(2.0, 20, 0.3)) == []
    assert s.on_tick(3.0, _window(3.0, 100, 0.4)) == [SetInstanceCores(4, 3), SetMaxBatch("m", 7)]
    # the predictor keeps the peak for five windows, so cores stay up
    assert s.on_tick(4.0, _window(4.0, 10, 0.4)) == []
    assert s.history[-1][1:] == (100, pytest.approx(0.3), 3, 7)


def test_sponge_scaler_takes_every_core_when_nothing_fits() -> None:
    s = SpongeScaler("m", PROFILE, slo=0.05, solve=enumerate_solve, max_cores=4, max_batch=32)
    out = s.on_tick(1.0, _window(1.0, 5000, 0.05))
    cores = [d for d in out if isinstance(d, SetInstanceCores)]
    assert cores == [SetInstanceCores(0, 4)]
    b = s.batch or 0
    assert all(sponge_cost(5000, b, 4, PROFILE) <= sponge_cost(5000, bb, 4, PROFILE) for bb in range(1, 33))


def test_sponge_relaxes_to_stable_batches_within_the_budget_before_taking_every_core() -> None:
    # a large serial term: a second's batches cannot finish within q = 0.3 s even on 16 cores ...
    prof = SpongeProfile("m", gamma=0.020, delta=0.001, epsilon=0.010, eta=0.002, max_batch=32)
    lam, q, slo = 120.0, 0.3, 0.5
    assert enumerate_solve(lam, q - 0.1 * slo, prof, 16, 32) is None
    s = SpongeScaler("m", prof, slo=slo, solve=enumerate_solve, max_cores=16, max_batch=32)
    cores, batch = s.choose(lam, q)
    # ... so it takes the fewest cores, then the smallest batch, whose batches each fit the budget
    # and keep the instance busy at most 75% of the time, far fewer than every core
    lat = prof.latency(batch, cores, 1)
    assert STABLE_BUSY == 0.75
    assert lat <= q - 0.1 * slo and math.ceil(lam / batch) * lat <= STABLE_BUSY
    assert cores < 16
    for c in range(1, cores):
        for b in range(1, 33):
            fits = prof.latency(b, c, 1) <= q - 0.1 * slo
            assert not (fits and math.ceil(lam / b) * prof.latency(b, c, 1) <= STABLE_BUSY)


def test_an_idle_model_gets_one_core_at_its_largest_batch_within_the_budget() -> None:
    s = SpongeScaler("m", PROFILE, slo=0.08, solve=enumerate_solve, max_cores=4, max_batch=32)
    # no arrivals: q is the SLO; l(7, 1) = 64.5 ms fits 80 ms less the 8 ms margin, l(8, 1) = 73 ms not
    assert s.on_tick(1.0, _window(1.0, 0)) == [SetInstanceCores(0, 1), SetMaxBatch("m", 7)]
    h = HorizontalScaler("m", PROFILE, slo=0.08, max_replicas=4, max_batch=32)
    assert h.on_tick(1.0, _window(1.0, 0)) == [SetInstanceCount("m", 1), SetMaxBatch("m", 8)]
    assert SpongeScaler("m", PROFILE, slo=0.08, solve=enumerate_solve, max_cores=4, max_batch=4).choose(
        0.0, 0.08
    ) == (1, 4)
    assert s.choose(0.0, 0.01) == (1, 1)  # not even batch 1 fits: still batch 1


def test_both_scalers_re_plan_a_quarter_interval_after_traffic_begins() -> None:
    """Not up to a whole interval later, on the idle plan's one core (simulator: ticks at 1, 2, ...)."""
    load = wl.poisson(rate=300.0, duration=3.0, seed=1)
    first = float(load.arrivals[0])
    for scaler in (
        SpongeScaler("m", PROFILE, slo=0.08, solve=enumerate_solve, max_cores=4, max_batch=32),
        HorizontalScaler("m", PROFILE, slo=0.08, max_replicas=4, max_batch=32),
    ):
        assert scaler.onset_delay == pytest.approx(ONSET_TICK * scaler.interval) and ONSET_TICK < 1
        simulate(ModelSetup("m", PROFILE, TritonDynamicBatcher(32), scaler=scaler), load)
        ticks = [round(t, 9) for t, *_ in scaler.history]
        assert ticks[:3] == pytest.approx(
            [first + ONSET_TICK, first + ONSET_TICK + 1, first + ONSET_TICK + 2]
        )
        _, lam, _, resources, _ = scaler.history[0]
        assert 200 < lam < 400 and resources > 1  # read as the rate, and scaled out at once


def test_horizontal_baseline_formula() -> None:
    n, b = horizontal_replicas(300.0, 0.5, PROFILE, 16, 32) or (0, 0)
    assert (math.ceil(300 / (b * n)) + 1) * PROFILE.latency(b, 1) < 0.5
    for nn in range(1, n):
        assert all((math.ceil(300 / (bb * nn)) + 1) * PROFILE.latency(bb, 1) >= 0.5 for bb in range(1, 33))
    h = HorizontalScaler("m", PROFILE, slo=0.5, max_replicas=16, max_batch=32)
    out = h.on_tick(1.0, _window(1.0, 300, 0.5))
    assert out == [SetInstanceCount("m", n), SetMaxBatch("m", b)]


def test_registry_wires_the_integer_program() -> None:
    ctx = PolicyContext(model="m", max_batch=32, profile=PROFILE, slo=0.5)
    s = make_scaler("sponge", ctx, {"max_cores": 8})
    assert isinstance(s, SpongeScaler) and s.solve is solve_sponge_ip and s.max_cores == 8
    h = make_scaler("horizontal", ctx, {"max_replicas": 4})
    assert isinstance(h, HorizontalScaler) and h.max_replicas == 4
    with pytest.raises(ValueError, match="profile"):
        make_scaler("sponge", PolicyContext(model="m", max_batch=8, slo=0.5))
    with pytest.raises(ValueError, match="SLO"):
        make_scaler("horizontal", PolicyContext(model="m", max_batch=8, profile=PROFILE))
