"""The application file and the hardware catalogue: what ``sloserve plan APP.yaml`` reads.

Application file (YAML or JSON)::

    format: sloserve-app/v1
    name: traffic                  # app name (default: the file name)
    slo_ms: 250                    # end-to-end latency objective
    rate: 200                      # requests per second entering the source modules
    modules:                       # the DAG's nodes
      - {name: detect, model: yolov5s}
      - {name: classify, model: resnet50}
    edges:                         # parent -> child; each parent request makes `fanout` child requests
      - {from: detect, to: classify, fanout: 2.5}
    hardware: hardware.yaml        # catalogue file (relative to this file) or an inline list
    profiles: profiles.yaml        # profile file (sloserve-profile/v1), one per (model, hardware)
    planner:                       # optional planner settings (defaults shown)
      grid_steps: 50               # budgets are multiples of slo / grid_steps
      utilizations: [0.6, 0.75, 0.9]
      wait_quantile: 0.99          # null: the paper's model without a wait allowance
      latency: tail                # plan with the profiles' p99 (tail) or median latency
      max_batch: 128

Hardware catalogue::

    format: sloserve-hardware/v1
    hardware:
      - {name: t4, cores: 4, price_per_hour: 0.526}

Times are milliseconds in files and seconds in memory. Every problem raises
:class:`~sloserve.core.config.ConfigError` naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, field_validator

from sloserve.core.app import MAX_PATHS, App, Edge, Module
from sloserve.core.config import ConfigError, StrictModel, load_model_file, read_document, validate
from sloserve.core.hardware import Hardware
from sloserve.core.profile_io import load_profiles
from sloserve.planning.problem import LatencyKind, PlanningProblem
from sloserve.policies.params import MAX_SECONDS

APP_FORMAT: Final = "sloserve-app/v1"
HARDWARE_FORMAT: Final = "sloserve-hardware/v1"


MAX_PRICE_PER_HOUR = 1e6
"""Dearest machine a catalogue may list ($/h): plan costs stay finite."""
MAX_APP_RATE = 1e7
"""Most requests per second an app may take in (far past what a plan of at most 1,024 machines a
tuple serves; at 1e300 the brute-force planner's search tables overflowed)."""


class HardwareSchema(StrictModel):
    """One hardware type of a catalogue."""

    name: str = Field(min_length=1)
    cores: int = Field(default=1, ge=1)
    price_per_hour: float = Field(gt=0, le=MAX_PRICE_PER_HOUR)


class HardwareFileSchema(StrictModel):
    """Top level of a hardware catalogue file."""

    format: Literal["sloserve-hardware/v1"] = HARDWARE_FORMAT
    hardware: list[HardwareSchema] = Field(min_length=1)


class ModuleSchema(StrictModel):
    """One module of an application."""

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)


class EdgeSchema(StrictModel):
    """``from`` feeds ``to``; each request of ``from`` makes ``fanout`` requests of ``to``."""

    parent: str = Field(alias="from", min_length=1)
    child: str = Field(alias="to", min_length=1)
    fanout: float = Field(default=1.0, gt=0)


class PlannerSchema(StrictModel):
    """Planner settings an app file may set (see :class:`PlanningProblem`)."""

    grid_steps: int = Field(default=50, ge=1, le=1000)
    utilizations: list[Annotated[float, Field(gt=0, le=1)]] = Field(default=[0.6, 0.75, 0.9], min_length=1)
    wait_quantile: float | None = Field(default=0.99, gt=0, lt=1)
    latency: LatencyKind = "tail"
    max_batch: int = Field(default=128, ge=1)


MAX_MODULES = 256
"""Most modules in one app (its paths are walked recursively; planners are polynomial in it and in
the number of paths, at most :data:`~sloserve.core.app.MAX_PATHS`)."""


class AppFileSchema(StrictModel):
    """Top level of an application file."""

    format: Literal["sloserve-app/v1"] = APP_FORMAT
    name: str | None = None
    slo_ms: float = Field(gt=0, le=MAX_SECONDS * 1e3)
    rate: float = Field(gt=0, le=MAX_APP_RATE)
    modules: list[ModuleSchema] = Field(min_length=1, max_length=MAX_MODULES)
    edges: list[EdgeSchema] = Field(default_factory=list)
    hardware: str | list[HardwareSchema]
    profiles: str = Field(min_length=1)
    planner: PlannerSchema = PlannerSchema()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        """The name becomes part of the default plan file name: no folders in it."""
        if name is not None and (not name or any(c in name for c in "/\\") or ".." in name):
            raise ValueError(f"{name!r} must be a plain file name part (no '/', '\\' or '..')")
        return name


def _hardware(spec: str | list[HardwareSchema], base: Path) -> tuple[Hardware, ...]:
    items = load_model_file(HardwareFileSchema, base / spec).hardware if isinstance(spec, str) else spec
    return tuple(Hardware(h.name, h.cores, h.price_per_hour) for h in items)


def app_from_schema(spec: AppFileSchema, source: str, default_name: str = "app") -> App:
    """The :class:`App` an app file describes; graph errors name the field."""
    names = [m.name for m in spec.modules]
    for i, m in enumerate(spec.modules):
        if m.name in names[:i]:
            raise ConfigError(f"{source}: modules.{i}.name: duplicate module name {m.name!r}")
    for i, e in enumerate(spec.edges):
        for field, end in (("from", e.parent), ("to", e.child)):
            if end not in names:
                raise ConfigError(f"{source}: edges.{i}.{field}: unknown module {end!r}; modules: {names}")
    try:
        app = App(
            name=spec.name or default_name,
            modules=tuple(Module(m.name, m.model) for m in spec.modules),
            edges=tuple(Edge(e.parent, e.child, e.fanout) for e in spec.edges),
            slo=spec.slo_ms * 1e-3,
            rate=spec.rate,
        )
    except ValueError as exc:  # e.g. a cycle
        raise ConfigError(f"{source}: edges: {exc}") from None
    for name, rate in app.module_rates().items():
        if not math.isfinite(rate):
            raise ConfigError(f"{source}: edges: the fan-outs make module {name!r}'s rate overflow")
    paths = app.path_count()
    if paths > MAX_PATHS:
        raise ConfigError(
            f"{source}: edges: the graph has {paths} source-to-sink paths; at most {MAX_PATHS} are "
            "supported (planners check the SLO along each path)"
        )
    return app


def problem_from_data(data: Any, source: str = "<app>", base: Path | None = None) -> PlanningProblem:
    """Validate app-file data and load what it names (paths relative to ``base``)."""
    spec = validate(AppFileSchema, data, source)
    base = base or Path(".")
    app = app_from_schema(spec, source, Path(source).stem or "app")
    hardware = _hardware(spec.hardware, base)
    profiles = load_profiles(base / spec.profiles)
    p = spec.planner
    known = {h.name for h in hardware}
    for i, m in enumerate(spec.modules):
        if not any((m.model, h) in profiles.profiles for h in known):
            raise ConfigError(
                f"{source}: modules.{i}.model: no profile for {m.model!r} on any hardware in the "
                f"catalogue {sorted(known)} (profiles: {base / spec.profiles})"
            )
    try:
        return PlanningProblem(
            app,
            hardware,
            profiles,
            grid_steps=p.grid_steps,
            latency=p.latency,
            max_batch=p.max_batch,
            utilizations=tuple(p.utilizations),
            wait_quantile=p.wait_quantile,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_problem(path: str | Path) -> PlanningProblem:
    """Read an app file and everything it names into a :class:`PlanningProblem`."""
    p = Path(path)
    return problem_from_data(read_document(p), str(p), p.parent)
