"""The simulated cluster: service times, slowdown, scaling with delays, the end-of-run drain, costs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from sloserve.core.cluster import InstanceView, WindowStats
from sloserve.core.decisions import Decision, ScaleDecision, SetInstanceCores, SetInstanceCount, SetMaxBatch
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import AffineProfile, SpongeProfile
from sloserve.policies.fixed import FixedBatcher
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import ModelSetup, Simulation, simulate
from sloserve.sim import workload as wl
from sloserve.sim.cluster import DROP_CODES


def at(*times: float, slo: float = math.inf, duration: float | None = None) -> wl.Workload:
    a = np.array(times, dtype=float)
    return wl.Workload(a, a + slo, duration=duration if duration is not None else -1.0)


class Script:
    """A scaler that returns scripted decisions at given tick numbers."""

    def __init__(
        self, interval: float, plan: dict[int, list[ScaleDecision]], onset_delay: float | None = None
    ) -> None:
        self.interval = interval
        self.onset_delay = onset_delay
        self.plan = plan
        self.windows: list[WindowStats] = []

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        self.windows.append(window)
        return self.plan.get(len(self.windows), [])


def test_service_time_follows_the_profile_and_batches_queue() -> None:
    p = AffineProfile("m", alpha=0.01, beta=0.005, max_batch=4)
    r = simulate(ModelSetup("m", p, TritonDynamicBatcher(4)), at(0.0, 0.001, 0.002, 0.003), record=True)
    o = r.outcomes
    assert o is not None
    # first request alone (batch 1: 15 ms); the three that came meanwhile go together (25 ms)
    assert o.batch_size.tolist() == [1, 3, 3, 3]
    assert o.finish[0] == pytest.approx(0.015)
    assert o.finish[1:] == pytest.approx([0.040] * 3)
    assert r.metrics.batch_sizes == {1: 1, 3: 1}


def test_co_located_batches_slow_each_other_by_s_of_k() -> None:
    p = AffineProfile("m", alpha=0.01, beta=0.0, max_batch=1, slowdown=(1.0, 2.0))
    shared = simulate(ModelSetup("m", p, FixedBatcher(1), instances=2), at(0.0, 0.0), record=True)
    assert shared.outcomes is not None
    assert sorted(shared.outcomes.service.tolist()) == pytest.approx([0.01, 0.02])
    apart = simulate(
        ModelSetup("m", p, FixedBatcher(1), instances=2, shared_hardware=False), at(0.0, 0.0), record=True
    )
    assert apart.outcomes is not None
    assert apart.outcomes.service.tolist() == pytest.approx([0.01, 0.01])


def test_added_instances_wait_for_actuation_and_cold_start_and_cost_from_the_decision() -> None:
    p = AffineProfile("m", alpha=0.1, beta=0.0, max_batch=1)
    scaler = Script(1.0, {1: [SetInstanceCount("m", 2)]})
    setup = ModelSetup("m", p, FixedBatcher(1), scaler=scaler, actuation_delay=0.2, cold_start=0.3)
    # a backlog at t = 1: instance 0 works through it; instance 1 joins at 1.5
    w = at(*([1.0] * 10), duration=3.0)
    r = simulate(setup, w, record=True)
    o = r.outcomes
    assert o is not None
    on_new = o.instance == 1
    assert on_new.any() and o.start[on_new].min() == pytest.approx(1.5)
    # instance-seconds: instance 0 for the whole run, instance 1 from t = 1 (decision) on
    end = max(3.0, float(o.finish.max()))
    assert r.metrics.instance_seconds == pytest.approx(end + (end - 1.0))
    assert r.timeline.instances.max() == 2


def test_removal_lets_the_running_batch_finish() -> None:
    p = AffineProfile("m", alpha=1.0, beta=0.0, max_batch=1)
    scaler = Script(0.5, {1: [SetInstanceCount("m", 1)]})
    setup = ModelSetup("m", p, FixedBatcher(1), instances=2, scaler=scaler)
    r = simulate(setup, at(0.0, 0.0, 0.1), record=True)
    o = r.outcomes
    assert o is not None
    assert np.all(o.code == -1)
    # both started at 0 on instances 0 and 1; instance 1 (newest) is removed at 0.5 but finishes at 1.0
    assert o.finish[:2].tolist() == pytest.approx([1.0, 1.0])
    assert o.instance[2] == 0 and o.start[2] == pytest.approx(1.0)
    assert r.metrics.instance_seconds == pytest.approx(2.0 + 1.0)


def test_cores_change_after_the_actuation_delay() -> None:
    p = SpongeProfile("m", gamma=0.0, delta=0.0, epsilon=0.1, eta=0.0, max_batch=1)  # 0.1 s / cores
    scaler = Script(1.0, {1: [SetInstanceCores(0, 4), SetMaxBatch("m", 1)]})
    setup = ModelSetup("m", p, FixedBatcher(1), scaler=scaler, actuation_delay=0.5)
    r = simulate(setup, at(1.2, 1.6, duration=2.0), record=True, timeline_interval=0.5)
    o = r.outcomes
    assert o is not None
    assert o.service.tolist() == pytest.approx([0.1, 0.025])  # resize lands at 1.5
    assert r.metrics.core_seconds == pytest.approx(1.5 * 1 + 0.5 * 4)
    assert r.timeline.cores.tolist()[:4] == [1, 1, 4, 4]  # rows at 0.5, 1.0, 1.5, 2.0
    assert scaler.windows[0].arrivals == 0 and scaler.windows[0].cores == 1
    assert scaler.windows[0].first_arrival == math.inf
    assert scaler.windows[1].first_arrival == pytest.approx(1.2) and scaler.windows[1].arrivals == 2


def test_a_scaler_that_asks_ticks_early_when_traffic_begins_after_an_idle_window() -> None:
    p = AffineProfile("m", alpha=0.001, beta=0.0, max_batch=1)
    # idle until 2.3 s, traffic until 4.2 s, idle through the window that ends at 5.45, again at 6.1
    times = (2.3, 2.4, 2.5, 3.0, 3.9, 4.2, 6.1, 6.2)
    ends = {}
    for onset in (None, 0.25):
        scaler = Script(1.0, {}, onset_delay=onset)
        simulate(ModelSetup("m", p, FixedBatcher(1), scaler=scaler), at(*times, duration=7.0))
        ends[onset] = [round(w.end, 6) for w in scaler.windows]
        if onset is not None:
            onset_window = scaler.windows[2]  # began at the idle tick at 2.0, ended 0.25 s after 2.3
            assert (onset_window.start, onset_window.first_arrival) == pytest.approx((2.0, 2.3))
            assert onset_window.arrivals == 3
    assert ends[None] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    # the periodic ticks go on from the early one; a window with arrivals does not move the next
    # tick; traffic after the idle window ending at 5.55 brings a tick forward again (6.1 + 0.25)
    assert ends[0.25] == [1.0, 2.0, 2.55, 3.55, 4.55, 5.55, 6.35]


def test_requests_held_forever_are_drained_as_unavailable_at_the_end() -> None:
    p = AffineProfile("m", alpha=0.01, beta=0.0, max_batch=4)
    r = simulate(ModelSetup("m", p, FixedBatcher(4)), at(0.0, 0.1, 0.2, 0.3, 0.4, 0.5), record=True)
    o = r.outcomes
    assert o is not None
    assert (o.code == -1).sum() == 4
    assert [DROP_CODES[c].value for c in o.code[4:]] == ["unavailable", "unavailable"]
    assert r.metrics.drops_by_reason == {"unavailable": 2}
    assert r.metrics.attainment == pytest.approx(4 / 6)


def test_metrics_goodput_cost_and_multi_model() -> None:
    p = AffineProfile("a", alpha=0.001, beta=0.0, max_batch=1)
    q = AffineProfile("b", alpha=0.5, beta=0.0, max_batch=1)
    w = wl.merge([at(0.0, 1.0, slo=0.1, duration=2.0), at(0.5, slo=0.1, duration=2.0)])
    r = simulate(
        [ModelSetup("a", p, FixedBatcher(1), cores=2), ModelSetup("b", q, FixedBatcher(1), hardware="big")],
        w,
        hardware_prices={"cpu": Hardware("cpu", 4, 3.6), "big": Hardware("big", 1, 36.0)},
    )
    m = r.metrics
    assert (m.requests, m.completed, m.met) == (3, 3, 2)  # b's request takes 0.5 s > 0.1 s SLO
    assert m.goodput == pytest.approx(1.0) and m.throughput == pytest.approx(1.5)
    assert set(m.per_model) == {"a", "b"} and m.per_model["b"].met == 0
    assert m.core_seconds == pytest.approx(2 * 2 + 1 * 2)
    assert m.cost == pytest.approx(4 * 3.6 / 4 / 3600 + 2 * 36.0 / 3600)


def test_stepping_a_simulation_and_waking_a_scheduler() -> None:
    p = AffineProfile("m", alpha=0.01, beta=0.0, max_batch=1)
    sim = Simulation(ModelSetup("m", p, FixedBatcher(1)), at(0.0, 0.5, 1.0), record=True)
    assert sim.run_until(lambda: sim.loop.now >= 0.5)
    assert sim.arrived == 2
    sim.wake("m")
    while sim.step():
        pass
    res = sim.finish()
    assert res.metrics.completed == 3 and sim.finish() is res


def test_bad_setups_give_clear_errors() -> None:
    p = AffineProfile("m", alpha=0.01, beta=0.0)
    with pytest.raises(ValueError, match="cores must be >= 1"):
        ModelSetup("m", p, FixedBatcher(1), cores=0)
    with pytest.raises(ValueError, match="noise must be"):
        ModelSetup("m", p, FixedBatcher(1), noise="uniform")  # type: ignore[arg-type]
    s = FixedBatcher(1)
    with pytest.raises(ValueError, match="its own scheduler"):
        simulate([ModelSetup("a", p, s), ModelSetup("b", p, s)], at(0.0))
    with pytest.raises(ValueError, match="model index 1"):
        simulate(ModelSetup("a", p, FixedBatcher(1)), wl.Workload(np.array([0.0]), models=np.array([1])))
    with pytest.raises(ValueError, match=r"hardware_prices has no entry for \['cpu'\]"):
        simulate(
            ModelSetup("a", p, FixedBatcher(1)), at(0.0), hardware_prices={"gpu": Hardware("gpu", 1, 1.0)}
        )
    with pytest.raises(ValueError, match="record=True needs a Workload"):
        simulate(ModelSetup("a", p, FixedBatcher(1)), wl.stream_poisson(10, 1), record=True)


def test_progress_bar_and_streamed_workload_run() -> None:
    p = AffineProfile("m", alpha=0.005, beta=0.001, max_batch=16)
    w = wl.stream_poisson(400, 5, seed=2, slo=0.05, chunk=512)
    r = simulate(ModelSetup("m", p, TritonDynamicBatcher(16)), w, progress=True)
    assert r.metrics.requests == sum(len(c) for c in w.chunks()) > 1500
    assert r.metrics.completed + r.metrics.dropped == r.metrics.requests


class _Watching(FixedBatcher):
    """Batches of one, recording what each decide sees of the instances."""

    def __init__(self) -> None:
        super().__init__(1)
        self.seen: list[tuple[float, int, int, float]] = []

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        self.seen.extend((now, i.id, i.in_flight, i.busy_until) for i in instances)
        return super().decide(now, instances)


@pytest.mark.parametrize("dynamic", [False, True])
def test_policies_see_the_profiles_end_of_a_batch_not_the_noise_drawn(dynamic: bool) -> None:
    """A server knows a running batch's end only from its profile; the simulator must not tell a
    policy more (the noisy service time it drew)."""
    p = AffineProfile("m", alpha=0.01, beta=0.0, max_batch=1, slowdown=(1.0, 1.5) if dynamic else ())
    policy = _Watching()
    setup = ModelSetup("m", p, policy, instances=2, noise_cv=0.5, dynamic_slowdown=dynamic)
    r = simulate(setup, at(0.0, 0.001, 0.05, 0.051, 0.1), seed=3, record=True)
    o = r.outcomes
    assert o is not None
    assert not np.allclose(o.service, 0.01)  # the noise moved the real ends
    starts = {float(s): float(s) + 0.01 for s in o.start}
    busy = [(now, bu) for now, _, in_flight, bu in policy.seen if in_flight]
    assert busy
    for now, busy_until in busy:
        # the profile's end of a batch started at one of the dispatch times (dynamic: slowed by s(2))
        assert any(
            busy_until == pytest.approx(end) or (dynamic and start < now and busy_until > end)
            for start, end in starts.items()
        ), (now, busy_until)
    idle = [(now, bu) for now, _, in_flight, bu in policy.seen if not in_flight]
    assert all(bu <= now + 1e-12 for now, bu in idle)
