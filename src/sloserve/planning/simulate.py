"""Running a plan in simulation: Poisson input at the planned rate through the whole pipeline.

``sloserve simulate --plan PLAN`` and the feasibility tests call :func:`simulate_plan`. The shared
cluster simulator (:mod:`sloserve.sim.cluster`) serves one profile per model and has no pipelines,
so this is a thin driver of its own on the shared :class:`~sloserve.sim.engine.EventLoop`: each
module gets the plan's dispatcher (:mod:`sloserve.policies.harpagon_dispatch`) and one instance per
planned machine; a finished request makes ``fanout`` child requests per edge (the integer part,
plus one more with the fractional part's probability); an input request is met when all its
descendants finish within the SLO. Service time is the profile's median latency on the machine's
hardware times lognormal noise whose p99 is the profile's tail latency (deterministic when the two
are equal). Every module request ends exactly once; the driver checks it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Dispatch, Drop, DropReason, WaitUntil
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import ModelProfile, ProfileSet
from sloserve.core.request import Batch, Request
from sloserve.planning.plan import DispatchPolicy, ModulePlan, Plan
from sloserve.policies.base import Scheduler
from sloserve.policies.harpagon_dispatch import HarpagonDispatcher, RoundRobinPlanDispatcher, TupleRoute
from sloserve.sim.engine import EventLoop

Z99 = 2.3263478740408408
"""Standard normal 99th percentile: a lognormal with sigma ``ln(p99/median) / Z99``."""


@dataclass(frozen=True)
class PlanSimResult:
    """What :func:`simulate_plan` measured."""

    dispatch: DispatchPolicy
    requests: int
    """Input requests that arrived."""
    met: int
    """Input requests whose every descendant finished within the SLO."""
    latency_p50: float
    latency_p99: float
    """Percentiles of end-to-end latency (seconds) over input requests that completed."""
    dropped: int
    """Input requests with a descendant that ended unanswered (left queued when the run ended)."""
    module_met: dict[str, float] = field(default_factory=dict)
    """Per module: share of its requests answered within the module budget."""
    duration: float = 0.0
    seed: int = 0

    @property
    def attainment(self) -> float:
        """Share of input requests that met the SLO."""
        return self.met / self.requests if self.requests else math.nan

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON reports."""
        return {**asdict(self), "attainment": self.attainment}


def dispatcher_for(module: ModulePlan, dispatch: DispatchPolicy | None = None) -> Scheduler:
    """The scheduler that serves ``module`` as planned (``dispatch`` overrides the plan's policy)."""
    routes = [
        TupleRoute(t.hardware, t.batch, t.count, t.rate, t.dummy_rate, t.exec_time, t.wait)
        for t in module.tuples
    ]
    kind = dispatch or module.dispatch
    cls = HarpagonDispatcher if kind == "harpagon" else RoundRobinPlanDispatcher
    return cls(routes, module.budget)


class _Module:
    """One module in the run: its scheduler, instances, profiles and pending wake-up."""

    def __init__(
        self,
        plan: ModulePlan,
        scheduler: Scheduler,
        first_id: int,
        profiles: ProfileSet,
        cores: Mapping[str, int],
    ) -> None:
        self.plan = plan
        self.scheduler = scheduler
        self.instances: list[InstanceView] = []
        self.profile: dict[int, ModelProfile] = {}
        for t in plan.tuples:
            prof = profiles.get(plan.model, t.hardware)
            for _ in range(t.count):
                inst = InstanceView(first_id + len(self.instances), plan.model, cores[t.hardware], t.hardware)
                self.profile[inst.id] = prof
                self.instances.append(inst)
        self.wake_handle = -1
        self.wake_time = math.inf
        self.met = 0
        self.ended = 0


class _Run:
    """The event-driven run of one plan (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        profiles: ProfileSet,
        hardware: Sequence[Hardware],
        dispatch: DispatchPolicy | None,
        seed: int,
        noise: bool,
    ) -> None:
        cores = {h.name: h.cores for h in hardware}
        self.loop = EventLoop()
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.slo = plan.slo
        self.modules: dict[str, _Module] = {}
        next_id = 0
        for m in plan.modules:
            mod = _Module(m, dispatcher_for(m, dispatch), next_id, profiles, cores)
            next_id += len(mod.instances)
            self.modules[m.name] = mod
        self.owner = {i.id: (mod, i) for mod in self.modules.values() for i in mod.instances}
        self.children = {
            m.name: [(e.child, e.fanout) for e in plan.edges if e.parent == m.name] for m in plan.modules
        }
        targets = {e.child for e in plan.edges}
        self.sources = [m.name for m in plan.modules if m.name not in targets]
        self.origin: dict[int, int] = {}  # module request id -> input request index
        self.outstanding: list[int] = []
        self.start: list[float] = []
        self.failed: list[bool] = []
        self.finish: list[float] = []
        self.next_request = 0
        self.made = 0
        self.ended = 0

    # -- requests ----------------------------------------------------------------------------

    def arrive_input(self, now: float) -> None:
        j = len(self.start)
        self.start.append(now)
        self.failed.append(False)
        self.finish.append(math.nan)
        self.outstanding.append(0)
        for name in self.sources:
            self.send(name, j, now)
        if self.outstanding[j] == 0:
            self.finish[j] = now

    def send(self, name: str, origin: int, now: float) -> None:
        mod = self.modules[name]
        r = Request(self.next_request, name, now, now + mod.plan.budget)
        self.next_request += 1
        self.made += 1
        self.origin[r.id] = origin
        self.outstanding[origin] += 1
        drop = mod.scheduler.submit(now, r)
        if drop is not None:
            self.dropped(drop)
        self.decide(mod)

    def done(self, r: Request, now: float, ok: bool) -> None:
        """Module request ``r`` ended now (answered when ``ok``)."""
        self.ended += 1
        j = self.origin.pop(r.id)
        if not ok:
            self.failed[j] = True
        else:
            for child, fanout in self.children[r.model]:
                n = int(fanout) + (1 if self.rng.random() < fanout - int(fanout) else 0)
                for _ in range(n):
                    self.send(child, j, now)
        self.outstanding[j] -= 1
        if self.outstanding[j] == 0:
            self.finish[j] = now

    def dropped(self, d: Drop) -> None:
        self.modules[d.request.model].ended += 1
        self.done(d.request, self.loop.now, ok=False)

    # -- the policy loop ---------------------------------------------------------------------

    def decide(self, mod: _Module) -> None:
        now = self.loop.now
        for d in mod.scheduler.decide(now, mod.instances):
            if isinstance(d, Dispatch):
                self.run_batch(mod, d)
            elif isinstance(d, Drop):
                self.dropped(d)
            elif isinstance(d, WaitUntil):
                self.wake_at(mod, d.time)

    def wake_at(self, mod: _Module, time: float) -> None:
        loop = self.loop
        time = max(time, math.nextafter(loop.now, math.inf))
        if mod.wake_handle >= 0 and loop.pending(mod.wake_handle):
            if time >= mod.wake_time:
                return
            loop.cancel(mod.wake_handle)
        mod.wake_time = time
        mod.wake_handle = loop.at(time, partial(self.wake, mod))

    def wake(self, mod: _Module) -> None:
        mod.wake_handle = -1
        mod.wake_time = math.inf
        self.decide(mod)

    def run_batch(self, mod: _Module, d: Dispatch) -> None:
        now = self.loop.now
        owner = self.owner.get(d.instance)
        if owner is None or owner[0] is not mod or not owner[1].free:
            raise RuntimeError(f"module {mod.plan.name}: instance {d.instance} cannot take a batch now")
        inst = owner[1]
        prof = mod.profile[inst.id]
        size = d.batch.size
        predicted = service = prof.latency(size, inst.cores, 1)
        if self.noise:
            tail = prof.tail_latency(size, inst.cores, 1)
            if tail > service:
                service *= float(self.rng.lognormal(0.0, math.log(tail / service) / Z99))
        inst.in_flight += 1
        inst.busy_until = max(inst.busy_until, now + predicted)  # the profile's end, not the noise drawn
        self.loop.at(now + service, partial(self.complete, mod, inst, d.batch, service))

    def complete(self, mod: _Module, inst: InstanceView, batch: Batch, service: float) -> None:
        now = self.loop.now
        inst.in_flight -= 1
        if inst.in_flight == 0:
            inst.busy_until = min(inst.busy_until, now)
        for r in batch.requests:
            mod.ended += 1
            mod.met += now <= r.deadline
            self.done(r, now, ok=True)
        mod.scheduler.on_complete(now, batch, inst, service)
        self.decide(mod)

    # -- the run -----------------------------------------------------------------------------

    def run(self, rate: float, duration: float) -> None:
        # A Poisson process on [0, duration]: a Poisson count of uniformly placed arrivals.
        times = np.sort(self.rng.uniform(0.0, duration, int(self.rng.poisson(rate * duration))))
        for t in times.tolist():
            self.loop.at(t, partial(self.arrive_input, t))
        self.loop.run()
        for mod in self.modules.values():
            for d in mod.scheduler.drain(self.loop.now, DropReason.UNAVAILABLE):
                self.dropped(d)
        if self.ended != self.made:
            raise RuntimeError(f"{self.made} module requests were made but {self.ended} ended")


def simulate_plan(
    plan: Plan,
    profiles: ProfileSet,
    hardware: Sequence[Hardware],
    *,
    dispatch: DispatchPolicy | None = None,
    duration: float = 60.0,
    seed: int = 0,
    noise: bool = True,
) -> PlanSimResult:
    """Simulate ``plan`` for ``duration`` seconds of Poisson input at its planned rate.

    ``dispatch`` replaces every module's planned dispatch policy (e.g. ``"round_robin"`` to show
    the same plan without batch-aware dispatch); ``noise=False`` runs every batch in exactly its
    median latency. Raises ``ValueError`` for infeasible plans and plans with shared nodes.
    """
    if not plan.feasible:
        raise ValueError(f"plan for {plan.app!r} is infeasible: {plan.reason}")
    if plan.shared:
        raise ValueError("plans with shared duty-cycle nodes (Nexus residual packing) cannot be simulated")
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    run = _Run(plan, profiles, hardware, dispatch, seed, noise)
    run.run(plan.rate, duration)
    start, finish = np.array(run.start), np.array(run.finish)
    ok = ~np.array(run.failed, dtype=bool)
    latency = finish - start
    met = ok & (latency <= plan.slo * (1 + 1e-9))
    answered = latency[ok]
    return PlanSimResult(
        dispatch=dispatch or (plan.modules[0].dispatch if plan.modules else "harpagon"),
        requests=len(start),
        met=int(met.sum()),
        latency_p50=float(np.percentile(answered, 50)) if len(answered) else math.nan,
        latency_p99=float(np.percentile(answered, 99)) if len(answered) else math.nan,
        dropped=int((~ok).sum()),
        module_met={n: (m.met / m.ended if m.ended else math.nan) for n, m in run.modules.items()},
        duration=duration,
        seed=seed,
    )
