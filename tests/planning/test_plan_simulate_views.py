"""What the pipeline simulator shows a plan's dispatchers of the instances: a running batch's end as
the profile predicts it (as a server knows it), not the noisy service time it drew."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

import sloserve.planning.simulate as plan_sim
from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop
from sloserve.core.profiles import ProfileSet
from sloserve.core.request import Batch, Request
from sloserve.planning.files import load_problem
from sloserve.planning.harpagon import plan_harpagon
from sloserve.planning.plan import DispatchPolicy, ModulePlan
from sloserve.policies.base import Scheduler

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"


class _Watching:
    """Wraps a module's dispatcher: records the profile's end of every batch it dispatches and
    every ``busy_until`` it is shown for an instance with a batch running."""

    def __init__(self, inner: Scheduler, profiles: ProfileSet) -> None:
        self.inner = inner
        self.profiles = profiles
        self.ends: dict[int, list[float]] = {}
        self.shown: list[tuple[int, float, float]] = []

    def __getattr__(self, name: str) -> object:  # drain, max_batch, ...: the dispatcher's own
        return getattr(self.inner, name)

    def submit(self, now: float, request: Request) -> Drop | None:
        return self.inner.submit(now, request)

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        self.shown.extend((i.id, now, i.busy_until) for i in instances if i.in_flight)
        out = self.inner.decide(now, instances)
        by_id = {i.id: i for i in instances}
        for d in out:
            if isinstance(d, Dispatch):
                inst = by_id[d.instance]
                profile = self.profiles.get(inst.model, inst.hardware)
                self.ends.setdefault(inst.id, []).append(now + profile.latency(d.batch.size, inst.cores, 1))
        return out

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        self.inner.on_complete(now, batch, instance, latency)


def test_dispatchers_see_the_profiles_end_of_a_running_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = load_problem(EXAMPLES / "traffic.yaml")
    plan = plan_harpagon(problem)
    assert plan.feasible
    watchers: list[_Watching] = []
    real = plan_sim.dispatcher_for

    def watched(module: ModulePlan, dispatch: DispatchPolicy | None = None) -> Scheduler:
        w = _Watching(real(module, dispatch), problem.profiles)
        watchers.append(w)
        return cast(Scheduler, w)  # the rest of the protocol through __getattr__

    monkeypatch.setattr(plan_sim, "dispatcher_for", watched)
    result = plan_sim.simulate_plan(
        plan, problem.profiles, problem.hardware, duration=200 / plan.rate, seed=1
    )
    assert result.requests > 0 and result.latency_p99 != result.latency_p50  # the noise was on
    shown = [(w, s) for w in watchers for s in w.shown]
    assert shown, "no dispatcher was shown a busy instance"
    for w, (iid, now, busy_until) in shown:
        assert any(busy_until == pytest.approx(end) for end in w.ends[iid]), (iid, now, busy_until)
