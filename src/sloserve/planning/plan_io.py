"""The plan file: what ``sloserve plan`` writes and ``sloserve simulate --plan`` reads.

::

    format: sloserve-plan/v1
    app: traffic
    planner: harpagon            # harpagon | bruteforce | nexus-dp | nexus-even | inferline
    feasible: true
    reason: ''                   # why not, when infeasible
    slo_ms: 250.0
    rate: 200.0                  # input requests per second
    cost_per_hour: 3.16          # informative; recomputed on load
    planning_time_ms: 2.4
    app_file: traffic.yaml       # the app file, relative to the plan file
    edges: [{from: detect, to: classify, fanout: 2.5}]
    modules:
      - name: detect
        model: yolov5s
        rate: 200.0
        budget_ms: 120.0
        dispatch: harpagon       # harpagon (batch-aware) | round_robin
        cost_per_hour: 1.05      # informative
        tuples:                  # (hardware, batch, count) and what each serves
          - {hardware: t4, batch: 8, count: 2, rate: 200.0, dummy_rate: 0.0, exec_ms: 31.0,
             wait_ms: 4.2, design_utilization: 0.75, price_per_hour: 0.526}
    shared: []                   # Nexus only: duty-cycle nodes packing several modules' residuals

Times are milliseconds in the file and seconds in memory.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from sloserve.core.app import App, Edge, Module
from sloserve.core.config import StrictModel, read_document, validate, write_document
from sloserve.planning.plan import ModulePlan, Plan, PlanTuple, SharedGroup, SharedMember
from sloserve.policies.params import MACHINE_LIMIT, MAX_SECONDS

PLAN_FORMAT: Final = "sloserve-plan/v1"
MS = 1e-3


class _TupleSchema(StrictModel):
    hardware: str = Field(min_length=1)
    batch: int = Field(ge=1)
    count: int = Field(ge=1, le=MACHINE_LIMIT)
    rate: float = Field(ge=0)
    dummy_rate: float = Field(default=0.0, ge=0)
    exec_ms: float = Field(gt=0)
    wait_ms: float = Field(default=0.0, ge=0)
    design_utilization: float = Field(default=1.0, gt=0, le=1)
    price_per_hour: float = Field(ge=0)


class _ModuleSchema(StrictModel):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    rate: float = Field(ge=0)
    budget_ms: float = Field(gt=0, le=MAX_SECONDS / MS)
    dispatch: Literal["harpagon", "round_robin"] = "harpagon"
    cost_per_hour: float | None = None
    tuples: list[_TupleSchema] = Field(default_factory=list)


class _EdgeSchema(StrictModel):
    parent: str = Field(alias="from")
    child: str = Field(alias="to")
    fanout: float = Field(default=1.0, gt=0)


class _MemberSchema(StrictModel):
    module: str
    batch: int = Field(ge=1)
    rate: float = Field(ge=0)
    exec_ms: float = Field(gt=0)


class _SharedSchema(StrictModel):
    hardware: str
    price_per_hour: float = Field(ge=0)
    duty_cycle_ms: float = Field(gt=0)
    members: list[_MemberSchema] = Field(min_length=1)


class PlanFileSchema(StrictModel):
    """Top level of a plan file."""

    format: Literal["sloserve-plan/v1"] = PLAN_FORMAT
    app: str
    planner: str
    feasible: bool
    reason: str = ""
    slo_ms: float = Field(gt=0, le=MAX_SECONDS / MS)
    rate: float = Field(ge=0)
    cost_per_hour: float | None = None
    planning_time_ms: float = 0.0
    app_file: str | None = None
    edges: list[_EdgeSchema] = Field(default_factory=list)
    modules: list[_ModuleSchema] = Field(default_factory=list)
    shared: list[_SharedSchema] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> PlanFileSchema:
        """The modules form the app's graph (unique names, known ends, no cycle), and a feasible
        plan serves each of them on at least one tuple or in a shared group."""
        if self.modules:
            modules = tuple(Module(m.name, m.model) for m in self.modules)
            edges = tuple(Edge(e.parent, e.child, e.fanout) for e in self.edges)
            App(self.app, modules, edges, self.slo_ms * MS, self.rate)  # raises what is wrong
        if self.feasible and not self.modules:
            raise ValueError("modules: a feasible plan has at least one module")
        if self.feasible:
            shared = {member.module for group in self.shared for member in group.members}
            for i, m in enumerate(self.modules):
                if not m.tuples and m.name not in shared:
                    raise ValueError(f"modules.{i}.tuples: a feasible plan runs module {m.name!r} somewhere")
        return self


def plan_to_dict(plan: Plan, app_file: str | None = None) -> dict[str, Any]:
    """The file form of ``plan`` (``app_file`` overrides the plan's own reference)."""
    return {
        "format": PLAN_FORMAT,
        "app": plan.app,
        "planner": plan.planner,
        "feasible": plan.feasible,
        "reason": plan.reason,
        "slo_ms": plan.slo / MS,
        "rate": plan.rate,
        "cost_per_hour": plan.cost_per_hour if plan.feasible else None,
        "planning_time_ms": round(plan.planning_time / MS, 3),
        "app_file": app_file if app_file is not None else plan.app_file,
        "edges": [{"from": e.parent, "to": e.child, "fanout": e.fanout} for e in plan.edges],
        "modules": [
            {
                "name": m.name,
                "model": m.model,
                "rate": m.rate,
                "budget_ms": m.budget / MS,
                "dispatch": m.dispatch,
                "cost_per_hour": m.cost_per_hour,
                "tuples": [
                    {
                        "hardware": t.hardware,
                        "batch": t.batch,
                        "count": t.count,
                        "rate": t.rate,
                        "dummy_rate": t.dummy_rate,
                        "exec_ms": t.exec_time / MS,
                        "wait_ms": t.wait / MS,
                        "design_utilization": t.design_utilization,
                        "price_per_hour": t.price_per_hour,
                    }
                    for t in m.tuples
                ],
            }
            for m in plan.modules
        ],
        "shared": [
            {
                "hardware": g.hardware,
                "price_per_hour": g.price_per_hour,
                "duty_cycle_ms": g.duty_cycle / MS,
                "members": [
                    {"module": x.module, "batch": x.batch, "rate": x.rate, "exec_ms": x.exec_time / MS}
                    for x in g.members
                ],
            }
            for g in plan.shared
        ],
    }


def plan_from_data(data: Any, source: str = "<plan>") -> Plan:
    """Validate plan-file data and build the :class:`Plan`."""
    s = validate(PlanFileSchema, data, source)
    modules = tuple(
        ModulePlan(
            m.name,
            m.model,
            m.rate,
            m.budget_ms * MS,
            m.dispatch,
            tuple(
                PlanTuple(
                    t.hardware,
                    t.batch,
                    t.count,
                    t.rate,
                    t.dummy_rate,
                    t.exec_ms * MS,
                    t.wait_ms * MS,
                    t.design_utilization,
                    t.price_per_hour,
                )
                for t in m.tuples
            ),
        )
        for m in s.modules
    )
    shared = tuple(
        SharedGroup(
            g.hardware,
            g.price_per_hour,
            g.duty_cycle_ms * MS,
            tuple(SharedMember(x.module, x.batch, x.rate, x.exec_ms * MS) for x in g.members),
        )
        for g in s.shared
    )
    edges = tuple(Edge(e.parent, e.child, e.fanout) for e in s.edges)
    return Plan(
        s.app,
        s.planner,
        s.slo_ms * MS,
        s.rate,
        s.feasible,
        modules,
        edges,
        shared,
        s.reason,
        s.planning_time_ms * MS,
        s.app_file,
    )


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write ``plan`` (JSON for ``.json``, YAML otherwise); its app file is stored relative to it."""
    p = Path(path)
    app_file = plan.app_file
    if app_file is not None:
        app_file = os.path.relpath(Path(app_file).resolve(), p.resolve().parent)
    write_document(plan_to_dict(plan, app_file), p)


def load_plan(path: str | Path) -> Plan:
    """Read a plan file; its ``app_file`` comes back resolved against the plan's folder."""
    p = Path(path)
    plan = plan_from_data(read_document(p), str(p))
    if plan.app_file is not None and not Path(plan.app_file).is_absolute():
        plan = replace(plan, app_file=str(p.parent / plan.app_file))
    return plan
