"""Plans as data: what every planner returns and what the dispatchers and the simulator run.

A plan gives each module a latency budget and a set of tuples ``(hardware, batch, count)``, each
with the share of the module's rate it serves and the dummy rate it pads its stream with. Nexus
plans may also pack the residual load of several modules onto shared machines (:class:`SharedGroup`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sloserve.core.app import Edge
from sloserve.planning.latency import tuple_latency

DispatchPolicy = Literal["harpagon", "round_robin"]
"""How a module's requests reach its machines: batch-aware (Harpagon) or round-robin of requests."""


@dataclass(frozen=True, slots=True)
class PlanTuple:
    """``count`` machines of ``hardware`` running batches of ``batch``."""

    hardware: str
    batch: int
    count: int
    rate: float
    """Real requests per second this tuple serves."""
    dummy_rate: float
    """Dummy requests per second added to its stream so batches fill within the budget."""
    exec_time: float
    """``d(b)``: planned execution time of one batch, seconds."""
    wait: float
    """Allowance for waiting on a free machine, seconds (see :mod:`sloserve.planning.latency`)."""
    design_utilization: float
    """``ρ``: the tuple may be loaded up to ``count · ρ · batch / exec_time`` requests per second."""
    price_per_hour: float
    """Price of one machine of ``hardware``."""

    @property
    def cost_per_hour(self) -> float:
        """Price of the tuple's machines per hour."""
        return self.count * self.price_per_hour

    @property
    def capacity(self) -> float:
        """Requests per second (real plus dummy) the tuple may be planned to serve."""
        return self.count * self.design_utilization * self.batch / self.exec_time

    @property
    def worst_case_latency(self) -> float:
        """``d(b) + wait + b / (rate + dummy_rate)`` under batch-aware dispatch."""
        return tuple_latency(self.exec_time, self.wait, self.batch, self.rate + self.dummy_rate)

    @property
    def utilization(self) -> float:
        """Planned busy fraction of the tuple's machines (dummies included)."""
        return (self.rate + self.dummy_rate) * self.exec_time / (self.count * self.batch)


@dataclass(frozen=True, slots=True)
class ModulePlan:
    """One module's share of a plan."""

    name: str
    model: str
    rate: float
    """Requests per second the module receives."""
    budget: float
    """Latency budget, seconds; budgets along every app path sum to at most the SLO."""
    dispatch: DispatchPolicy
    tuples: tuple[PlanTuple, ...]

    @property
    def cost_per_hour(self) -> float:
        """Price of the module's own machines per hour (shared machines not included)."""
        return sum(t.cost_per_hour for t in self.tuples)

    @property
    def dummy_rate(self) -> float:
        """Dummy requests per second over all tuples."""
        return sum(t.dummy_rate for t in self.tuples)

    @property
    def machines(self) -> int:
        """Machines the module runs on alone."""
        return sum(t.count for t in self.tuples)


@dataclass(frozen=True, slots=True)
class SharedMember:
    """One module's residual batch on a shared machine (Nexus's squishy bin packing)."""

    module: str
    batch: int
    rate: float
    exec_time: float


@dataclass(frozen=True, slots=True)
class SharedGroup:
    """One machine running a batch of each member module once per ``duty_cycle`` seconds."""

    hardware: str
    price_per_hour: float
    duty_cycle: float
    members: tuple[SharedMember, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """A complete plan for one app, or the reason none exists (``feasible`` false)."""

    app: str
    planner: str
    """Name of the planner that made it (``harpagon``, ``bruteforce``, ``nexus``, ``inferline``)."""
    slo: float
    """End-to-end latency objective, seconds."""
    rate: float
    """Input requests per second."""
    feasible: bool
    modules: tuple[ModulePlan, ...] = ()
    edges: tuple[Edge, ...] = ()
    """The app's edges, so a plan file alone describes the pipeline to run."""
    shared: tuple[SharedGroup, ...] = ()
    reason: str = ""
    """Why the plan is infeasible (empty when feasible)."""
    planning_time: float = 0.0
    """Seconds the planner took."""
    app_file: str | None = None
    """The app file the plan was made from, when it came from one (for ``simulate --plan``)."""

    @property
    def cost_per_hour(self) -> float:
        """Total price per hour of every machine in the plan (``inf`` when infeasible)."""
        if not self.feasible:
            return math.inf
        return sum(m.cost_per_hour for m in self.modules) + sum(g.price_per_hour for g in self.shared)

    def module(self, name: str) -> ModulePlan:
        """The plan of module ``name``."""
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)
