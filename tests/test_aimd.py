"""Clipper AIMD: the controller's rule and the scaler's decisions."""

from __future__ import annotations

import pytest

from sloserve.core import SetMaxBatch, WindowStats
from sloserve.policies import PolicyContext, make_scaler
from sloserve.policies.aimd import AimdController, AimdScaler


def _window(p95: float, end: float = 3.0, cap: int = 1) -> WindowStats:
    return WindowStats(
        start=end - 3.0,
        end=end,
        arrivals=10,
        completed=10,
        dropped=0,
        met=10,
        mean_latency=p95,
        p95_latency=p95,
        queue_length=0,
        instances=1,
        cores=1,
        max_batch=cap,
        min_remaining_budget=0.1,
    )


def test_additive_increase_below_085_of_slo() -> None:
    c = AimdController(slo=0.1, max_batch=32, batch=1)
    assert c.update(0.05) == 5
    assert c.update(0.0849) == 9


def test_hold_inside_band_and_without_answers() -> None:
    c = AimdController(slo=0.1, max_batch=32, batch=8)
    assert c.update(0.085) == 8
    assert c.update(0.1) == 8
    assert c.update(0.0) == 8


def test_multiplicative_decrease_above_slo() -> None:
    c = AimdController(slo=0.1, max_batch=64, batch=30)
    assert c.update(0.2) == 27  # floor(30 * 0.9)
    c = AimdController(slo=0.1, max_batch=64, batch=5)
    assert c.update(0.2) == 4  # floor(4.5)
    c = AimdController(slo=0.1, max_batch=64, batch=1)
    assert c.update(0.2) == 1


def test_cap_bounded_by_max_batch() -> None:
    c = AimdController(slo=0.1, max_batch=6, batch=5)
    assert c.update(0.01) == 6
    assert c.update(0.01) == 6


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="SLO"):
        AimdController(slo=0.0, max_batch=8)
    with pytest.raises(ValueError, match="backoff"):
        AimdController(slo=0.1, max_batch=8, backoff=1.5)


def test_scaler_emits_set_max_batch_only_on_change() -> None:
    scaler = AimdScaler("m", AimdController(slo=0.1, max_batch=16, batch=4))
    assert scaler.interval == 3.0
    assert scaler.on_tick(3.0, _window(0.01, cap=4)) == [SetMaxBatch("m", 8)]
    assert scaler.on_tick(6.0, _window(0.09, cap=8)) == []
    assert scaler.on_tick(9.0, _window(0.5, cap=8)) == [SetMaxBatch("m", 7)]


def test_scaler_corrects_a_cap_the_driver_started_elsewhere() -> None:
    scaler = AimdScaler("m", AimdController(slo=0.1, max_batch=32, batch=1))
    # the server starts at max_batch_size 32; AIMD starts at 1 and its first move keeps it at 1
    assert scaler.on_tick(3.0, _window(0.5, cap=32)) == [SetMaxBatch("m", 1)]
    assert scaler.on_tick(6.0, _window(0.09, cap=1)) == []


def test_registry_builds_aimd_from_model_slo() -> None:
    ctx = PolicyContext(model="m", max_batch=32, slo=0.2)
    scaler = make_scaler("aimd", ctx, {"initial_batch": 2})
    assert isinstance(scaler, AimdScaler)
    assert scaler.controller.slo == pytest.approx(0.2)
    assert scaler.controller.batch == 2
    with pytest.raises(ValueError, match="needs an SLO"):
        make_scaler("aimd", PolicyContext(model="m", max_batch=8))
    with pytest.raises(ValueError, match="'aimd' params: nope: Extra inputs are not permitted"):
        make_scaler("aimd", ctx, {"nope": 1})
