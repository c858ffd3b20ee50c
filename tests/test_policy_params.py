"""A config's policy ``params`` are checked before the policy is built: a wrong name, type or value
is a ConfigError naming the policy and the field, and whatever is accepted runs (every request ends
exactly once)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sloserve.core.config import ConfigError
from sloserve.core.profiles import AffineProfile
from sloserve.policies.aimd import AimdParams
from sloserve.policies.base import PolicyContext
from sloserve.policies.cofb import CoFBParams
from sloserve.policies.dnnscaler import DnnBatchParams, DnnDetectorParams, DnnInstanceParams
from sloserve.policies.dvabatch import DvaBatchParams
from sloserve.policies.fixed import FixedParams
from sloserve.policies.harpagon_dispatch import PlanDispatchParams
from sloserve.policies.params import PolicyParams
from sloserve.policies.qos_scheduling import QosHeuristicParams, QosRandomParams, QosTritonParams
from sloserve.policies.ray_batch import RayParams
from sloserve.policies.registry import SCALERS, SCHEDULERS, make_scaler, make_scheduler
from sloserve.policies.slo_batcher import SloBatcher, SloBatcherParams
from sloserve.policies.sponge import HorizontalParams, SpongeScalerParams
from sloserve.policies.triton import TritonDynamicBatcher, TritonParams
from sloserve.rl.scheduler import RlSchedulerParams
from sloserve.sim import ModelSetup, simulate
from sloserve.sim import workload as wl
from test_policies_rows import QOS

PROFILE = AffineProfile("m", alpha=0.002, beta=0.001, max_batch=16, slowdown=(1.0, 1.2, 1.5))
CTX = PolicyContext(model="m", max_batch=16, profile=PROFILE, slo=0.05)
TUPLES = {"tuples": [{"hardware": "cpu", "batch": 4, "count": 1, "rate": 100, "exec_ms": 6}]}

SCHEMAS: dict[tuple[str, str], tuple[type[PolicyParams], ...]] = {
    ("scheduler", "triton"): (TritonParams,),
    ("scheduler", "ray"): (RayParams,),
    ("scheduler", "fixed"): (FixedParams,),
    ("scheduler", "slo"): (SloBatcherParams,),
    ("scheduler", "cofb"): (CoFBParams,),
    ("scheduler", "dvabatch"): (DvaBatchParams,),
    ("scheduler", "harpagon"): (PlanDispatchParams,),
    ("scheduler", "plan_round_robin"): (PlanDispatchParams,),
    ("scheduler", "qos_heuristic"): (QosHeuristicParams,),
    ("scheduler", "qos_random"): (QosRandomParams,),
    ("scheduler", "qos_triton"): (QosTritonParams,),
    ("scheduler", "qos_rl"): (RlSchedulerParams,),
    ("scaler", "aimd"): (AimdParams,),
    ("scaler", "sponge"): (SpongeScalerParams,),
    ("scaler", "horizontal"): (HorizontalParams,),
    ("scaler", "dnnscaler"): (DnnDetectorParams, DnnBatchParams, DnnInstanceParams),
    ("scaler", "dnnscaler_batch"): (DnnBatchParams,),
    ("scaler", "dnnscaler_mt"): (DnnInstanceParams,),
}
"""Every registered policy and the schemas its params are checked against."""
BASE: dict[str, dict[str, Any]] = {
    "harpagon": TUPLES,
    "plan_round_robin": TUPLES,
    "qos_heuristic": QOS,
    "qos_random": QOS,
    "qos_triton": QOS,
    "qos_rl": {"model_path": "no-such-policy.zip"},
}
"""Params a policy cannot be built without."""


def build(kind: str, name: str, params: dict[str, Any]) -> Any:
    make = make_scheduler if kind == "scheduler" else make_scaler
    return make(name, CTX, {**BASE.get(name, {}), **params})


def test_every_registered_policy_has_a_schema() -> None:
    registered = {("scheduler", n) for n in SCHEDULERS} | {("scaler", n) for n in SCALERS}
    assert registered == set(SCHEMAS)


@pytest.mark.parametrize(("kind", "name"), sorted(SCHEMAS))
def test_an_unknown_parameter_is_refused_by_name(kind: str, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{name}[^']*' params: colour: Extra inputs are not permitted"):
        build(kind, name, {"colour": "red"})


@pytest.mark.parametrize(
    ("kind", "name", "params", "message"),
    [
        (
            "scheduler",
            "triton",
            {"max_batch_size": True},
            "max_batch_size: expected a number, got True",
        ),
        (
            "scheduler",
            "triton",
            {"max_batch_size": 64},
            r"max_batch_size: 64 is above the largest batch of model 'm' \(16\)",
        ),
        (
            "scheduler",
            "triton",
            {"max_queue_delay_microseconds": math.nan},
            "max_queue_delay_microseconds: .*finite",
        ),
        (
            "scheduler",
            "triton",
            {"timeout_action": "drop"},
            "timeout_action: Input should be 'reject' or 'delay'",
        ),
        (
            "scheduler",
            "triton",
            {"preferred_batch_size": [4, 0]},
            r"preferred_batch_size\.1: .*greater than or equal to 1",
        ),
        (
            "scheduler",
            "ray",
            {"batch_wait_timeout_s": -0.01},
            "batch_wait_timeout_s: .*greater than or equal to 0",
        ),
        ("scheduler", "fixed", {"batch_size": "8"}, "batch_size: expected a number, got '8'"),
        ("scheduler", "slo", {"rate_window": 1}, "rate_window: .*greater than or equal to 2"),
        ("scheduler", "slo", {"calibration_band": -0.1}, "calibration_band: .*greater than or equal to 0"),
        ("scheduler", "slo", {"plan_queue": "maybe"}, "plan_queue: Input should be a valid boolean"),
        ("scheduler", "slo", {"slo_ms": 0}, "slo_ms: .*greater than 0"),
        ("scheduler", "cofb", {"slowdown": [1.0, 0.5]}, r"slowdown\.1: .*greater than or equal to 1"),
        ("scheduler", "cofb", {"rate_window": 0}, "rate_window: .*greater than 0"),
        (
            "scheduler",
            "harpagon",
            {"tuples": [{"batch": 0, "exec_ms": 5}]},
            r"tuples\.0\.batch: .*greater than",
        ),
        ("scheduler", "plan_round_robin", {"tuples": []}, "tuples: List should have at least 1 item"),
        ("scheduler", "qos_random", {"seed": -1}, "seed: .*greater than or equal to 0"),
        ("scheduler", "qos_triton", {"timeout_action": "later"}, "timeout_action: Input should be"),
        ("scaler", "aimd", {"backoff": 1.5}, "backoff: .*less than 1"),
        ("scaler", "sponge", {"margin": 1.0}, "margin: .*less than 1"),
        ("scaler", "sponge", {"instance": -1}, "instance: .*greater than or equal to 0"),
        ("scaler", "horizontal", {"windows": 0}, "windows: .*greater than or equal to 1"),
        (
            "scaler",
            "dnnscaler",
            {"approach": "both"},
            "approach: Input should be 'batching' or 'multi_tenancy'",
        ),
        ("scaler", "dnnscaler_mt", {"max_instances": 0}, "max_instances: .*greater than or equal to 1"),
        ("scaler", "dnnscaler_batch", {"statistic": "p99"}, "statistic: Input should be 'mean' or 'p95'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_policy_and_the_field(
    kind: str, name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=rf"'{name}[^']*' params: {message}|{message}"):
        build(kind, name, params)


def test_accepted_values_reach_the_policy() -> None:
    t = build(
        "scheduler", "triton", {"timeout_action": "DELAY", "max_batch_size": 8, "preferred_batch_size": [4]}
    )
    assert isinstance(t, TritonDynamicBatcher)
    assert (t.drop_expired, t.max_batch, t.preferred) == (False, 8, [4])
    s = build("scheduler", "slo", {"slo_ms": 20, "rate_window": 8, "head_of_line_cap": False})
    assert isinstance(s, SloBatcher)
    assert (s.slo, s.head_of_line_cap, s._arrivals.maxlen) == (pytest.approx(0.02), False, 8)


def test_the_slo_batchers_schema_defaults_are_its_own() -> None:
    import inspect

    ctor = inspect.signature(SloBatcher.__init__).parameters
    for field, info in SloBatcherParams.model_fields.items():
        if field in ctor:
            assert info.default == ctor[field].default, field


VALUES = st.one_of(
    st.sampled_from([0, -1, 64, 1e9, math.nan, math.inf, "abc", "4", None, [], [1.0, 1.3], [0.5], {}]),
    st.integers(1, 16),
    st.floats(0.05, 0.95),
    st.booleans(),
)
"""Wrong and odd values, and values a field of some schema takes."""
DEPLOYMENT_FIELDS = {"instance"}
"""Valid or not by the deployment, not the schema: Sponge's ``instance`` names an instance id of
the server or simulation it runs in (one that is not there is not resized)."""
RUNNABLE = sorted(k for k in SCHEMAS if not k[1].startswith("qos_"))
"""The policies one model on one ``cpu`` instance can run (the QoS ones need a heterogeneous pool)."""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(RUNNABLE),
    picks=st.lists(st.tuples(st.integers(0, 99), VALUES), min_size=1, max_size=3),
    seed=st.integers(0, 3),
)
def test_params_are_refused_with_a_reason_or_the_policy_serves(
    policy: tuple[str, str], picks: list[tuple[int, Any]], seed: int
) -> None:
    kind, name = policy
    fields = sorted({f for schema in SCHEMAS[policy] for f in schema.model_fields} - DEPLOYMENT_FIELDS)
    params = {fields[i % len(fields)]: value for i, value in picks}
    try:
        built = build(kind, name, params)
    except ValueError as exc:  # ConfigError, or a factory's own (an SLO or a profile missing)
        assert str(exc)
        event("refused")
        return
    event("built")
    scheduler = built if kind == "scheduler" else make_scheduler("triton", CTX)
    scaler = built if kind == "scaler" else None
    setup = ModelSetup("m", PROFILE, scheduler, scaler=scaler, noise_cv=0.1)
    requests = wl.with_slo(wl.poisson(rate=300, duration=2.0, seed=seed), 0.05)
    m = simulate(setup, requests, seed=seed).metrics
    assert m.requests == len(requests) and m.completed + m.dropped == m.requests
