"""QoS schedulers on a heterogeneous pool: the heuristic's choices, baselines, and the driver."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Dispatch, Drop
from sloserve.core.request import Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.qos import QosSpec, qos_spec_from_params
from sloserve.policies.qos_scheduling import QosHeuristic, RandomQos, TritonQos, batch_variant
from sloserve.policies.registry import make_scheduler
from sloserve.sim.hetero import HeteroPool, HeteroSim
from sloserve.sim.workload import gamma, poisson

SMALL, LARGE = 0, 1
PARAMS = {
    "variants": [{"name": "small", "accuracy": 0.70}, {"name": "large", "accuracy": 0.80}],
    "profiles": [
        {"model": "small", "hardware": "fast", "kind": "affine", "alpha_ms": 5, "beta_ms": 3},
        {"model": "large", "hardware": "fast", "kind": "affine", "alpha_ms": 12, "beta_ms": 20},
        {"model": "small", "hardware": "slow", "kind": "affine", "alpha_ms": 12.5, "beta_ms": 7.5},
        {"model": "large", "hardware": "slow", "kind": "affine", "alpha_ms": 30, "beta_ms": 50},
    ],
    "utility": {"target_ms": 150, "cutoff_ms": 450, "alpha": 2},
    "batch_sizes": [1, 2, 4, 8, 16, 32],
}
SERVERS = ("fast", "fast", "slow", "slow")


def make_spec() -> QosSpec:
    return qos_spec_from_params(PARAMS)


def pool_views() -> list[InstanceView]:
    return [InstanceView(id=i, model="task", hardware=h) for i, h in enumerate(SERVERS)]


def feed(s: QosHeuristic, rate: float, until: float, waiting: int = 3) -> None:
    """Arrivals at a steady ``rate`` in [0, until) of which the last ``waiting`` are still queued."""
    n = int(until * rate)
    for k in range(n):
        t = k / rate
        if k >= n - waiting:
            s.submit(t, Request(k, "task", t, t + 0.15))
        else:
            s.rate.observe(t)


def only_dispatch(decisions: list[object]) -> Dispatch:
    ds = [d for d in decisions if isinstance(d, Dispatch)]
    assert len(ds) >= 1
    return ds[0]


def test_light_load_gets_the_most_accurate_variant_in_small_batches() -> None:
    s = QosHeuristic(make_spec())
    s.submit(0.0, Request(0, "task", 0.0, 0.15))
    views = pool_views()
    views[0].in_flight, views[1].in_flight, views[3].in_flight = 1, 1, 1
    d = only_dispatch(s.decide(0.0, views))
    assert (batch_variant(d.batch), d.batch.size, d.instance) == (LARGE, 1, 2)


def test_free_servers_are_offered_fastest_first() -> None:
    s = QosHeuristic(make_spec())
    s.submit(0.0, Request(0, "task", 0.0, 0.15))
    d = only_dispatch(s.decide(0.0, pool_views()))
    assert d.instance == 0  # a fast server, not slow server 2


def test_a_rate_the_large_variant_cannot_sustain_switches_to_the_small_one() -> None:
    s = QosHeuristic(make_spec())
    feed(s, rate=400.0, until=2.0)  # the pool serves < 140 req/s with the large variant
    variant, batch = s.choose(2.0, pool_views()[0], pool_views())  # type: ignore[misc]
    assert variant == SMALL
    cap = sum(batch / make_spec().latency(SMALL, h, batch) for h in SERVERS)
    assert cap >= s.rate.rate(2.0)
    smaller = batch // 2
    assert smaller == 0 or sum(
        smaller / make_spec().latency(SMALL, h, smaller) for h in SERVERS
    ) < s.rate.rate(2.0)


def test_a_backlog_past_the_target_is_drained_with_the_fastest_variant_and_largest_batch() -> None:
    s = QosHeuristic(make_spec())
    feed(s, rate=100.0, until=1.0, waiting=40)
    variant, batch = s.choose(1.0 + 0.2, pool_views()[2], pool_views())  # type: ignore[misc]
    assert (variant, batch) == (SMALL, 32)


def test_an_old_request_gets_the_variant_that_still_meets_the_target() -> None:
    s = QosHeuristic(make_spec())
    s.submit(0.0, Request(0, "task", 0.0, 0.15))
    # at t = 0.12 the large variant (>= 32 ms on a fast server) would finish after the 150 ms target
    variant, _ = s.choose(0.12, pool_views()[0], pool_views())  # type: ignore[misc]
    assert variant == SMALL
    variant, _ = s.choose(0.05, pool_views()[0], pool_views())  # type: ignore[misc]
    assert variant == LARGE


def test_requests_past_any_chance_of_utility_are_dropped() -> None:
    s = QosHeuristic(make_spec())
    s.submit(0.0, Request(0, "task", 0.0, 0.15))
    s.submit(0.5, Request(1, "task", 0.5, 0.65))
    out = s.decide(0.5, pool_views())
    drops = [d for d in out if isinstance(d, Drop)]
    assert [d.request.id for d in drops] == [0]
    assert [r.id for d in out if isinstance(d, Dispatch) for r in d.batch.requests] == [1]


def test_registry_names_build_the_qos_schedulers() -> None:
    ctx = PolicyContext(model="task", max_batch=32, runs_variants=True)
    assert isinstance(make_scheduler("qos_heuristic", ctx, PARAMS), QosHeuristic)
    assert isinstance(make_scheduler("qos_random", ctx, {**PARAMS, "seed": 3}), RandomQos)
    t = make_scheduler("qos_triton", ctx, {**PARAMS, "variant": "small", "max_batch_size": 8})
    assert isinstance(t, TritonQos) and t.variant == SMALL and t.max_batch == 8
    small_model = PolicyContext(model="task", max_batch=4, runs_variants=True)
    assert make_scheduler("qos_heuristic", small_model, PARAMS).max_batch == 4
    with pytest.raises(ValueError, match="unknown variant"):
        make_scheduler("qos_triton", ctx, {**PARAMS, "variant": "huge"})


@pytest.mark.parametrize("name", ["qos_heuristic", "qos_random", "qos_triton"])
def test_a_driver_that_runs_the_model_itself_refuses_a_choice_among_variants(name: str) -> None:
    """Found by review: in `sloserve simulate` a qos_triton batch for variant 'large' was timed
    and answered as the model itself (its profile, not the variant's)."""
    served = PolicyContext(model="small", max_batch=32)  # the server's, or `sloserve simulate`'s
    refused = r"variants \['small', 'large'\]: here every batch runs model 'small'"
    with pytest.raises(ValueError, match=refused):
        make_scheduler(name, served, PARAMS)
    one = {**PARAMS, "variants": [v for v in PARAMS["variants"] if v["name"] == "small"]}
    assert make_scheduler(name, served, one).max_batch <= 32  # the model as its one variant: served


@pytest.mark.parametrize("policy", ["heuristic", "random", "triton"])
def test_every_request_ends_exactly_once_and_utility_matches_delays(policy: str) -> None:
    spec = make_spec()
    pool = HeteroPool(spec, SERVERS, noise_cv=0.2)
    scheds = {
        "heuristic": QosHeuristic(spec),
        "random": RandomQos(spec, seed=1),
        "triton": TritonQos(LARGE, 16, preferred_batch_sizes=(8, 16), max_queue_delay=0.005),
    }
    w = gamma(300.0, 2.0, 5.0, seed=7)
    sim = HeteroSim(pool, scheds[policy], w, seed=3)
    r = sim.run()
    assert r.metrics.completed + r.metrics.dropped == len(w) == r.qos.requests
    served = ~np.isnan(r.finish)
    assert served.sum() == r.metrics.completed
    assert np.all(r.finish[served] > w.arrivals[served])
    acc = np.array([0.70, 0.80])[np.maximum(r.variant, 0)]
    expect = spec.utility.values(r.finish - w.arrivals, np.where(served, acc, np.nan))
    np.testing.assert_allclose(r.utility, expect)
    assert r.qos.total_utility == pytest.approx(r.utility.sum())
    assert sum(r.qos.served_by_variant.values()) == r.metrics.completed


def test_heuristic_beats_the_baselines_at_a_moderate_load() -> None:
    spec = make_spec()
    pool = HeteroPool(spec, SERVERS, noise_cv=0.1)
    w = poisson(200.0, 10.0, seed=11)
    heur = HeteroSim(pool, QosHeuristic(spec), w, seed=1).run().qos
    rand = HeteroSim(pool, RandomQos(spec, seed=1), w, seed=1).run().qos
    trit = HeteroSim(pool, TritonQos(LARGE, 16, preferred_batch_sizes=(8, 16)), w, seed=1).run().qos
    assert heur.mean_utility > 1.04 * rand.mean_utility
    assert heur.mean_utility > 5 * trit.mean_utility  # the large variant alone cannot keep up
    assert heur.attainment > 0.95 > rand.attainment


def test_a_pool_without_a_profile_for_a_server_type_is_rejected() -> None:
    with pytest.raises(KeyError, match="gpu"):
        HeteroPool(make_spec(), ("fast", "gpu"))
