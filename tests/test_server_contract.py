"""Contract test: one request trace through the simulator and through the server's model loop
(virtual clock, fake instances whose batches take the profile's time) gives the same decisions —
dispatch times, instances, batch compositions, drops and their reasons.

The server side is the production :class:`~sloserve.runtime.model_loop.ModelLoop`; only its
environment is swapped: the clock and timers come from the simulator's event loop, and each
instance is a fake :class:`~sloserve.runtime.instances.InstanceRunner` that finishes a batch after
``profile.latency(batch, cores)`` of virtual time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from server_fakes import VirtualInstance, VirtualTimers
from sloserve.core.decisions import Dispatch, DropReason
from sloserve.core.profiles import AffineProfile
from sloserve.policies.base import PolicyContext, Scheduler
from sloserve.policies.registry import make_scheduler
from sloserve.runtime.model_config import ModelConfig
from sloserve.runtime.model_loop import Answer, ModelLoop, Outcome
from sloserve.sim.cluster import DROP_CODES, ModelSetup, simulate
from sloserve.sim.engine import EventLoop
from sloserve.sim.workload import Workload, poisson, with_classes, with_slo

PROFILE = AffineProfile(model="m", alpha=0.004, beta=0.0015, max_batch=16)


def _server_run(
    workload: Workload, make: Callable[[], Scheduler], instances: int, cores: int
) -> dict[int, tuple[Any, ...]]:
    """Drive the server's loop over ``workload`` as the simulator steps; per request what happened."""
    loop = EventLoop()
    env = VirtualTimers(loop)
    config = ModelConfig(instance_group={"count": instances, "threads": cores}, max_batch_size=16)
    model = ModelLoop(
        "m",
        config,
        make(),
        clock=env,
        timers=env,
        spawn=lambda iid, threads: VirtualInstance(loop, PROFILE, threads),
        profile=PROFILE,
    )
    model.start()
    seen: dict[int, tuple[Any, ...]] = {}
    starts: dict[int, tuple[float, int, int]] = {}

    def on_dispatch(now: float, d: Dispatch) -> None:
        for r in d.batch.requests:
            starts[r.id] = (now, d.instance, d.batch.size)

    model.on_dispatch = on_dispatch
    ids = iter(range(len(workload)))

    def finisher(rid: int) -> Callable[[Outcome], None]:
        def done(outcome: Outcome) -> None:
            if isinstance(outcome, Answer):
                seen[rid] = ("done", *starts[rid], loop.now)
            else:
                seen[rid] = ("drop", outcome.reason.value, loop.now)

        return done

    arrivals = workload.arrivals.tolist()
    budgets = (workload.deadline_array - workload.arrivals).tolist()
    priorities = workload.priorities.tolist()
    j = 0
    while True:  # the simulator's step(): events at or before the next arrival run first
        t = arrivals[j] if j < len(arrivals) else math.inf
        if loop.peek() <= t:
            if not loop.step():
                break
            continue
        loop.now = t
        rid = next(ids)
        model.submit({}, finisher(rid), budget=budgets[j], priority=priorities[j])
        j += 1
    assert len(seen) == len(workload), "every request ends exactly once"
    return seen


def _sim_run(
    workload: Workload, make: Callable[[], Scheduler], instances: int, cores: int
) -> dict[int, tuple[Any, ...]]:
    setup = ModelSetup("m", PROFILE, make(), instances=instances, cores=cores, shared_hardware=False)
    out = simulate(setup, workload, record=True).outcomes
    assert out is not None
    seen: dict[int, tuple[Any, ...]] = {}
    for i in range(len(workload)):
        if out.code[i] == -1:
            seen[i] = ("done", out.start[i], int(out.instance[i]), int(out.batch_size[i]), out.finish[i])
        else:
            seen[i] = ("drop", DROP_CODES[out.code[i]].value, out.finish[i])
    return seen


CASES = {
    "triton": ("triton", {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 3000}),
    "triton_priorities": ("triton", {"max_queue_delay_microseconds": 2000}),
    "slo": ("slo", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_decisions_as_the_simulator(case: str) -> None:
    name, params = CASES[case]
    levels = 2 if case == "triton_priorities" else 1
    workload = with_slo(poisson(rate=900.0, duration=1.0, seed=7), 0.025)
    if levels > 1:
        workload = with_classes(workload, [0.5, 0.5], seed=3)
    ctx = PolicyContext(model="m", max_batch=16, profile=PROFILE, slo=0.025, priority_levels=levels)

    def make() -> Scheduler:
        return make_scheduler(name, ctx, dict(params))

    server = _server_run(workload, make, instances=2, cores=1)
    sim = _sim_run(workload, make, instances=2, cores=1)
    assert server == sim
    kinds = {v[0] for v in sim.values()}
    assert "done" in kinds
    if name == "slo":  # the trace overloads the model: the policy must have dropped some requests
        reasons = {v[1] for v in sim.values() if v[0] == "drop"}
        assert reasons & {DropReason.DEADLINE_UNREACHABLE.value, DropReason.DEADLINE_EXPIRED.value}
    sizes = [v[3] for v in sim.values() if v[0] == "done"]
    assert max(sizes) > 1 and np.isfinite(sizes).all()
