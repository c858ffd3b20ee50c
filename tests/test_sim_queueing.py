"""The simulator against queueing theory: batch size 1, Poisson arrivals, one server."""

from __future__ import annotations

import pytest

from sloserve.core.profiles import AffineProfile
from sloserve.policies.fixed import FixedBatcher
from sloserve.sim import ModelSetup, simulate
from sloserve.sim import workload as wl

MU = 100.0  # service rate: mean service time 10 ms
N = 60_000  # requests per run


def mean_latency(lam: float, cv: float, seed: int) -> float:
    profile = AffineProfile("q", alpha=1 / MU, beta=0.0, max_batch=1)
    setup = ModelSetup("q", profile, FixedBatcher(1), noise_cv=cv, noise="gamma")
    result = simulate(setup, wl.poisson(lam, N / lam, seed=seed), seed=seed)
    assert result.metrics.completed == result.metrics.requests
    return result.metrics.latency_mean


@pytest.mark.parametrize("lam", [50.0, 70.0])
def test_mm1_mean_latency_matches_1_over_mu_minus_lambda(lam: float) -> None:
    # gamma noise with CV 1 makes service times exponential with mean 1/MU
    got = sum(mean_latency(lam, 1.0, s) for s in (1, 2)) / 2
    expected = 1 / (MU - lam)
    assert got == pytest.approx(expected, rel=0.04)


def test_md1_mean_latency_matches_pollaczek_khinchine() -> None:
    lam = 70.0
    rho = lam / MU
    expected = 1 / MU + rho / (2 * MU * (1 - rho))
    got = sum(mean_latency(lam, 0.0, s) for s in (1, 2)) / 2
    assert got == pytest.approx(expected, rel=0.03)
