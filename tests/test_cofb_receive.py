"""CoFB's simulated receive path: queues drained in order, steering, wiring into the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from sloserve.core.profiles import AffineProfile
from sloserve.policies.cofb import CoFBScheduler
from sloserve.policies.flow_steering import LoadSteering, StaticHashSteering, flow_hash
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.sim import workload as wl
from sloserve.sim.cluster import ModelSetup, Simulation
from sloserve.sim.engine import EventLoop
from sloserve.sim.receive import ReceiveCost, ReceivePath, assign_flows, attach_receive_path

MS = 1e-3
COST = ReceiveCost(per_request=0.0, bytes_per_second=1e9)  # 1 MB = 1 ms


def flows_on(queue: int, queues: int, n: int) -> list[int]:
    return [f for f in range(1000) if flow_hash(f, 0) % queues == queue][:n]


def run_path(steering, arrivals: list[tuple[float, int, int]]) -> tuple[dict[int, float], ReceivePath]:
    """Feed (time, flow, bytes) arrivals; return delivery time per arrival index."""
    loop = EventLoop()
    delivered: dict[int, float] = {}
    path: ReceivePath[int] = ReceivePath(loop, steering, COST, lambda i: delivered.__setitem__(i, loop.now))
    for i, (t, flow, nbytes) in enumerate(arrivals):
        loop.at(t, lambda i=i, flow=flow, nbytes=nbytes: path.arrive(i, flow, nbytes))
    loop.run()
    return delivered, path


def test_one_queue_is_drained_in_order_at_its_byte_rate() -> None:
    (f,) = flows_on(0, 2, 1)
    delivered, path = run_path(
        StaticHashSteering(2), [(0.0, f, 1_000_000), (0.0, f, 2_000_000), (0.5e-3, f, 0)]
    )
    assert delivered == pytest.approx({0: 1 * MS, 1: 3 * MS, 2: 3 * MS})
    assert path.pending == 0 and path.loads() == [0.0, 0.0]
    assert [w.received for w in path.workers] == [3, 0]


def test_two_queues_work_in_parallel() -> None:
    a, b = flows_on(0, 2, 1)[0], flows_on(1, 2, 1)[0]
    delivered, _ = run_path(StaticHashSteering(2), [(0.0, a, 2_000_000), (0.0, b, 2_000_000)])
    assert delivered == pytest.approx({0: 2 * MS, 1: 2 * MS})


def hot_queue_traffic() -> list[tuple[float, int, int]]:
    """Four flows that static hashing all puts on queue 0 of 2, 1 MB each every 1 ms in turn:
    twice what one worker can receive."""
    flows = flows_on(0, 2, 4)
    return [(i * 0.5e-3, flows[i % 4], 1_000_000) for i in range(200)]


def test_load_steering_moves_flows_off_the_hot_queue() -> None:
    traffic = hot_queue_traffic()
    static, _ = run_path(StaticHashSteering(2), traffic)
    steered, path = run_path(LoadSteering(2, t_mon=1e-3), traffic)
    assert path.resteers >= 1
    assert path.workers[1].received > 50  # the second worker took a real share
    late_static = max(static[i] - traffic[i][0] for i in static)
    late_steered = max(steered[i] - traffic[i][0] for i in steered)
    assert late_steered < 0.5 * late_static


def test_load_steering_leaves_balanced_flows_alone() -> None:
    a, b = flows_on(0, 2, 1)[0], flows_on(1, 2, 1)[0]
    traffic = [(i * 1e-3, (a, b)[i % 2], 400_000) for i in range(100)]
    _, path = run_path(LoadSteering(2, t_mon=1e-3), traffic)
    assert path.resteers == 0


def test_assign_flows_follows_zipf_shares() -> None:
    flows = assign_flows(20_000, 4, skew=1.0, seed=1)
    share = np.bincount(flows, minlength=4) / len(flows)
    expected = (1 / np.arange(1, 5)) / (1 / np.arange(1, 5)).sum()
    assert np.allclose(share, expected, atol=0.02)
    assert np.array_equal(flows, assign_flows(20_000, 4, skew=1.0, seed=1))


def small_sim(machine_cores: int | None = None) -> tuple[Simulation, ReceivePath, wl.Workload]:
    profile = AffineProfile("m", 2 * MS, 0.5 * MS, max_batch=8)
    w = wl.with_payload(wl.with_slo(wl.poisson(200, 2.0, seed=3), 0.05), 1_000_000, 0.2, seed=3)
    sim = Simulation(ModelSetup("m", profile, TritonDynamicBatcher(8)), w, seed=3, record=True)
    flows = assign_flows(len(w), 6, 0.5, seed=3)
    path = attach_receive_path(sim, StaticHashSteering(2), COST, flows, machine_cores=machine_cores)
    return sim, path, w


def test_receive_path_in_front_of_the_scheduler() -> None:
    sim, path, w = small_sim()
    result = sim.run()
    o = result.outcomes
    assert o is not None
    assert result.metrics.requests == len(w) == result.metrics.completed + result.metrics.dropped
    # nothing starts before its bytes are in: at least payload / rate after arrival
    assert np.all(o.start - o.arrival >= w.payload_bytes / COST.bytes_per_second - 1e-12)
    assert sum(wk.received for wk in path.workers) == len(w)


def test_receive_competing_for_cores_slows_it_down() -> None:
    sim_free, _, _ = small_sim()
    sim_shared, _, _ = small_sim(machine_cores=1)
    free = sim_free.run().outcomes
    shared = sim_shared.run().outcomes
    assert free is not None and shared is not None
    assert np.mean(shared.start - shared.arrival) > np.mean(free.start - free.arrival)


def test_dynamic_slowdown_delays_the_running_batch() -> None:
    """With ``dynamic_slowdown`` a batch started later slows the one already running (s(2) = 2)."""
    profile = AffineProfile("m", 10 * MS, 0.0, max_batch=1, slowdown=(1.0, 2.0))
    w = wl.Workload(np.array([0.0, 0.005]), np.array([1.0, 1.0]), duration=0.005)
    finish = {}
    for dynamic in (False, True):
        sched = CoFBScheduler(profile, 1, throttle=False, wait=False)
        sim = Simulation(
            ModelSetup("m", profile, sched, max_concurrency=2, dynamic_slowdown=dynamic), w, record=True
        )
        o = sim.run().outcomes
        assert o is not None
        finish[dynamic] = o.finish.tolist()
    # fixed at dispatch: first ends at 10 ms, second (at s(2)) at 5 + 20 ms
    assert finish[False] == pytest.approx([0.010, 0.025])
    # dynamic: first runs 5 ms alone, its last 5 ms of work take 10 ms -> 15 ms; the second did
    # 5 ms of work by then (10 ms at s(2)) and its last 5 ms run alone -> 20 ms
    assert finish[True] == pytest.approx([0.015, 0.020])
