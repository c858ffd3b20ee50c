"""Invariants of the simulator under random workloads, policies and resources (hypothesis)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sloserve.core.cluster import InstanceView, WindowStats
from sloserve.core.decisions import Decision, ScaleDecision, SetInstanceCores, SetInstanceCount, SetMaxBatch
from sloserve.core.profiles import AffineProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.fixed import FixedBatcher
from sloserve.policies.queues import EdfQueue
from sloserve.policies.ray_batch import RayServeBatcher
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import ModelSetup, TailNoise, simulate
from sloserve.sim import workload as wl
from sloserve.sim.cluster import SimResult


class EdfGreedy(QueueScheduler):
    """EDF order, full batches at once, expired requests dropped: exercises drops and priorities."""

    def __init__(self, max_batch: int) -> None:
        super().__init__(max_batch, EdfQueue(), drop_expired=True, max_queue_size=50)

    def next_batch(self, now: float, instance: InstanceView, drops: list[Decision]) -> Batch | float | None:
        self.drop_expired_head(now, drops)
        return self.take(self.max_batch, now, drops)


class ToggleScaler:
    """Every tick flips between 1 and 3 instances, resizes instance 0 and changes the batch cap."""

    interval = 0.25
    onset_delay = None

    def __init__(self, model: str, max_batch: int) -> None:
        self.model = model
        self.max_batch = max_batch
        self.n = 0

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        self.n += 1
        up = self.n % 2 == 1
        return [
            SetInstanceCount(self.model, 3 if up else 1),
            SetInstanceCores(0, 2 if up else 1),
            SetMaxBatch(self.model, self.max_batch if up else max(1, self.max_batch // 2)),
        ]


def make_scheduler(kind: str, max_batch: int) -> Any:
    if kind == "triton":
        return TritonDynamicBatcher(max_batch, (max_batch,), max_queue_delay=0.003)
    if kind == "triton_delay":
        return TritonDynamicBatcher(max_batch, max_queue_delay=0.01, timeout_action="delay")
    if kind == "ray":
        return RayServeBatcher(max_batch, 0.005)
    if kind == "fixed":
        return FixedBatcher(max_batch, max_wait=0.02)
    if kind == "fixed_forever":
        return FixedBatcher(max_batch)  # holds a partial batch forever: the end-of-run drain must end it
    return EdfGreedy(max_batch)


scenario = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["triton", "triton_delay", "ray", "fixed", "fixed_forever", "edf"]),
        "max_batch": st.integers(1, 8),
        "instances": st.integers(1, 3),
        "concurrency": st.integers(1, 2),
        "noise_cv": st.sampled_from([0.0, 0.3]),
        "tail": st.booleans(),
        "scaler": st.booleans(),
        "dynamic": st.booleans(),
        "rate": st.floats(20, 600),
        "cv": st.floats(0.5, 3.0),
        "slo": st.floats(0.005, 0.2),
        "priorities": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def run(s: dict[str, Any]) -> tuple[SimResult, AffineProfile]:
    profile = AffineProfile("m", alpha=0.002, beta=0.001, max_batch=8, slowdown=(1.0, 1.5, 2.2))
    w = wl.with_slo(wl.gamma(s["rate"], s["cv"], 2.0, seed=s["seed"]), s["slo"])
    if s["priorities"]:
        w = wl.with_classes(w, [0.3, 0.7], seed=s["seed"])
    setup = ModelSetup(
        "m",
        profile,
        make_scheduler(s["kind"], s["max_batch"]),
        instances=s["instances"],
        max_concurrency=s["concurrency"],
        noise_cv=s["noise_cv"],
        tail_noise=TailNoise(0.05, 4.0) if s["tail"] else None,
        scaler=ToggleScaler("m", s["max_batch"]) if s["scaler"] else None,
        actuation_delay=0.05,
        cold_start=0.1,
        dynamic_slowdown=s["dynamic"],
    )
    return simulate(setup, w, seed=s["seed"], record=True, timeline_interval=0.5), profile


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scenario)
def test_every_request_ends_once_never_early_and_batches_fit(s: dict[str, Any]) -> None:
    result, profile = run(s)
    o = result.outcomes
    assert o is not None
    m = result.metrics
    n = len(o.arrival)
    # every request ended exactly once (the driver raises on a second end; -2 = never ended)
    assert np.all(o.code != -2)
    assert m.requests == n == m.completed + m.dropped
    assert m.completed == int(o.completed.sum())
    assert sum(m.drops_by_reason.values()) == m.dropped
    assert m.met == int(o.met.sum())
    assert math.isclose(m.attainment, m.met / n if n else 1.0)
    done = o.completed
    # no completion before arrival + service time; no start before arrival
    assert np.all(o.start[done] >= o.arrival[done])
    assert np.all(o.finish[done] >= o.start[done] + o.service[done] - 1e-12)
    assert np.all(o.finish[done] - o.arrival[done] >= o.service[done] - 1e-12)
    # service time is at least the profile's noiseless latency when there is no noise
    if s["noise_cv"] == 0 and not s["tail"]:
        base = np.array([profile.latency(int(b)) for b in o.batch_size[done]])
        assert np.all(o.service[done] >= base - 1e-12)
    # batch size never exceeds the maximum
    assert np.all(o.batch_size[done] >= 1)
    assert np.all(o.batch_size[done] <= s["max_batch"])
    assert all(1 <= b <= s["max_batch"] for b in m.batch_sizes)
    # no instance runs more batches at once than its max_concurrency
    batches = {
        (int(i), float(t), float(f))
        for i, t, f in zip(o.instance[done], o.start[done], o.finish[done], strict=True)
    }
    events = sorted(
        [(t, 1, i) for i, t, _ in batches] + [(f, -1, i) for i, _, f in batches], key=lambda e: (e[0], e[1])
    )
    running: dict[int, int] = {}
    for _, delta, i in events:
        running[i] = running.get(i, 0) + delta
        assert running[i] <= s["concurrency"]
    # dropped requests never ran
    assert np.all(np.isnan(o.start[~done]))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(scenario)
def test_same_seed_gives_the_same_run(s: dict[str, Any]) -> None:
    a, _ = run(s)
    b, _ = run(s)
    assert a.metrics == b.metrics
    assert a.outcomes is not None and b.outcomes is not None
    for field in ("start", "finish", "code", "batch_size", "instance", "service"):
        assert np.array_equal(getattr(a.outcomes, field), getattr(b.outcomes, field), equal_nan=True), field
    assert np.array_equal(a.timeline.rate, b.timeline.rate)


@settings(derandomize=True)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(0, 10), st.floats(0, 10)),
        min_size=1,
        max_size=80,
    )
)
def test_edf_queue_pops_in_priority_then_deadline_order(items: list[tuple[int, float, float]]) -> None:
    q = EdfQueue(default_priority=2)
    for i, (prio, arrival, slo) in enumerate(items):
        q.push(Request(i, "m", arrival, arrival + slo, prio))
    popped = [q.pop() for _ in range(len(items))]
    keys = [(r.priority if r.priority > 0 else 2, r.deadline, r.id) for r in popped]
    assert keys == sorted(keys)
