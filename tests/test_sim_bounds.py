"""The bounds no scheduler passes: exact against exhaustive search, above every real policy."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sloserve.core.profiles import AffineProfile
from sloserve.policies.slo_batcher import SloBatcher
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import ModelSetup, simulate, workload
from sloserve.sim.bounds import clairvoyant_attainment, clairvoyant_misses, fluid_ceiling


def exhaustive_misses(arrivals: list[float], deadlines: list[float], lat: list[float]) -> int:
    """Fewest misses over every schedule: any subset as the next batch, in any order, or give up
    on everything left."""

    def best(left: frozenset[int], free: float) -> int:
        out = len(left)  # miss all that is left
        for size in range(1, min(len(lat), len(left)) + 1):
            for batch in combinations(sorted(left), size):
                end = max(free, max(arrivals[i] for i in batch)) + lat[size - 1]
                late = sum(end > deadlines[i] for i in batch)
                out = min(out, late + best(left - set(batch), end))
        return out

    return best(frozenset(range(len(arrivals))), 0.0)


requests = st.lists(
    st.tuples(st.floats(0.0, 10.0), st.floats(0.5, 8.0)), min_size=1, max_size=5
)  # (arrival, budget)
batch_times = st.tuples(st.floats(0.5, 3.0), st.floats(0.0, 2.0), st.integers(1, 4))  # alpha, beta, cap


@settings(max_examples=150, deadline=None)
@given(requests, batch_times, st.booleans())
def test_clairvoyant_equals_exhaustive_search(
    reqs: list[tuple[float, float]], times: tuple[float, float, int], one_slo: bool
) -> None:
    reqs = sorted(reqs)
    arrivals = [a for a, _ in reqs]
    deadlines = [a + (reqs[0][1] if one_slo else b) for a, b in reqs]
    alpha, beta, cap = times
    lat = [alpha + beta * m for m in range(1, cap + 1)]
    truth = exhaustive_misses(arrivals, deadlines, lat)
    got = clairvoyant_misses(np.array(arrivals), np.array(deadlines), np.array(lat), len(reqs))
    if one_slo:
        assert got == truth  # exact when deadlines follow arrival order
    else:
        assert got <= truth  # relaxed deadlines: still never claims more misses than the optimum


def test_miss_count_stops_at_the_limit() -> None:
    arrivals = np.zeros(10)
    deadlines = np.full(10, 1.0)
    lat = np.array([0.9, 1.8])  # only one request can be served in time
    assert clairvoyant_misses(arrivals, deadlines, lat, 20) == 9
    assert clairvoyant_misses(arrivals, deadlines, lat, 3) == 4  # "more than 3"


PROFILE = AffineProfile("m", alpha=0.004, beta=0.001, max_batch=16)


@pytest.mark.parametrize("rate", [300.0, 700.0, 1000.0])
def test_no_policy_beats_the_clairvoyant_optimum(rate: float) -> None:
    w = workload.with_slo(workload.poisson(rate=rate, duration=1.0, seed=3), slo=0.02)
    bound = clairvoyant_attainment(w.arrivals, w.deadlines, PROFILE, 0.0)
    for policy in (
        SloBatcher(PROFILE, max_batch=16, slo=0.02),
        TritonDynamicBatcher(16),
        TritonDynamicBatcher(4, max_queue_delay=0.002),
    ):
        got = simulate(ModelSetup("m", PROFILE, policy), w, seed=0).metrics.attainment
        assert got <= bound + 1e-12, type(policy).__name__
    # and the bound is not vacuous: it is 1 when load is light, below 1 past the fluid ceiling
    assert (bound == 1.0) == (rate < 500)


def test_fluid_ceiling_counts_instances_and_their_slowdown() -> None:
    # batch 16 takes 20 ms: 800 req/s per instance at a 20 ms SLO; batch 6 fits 10 ms (10 ms, 600/s)
    assert fluid_ceiling(PROFILE, 0.020) == pytest.approx(800.0)
    assert fluid_ceiling(PROFILE, 0.010) == pytest.approx(600.0)
    assert fluid_ceiling(PROFILE, 0.004) == 0.0
    assert fluid_ceiling(PROFILE, 0.020, instances=4) == pytest.approx(3200.0)
    slowed = AffineProfile("m", alpha=0.004, beta=0.001, max_batch=16, slowdown=(1.0, 1.5, 2.5, 4.0))
    # two at once win: 2 x 10 / (14 ms x 1.5) = 952/s beats one (800/s), three (600/s), four (200/s)
    assert fluid_ceiling(slowed, 0.021, instances=4) == pytest.approx(2 * 10 / (0.014 * 1.5))
