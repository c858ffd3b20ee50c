"""The plan dispatchers follow the instances they are given, not the plan's head count.

Found by review: ``plan_round_robin`` and ``harpagon`` bound instance ids once, so requests queued
for an instance that was removed (or never started) waited until the end of the run, and an
instance added later was never used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.request import Request
from sloserve.policies.harpagon_dispatch import HarpagonDispatcher, RoundRobinPlanDispatcher, TupleRoute
from sloserve.sim import simulate
from sloserve.sim.experiment import Experiment

BUDGET = 0.1


def req(i: int, t: float = 0.0) -> Request:
    return Request(i, "m", t, t + BUDGET)


def inst(iid: int, hardware: str = "gpu", available: bool = True) -> InstanceView:
    return InstanceView(iid, "m", 4, hardware, available=available)


def route(batch: int = 4, count: int = 1, hardware: str = "gpu", rate: float = 100.0) -> TupleRoute:
    return TupleRoute(hardware, batch, count, rate, 0.0, 0.02, 0.01)


def dispatches(decisions: Sequence[Decision]) -> list[Dispatch]:
    return [d for d in decisions if isinstance(d, Dispatch)]


def serve(
    s: HarpagonDispatcher | RoundRobinPlanDispatcher, now: float, instances: list[InstanceView]
) -> Counter[int]:
    """Call ``decide`` at ``now`` and at each wake-up it asks for (machines free again each time)
    until nothing waits; requests run per instance id. Fails if a request is dropped."""
    ran: Counter[int] = Counter()
    for _ in range(100):
        out = s.decide(now, instances)
        assert not [d for d in out if isinstance(d, Drop)]
        for d in dispatches(out):
            ran[d.instance] += len(d.batch.requests)
        wakes = [d.time for d in out if isinstance(d, WaitUntil)]
        if not len(s) or not (wakes or dispatches(out)):
            break
        now = max(now, *wakes) if wakes else now
    return ran


def test_round_robin_with_fewer_instances_than_the_plan_serves_every_request() -> None:
    s = RoundRobinPlanDispatcher([route(count=2)], BUDGET)
    for i in range(8):
        assert s.submit(0.0, req(i)) is None
    assert serve(s, 0.0, [inst(0)]) == {0: 8}
    for i in range(8, 12):  # later arrivals skip the lane that has no machine
        s.submit(0.01, req(i, 0.01))
    assert serve(s, 0.01, [inst(0)]) == {0: 4} and len(s) == 0


def test_queue_of_a_removed_instance_moves_to_a_live_one_in_arrival_order() -> None:
    s = HarpagonDispatcher([route(rate=50), route(rate=50)], BUDGET)
    both = [inst(0), inst(1)]
    for i in range(6):  # alternate between the two tuples: 0, 2, 4 for machine 0; 1, 3, 5 for 1
        s.submit(0.001 * i, req(i, 0.001 * i))
    assert dispatches(s.decide(0.006, both)) == []  # neither batch of 4 is full
    assert s.cancel(0.006, req(3, 0.003))
    out = dispatches(s.decide(0.007, [inst(0)]))  # instance 1 went away
    assert [(d.instance, [r.id for r in d.batch.requests]) for d in out] == [(0, [0, 1, 2, 4])]
    assert serve(s, 0.007, [inst(0)]) == {0: 1} and len(s) == 0
    for i in range(6, 10):  # the stream now goes to the tuple that has a machine
        s.submit(0.01, req(i, 0.01))
    assert serve(s, 0.01, [inst(0)]) == {0: 4}


def test_an_instance_added_later_fills_the_slot_of_a_removed_one() -> None:
    s = RoundRobinPlanDispatcher([route(count=2)], BUDGET)
    assert serve(s, 0.0, [inst(0), inst(1)]) == {}
    serve(s, 0.0, [inst(0)])
    serve(s, 0.05, [inst(0), inst(2)])  # the scaler added 2
    for i in range(8):
        s.submit(0.1, req(i, 0.1))
    assert serve(s, 0.1, [inst(0), inst(2)]) == {0: 4, 2: 4}  # round-robin again, one batch each


def test_an_instance_that_never_started_is_replaced() -> None:
    """The server's case: instances start unavailable; one fails and is removed; ids only grow."""
    s = HarpagonDispatcher([route(count=2)], BUDGET)
    for i in range(4):
        s.submit(0.0, req(i))
    assert dispatches(s.decide(0.0, [inst(0, available=False), inst(1, available=False)])) == []
    s.decide(0.01, [inst(0, available=False)])
    assert serve(s, 0.02, [inst(0, available=False), inst(2)]) == {2: 4}


def test_a_spare_instance_takes_over_from_a_removed_one() -> None:
    s = HarpagonDispatcher([route(count=1)], BUDGET)
    for i in range(4):
        s.submit(0.0, req(i))
    assert serve(s, 0.0, [inst(0), inst(1)]) == {0: 4}  # the plan has one machine: 1 is spare
    for i in range(4, 8):
        s.submit(0.1, req(i, 0.1))
    assert serve(s, 0.1, [inst(1)]) == {1: 4}


def test_new_instances_go_to_tuples_of_their_hardware_and_keep_the_planned_split() -> None:
    s = HarpagonDispatcher([route(1, hardware="t4", rate=300), route(1, hardware="a10", rate=100)], BUDGET)
    serve(s, 0.0, [inst(0, "t4"), inst(1, "a10")])
    instances = [inst(3, "a10"), inst(2, "t4")]  # both replaced at once
    ran: Counter[int] = Counter()
    for i in range(400):
        s.submit(1 + i * 1e-3, req(i, 1 + i * 1e-3))
        ran += serve(s, 1 + i * 1e-3, instances)
    assert ran == {2: 300, 3: 100}


def test_requests_wait_while_there_is_no_instance_then_run_or_are_drained() -> None:
    s = RoundRobinPlanDispatcher([route(count=2)], BUDGET)
    for i in range(8):
        s.submit(0.0, req(i))
    assert s.decide(0.0, []) == [] and len(s) == 8  # as every scheduler: held for an instance
    assert serve(s, 0.5, [inst(5)]) == {5: 8}
    for i in range(8, 11):
        s.submit(1.0, req(i, 1.0))
    s.decide(1.0, [])
    drops = s.drain(2.0, DropReason.UNAVAILABLE)
    assert sorted(d.request.id for d in drops) == [8, 9, 10] and len(s) == 0


# -- through the simulator -----------------------------------------------------------------------

PROFILE = "{kind: affine, alpha_ms: 6, beta_ms: 1, max_batch: 8}"
HORIZONTAL = "{name: horizontal, params: {max_replicas: 4}}"
WORKLOAD = "workload: {kind: poisson, rate: 100, duration_s: 20, slo_ms: 200}\n"
PRR_2 = "{scheduler: plan_round_robin, params: {tuples: [{batch: 4, exec_ms: 10, count: 2, rate: 100}]}}"
HARPAGON_2 = (
    "{scheduler: harpagon, params: {tuples: [{batch: 4, exec_ms: 10, count: 1, rate: 50},"
    " {batch: 4, exec_ms: 10, count: 1, rate: 50}]}}"
)


Run = tuple[float, np.ndarray, np.ndarray]


def run_yaml(tmp_path: Path, text: str) -> dict[str, Run]:
    """Run each policy of the experiment; per scheduler: attainment, outcome codes, instance ids."""
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    exp = Experiment.from_file(path)
    out: dict[str, Run] = {}
    for pol in exp.spec.policies:
        w = exp.workload(1.0, exp.spec.seed, False)
        res = simulate(exp.setups(pol), w, seed=exp.spec.seed, record=True)
        assert res.outcomes is not None
        out[pol.scheduler] = (res.metrics.attainment, res.outcomes.code, res.outcomes.instance)
    return out


def test_sim_plan_with_more_machines_than_instances_serves_everything(tmp_path: Path) -> None:
    text = (
        f"name: r1\nmodels:\n  - {{name: m, profile: {PROFILE}, instances: 1}}\n"
        f"policies:\n  - {PRR_2}\n{WORKLOAD}"
    )
    ((attainment, code, instance),) = run_yaml(tmp_path, text).values()
    assert attainment > 0.99
    assert (code == -1).all()  # nothing left queued for the drain at the end
    assert set(instance.tolist()) == {0}


@pytest.mark.parametrize("scheduler", ["plan_round_robin", "harpagon"])
def test_sim_horizontal_scaler_removes_then_adds_an_instance(tmp_path: Path, scheduler: str) -> None:
    text = (
        "name: r1b\nmodels:\n"
        f"  - {{name: m, profile: {PROFILE}, instances: 2, scaler: {HORIZONTAL}}}\n"
        f"policies:\n  - {PRR_2}\n  - {HARPAGON_2}\n{WORKLOAD}"
    )
    attainment, code, instance = run_yaml(tmp_path, text)[scheduler]
    assert attainment > 0.99
    assert (code == -1).all()
    used = Counter(instance.tolist())
    assert used[2] > 300  # the instance the scaler added after removing 1 takes its share
