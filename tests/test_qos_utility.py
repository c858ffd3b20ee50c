"""QoS utility U(D, A) = A^alpha * h(D): shape, vectorised form, config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sloserve.core.config import ConfigError
from sloserve.policies.qos import QosUtility, RateEstimator, UtilityParams, qos_spec_from_params


def test_linear_shape_is_flat_then_falls_to_zero_at_the_cutoff() -> None:
    u = QosUtility(target=0.1, cutoff=0.3, alpha=1.0, decay="linear")
    assert u.delay_factor(0.0) == 1.0
    assert u.delay_factor(0.1) == 1.0
    assert u.delay_factor(0.2) == pytest.approx(0.5)
    assert u.delay_factor(0.25) == pytest.approx(0.25)
    assert u.delay_factor(0.3) == 0.0
    assert u.delay_factor(5.0) == 0.0


def test_exponential_shape_is_continuous_and_decreasing() -> None:
    u = QosUtility(target=0.1, cutoff=0.3, decay="exponential", steepness=3.0)
    d = np.linspace(0.1, 0.3, 201)
    h = u.delay_factors(d)
    assert h[0] == pytest.approx(1.0)
    assert h[-1] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(h) < 0)
    # exponential decay lies below the linear one in between (it falls fast first)
    lin = QosUtility(target=0.1, cutoff=0.3).delay_factors(d)
    assert np.all(h[1:-1] < lin[1:-1])
    mid = (math.exp(-1.5) - math.exp(-3)) / (1 - math.exp(-3))
    assert u.delay_factor(0.2) == pytest.approx(mid)


def test_accuracy_enters_as_a_power_and_drops_are_worth_zero() -> None:
    u = QosUtility(target=0.1, cutoff=0.3, alpha=2.0)
    assert u(0.05, 0.8) == pytest.approx(0.64)
    assert u(0.2, 0.8) == pytest.approx(0.32)
    vals = u.values(np.array([0.05, np.nan, 0.2]), np.array([0.5, 0.9, 1.0]))
    np.testing.assert_allclose(vals, [0.25, 0.0, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": 0.3, "cutoff": 0.1}, "target < cutoff"),
        ({"target": 0.1, "cutoff": 0.3, "alpha": -1}, "alpha"),
        ({"target": 0.1, "cutoff": 0.3, "decay": "cubic"}, "decay"),
    ],
)
def test_bad_shapes_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        QosUtility(**kwargs)  # type: ignore[arg-type]


def test_params_build_the_utility_in_seconds_and_bad_fields_are_named() -> None:
    u = UtilityParams(target_ms=150, cutoff_ms=450, alpha=2, decay="exponential").build()
    assert (u.target, u.cutoff, u.alpha, u.decay) == (0.15, 0.45, 2.0, "exponential")
    with pytest.raises(ConfigError, match=r"utility\.decay"):
        qos_spec_from_params(
            {
                "variants": [{"name": "m", "accuracy": 0.7}],
                "profiles": [],
                "utility": {"target_ms": 1, "cutoff_ms": 2, "decay": "x"},
            }
        )


def test_rate_estimator_tracks_a_steady_rate() -> None:
    est = RateEstimator(tau=1.0)
    for k in range(2000):
        est.observe(k * 0.01)  # 100 req/s for 20 s
    assert est.rate(19.99) == pytest.approx(100.0, rel=0.02)
    assert est.rate(21.99) == pytest.approx(100.0 * math.exp(-2.0), rel=0.02)
