"""The planning problem: an app, a hardware catalogue and profiles, on a grid of latency budgets.

Every planner (Harpagon, the brute force, Nexus-style, InferLine-style) reads the same
:class:`PlanningProblem` and the same :class:`ModuleTable`s built from it, so they search one
discretisation: module budgets are whole multiples of ``step = slo / grid_steps``, batch sizes are
the integers ``1..max_batch`` of each (model, hardware) profile, design utilizations come from
``utilizations`` and machine counts are integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sloserve.core.app import MAX_PATHS, App
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import ProfileSet
from sloserve.planning.latency import FloatArray, IntArray, min_machines_array, wait_factors

LatencyKind = Literal["tail", "median"]
"""Which profile latency a planner plans with: the p99 (``tail``, the default) or the median."""


@dataclass(frozen=True, slots=True)
class PlanningProblem:
    """What to plan: ``app`` (DAG, SLO, input rate) served on machines from ``hardware``.

    ``profiles`` holds one profile per (model, hardware type); a hardware type without a profile
    for a module's model is simply not an option for that module.
    """

    app: App
    hardware: tuple[Hardware, ...]
    profiles: ProfileSet
    grid_steps: int = 50
    """Budget grid: module budgets are multiples of ``app.slo / grid_steps``."""
    latency: LatencyKind = "tail"
    """Profile latency used as the batch execution time ``d(b)``."""
    max_batch: int = 128
    """Upper bound on batch sizes searched (also bounded by each profile's ``max_batch``)."""
    utilizations: tuple[float, ...] = (0.6, 0.75, 0.9)
    """Design utilizations ``ρ`` a tuple may be planned at (its capacity is ``ρ · b / d(b)``)."""
    wait_quantile: float | None = 0.99
    """Quantile of the wait for a free machine the latency model allows for; None: the paper's
    model without it (then a utilization of 1 is allowed)."""

    def __post_init__(self) -> None:
        if not self.app.rate > 0:
            raise ValueError(f"app {self.app.name!r}: planning needs an input rate > 0, got {self.app.rate}")
        if self.grid_steps < 1:
            raise ValueError(f"grid_steps must be >= 1, got {self.grid_steps}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        top = 1.0 if self.wait_quantile is None else 1.0 - 1e-12
        if not self.utilizations or not all(0 < u <= top for u in self.utilizations):
            raise ValueError(
                f"utilizations must lie in (0, 1) (or (0, 1] without a wait quantile), "
                f"got {self.utilizations}"
            )
        if self.wait_quantile is not None and not 0 < self.wait_quantile < 1:
            raise ValueError(f"wait_quantile must lie in (0, 1), got {self.wait_quantile}")
        paths = self.app.path_count()
        if paths > MAX_PATHS:
            raise ValueError(f"app {self.app.name!r}: {paths} source-to-sink paths; at most {MAX_PATHS}")
        names = [h.name for h in self.hardware]
        if not names:
            raise ValueError("the hardware catalogue is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"hardware names must be unique, got {names}")
        for h in self.hardware:
            if h.price_per_hour <= 0:
                raise ValueError(f"hardware {h.name!r}: price_per_hour must be > 0 for cost planning")
        for m in self.app.modules:
            if not any((m.model, h) in self.profiles.profiles for h in names):
                raise ValueError(
                    f"module {m.name!r}: no profile for model {m.model!r} on any catalogue hardware {names}"
                )

    @property
    def step(self) -> float:
        """Seconds per budget grid step."""
        return self.app.slo / self.grid_steps

    def budgets(self) -> FloatArray:
        """The budget grid ``k · step`` for k = 0..grid_steps, seconds."""
        return np.arange(self.grid_steps + 1, dtype=np.float64) * self.step


@dataclass(frozen=True, slots=True)
class ModuleTable:
    """Every (hardware, batch, utilization) config of one module, as flat arrays (one entry each).

    Built once per plan by :func:`module_tables`; the planners only read it.
    """

    name: str
    model: str
    rate: float
    """Requests per second the module receives (input rate times fan-outs)."""
    hardware: tuple[str, ...]
    """Catalogue names; ``hw`` indexes this tuple."""
    hw: IntArray
    batch: IntArray
    latency: FloatArray
    """``d(b)``: execution time of one batch, seconds."""
    price: FloatArray
    """Price per hour of one machine of the config's hardware."""
    utilization: FloatArray
    """Design utilization ``ρ`` of the config."""
    wait: FloatArray
    """Wait factor ``A(b, ρ)``: ``n`` machines allow ``d(b) · A / n`` for a free machine."""
    capacity: FloatArray = field(init=False)
    """``ρ · b / d(b)``: requests per second one machine of the config may be planned to serve."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "capacity", self.utilization * self.batch / self.latency)

    def __len__(self) -> int:
        return len(self.batch)

    def min_machines(self, budgets: FloatArray) -> FloatArray:
        """Fewest machines per (budget, config) whose batches fill in time at full load."""
        return min_machines_array(self.latency, self.wait, self.capacity, self.batch, budgets)

    def subset(self, idx: IntArray) -> ModuleTable:
        """The same module with only the configs ``idx`` (kept in order)."""
        return ModuleTable(
            self.name,
            self.model,
            self.rate,
            self.hardware,
            self.hw[idx],
            self.batch[idx],
            self.latency[idx],
            self.price[idx],
            self.utilization[idx],
            self.wait[idx],
        )


def module_tables(problem: PlanningProblem) -> list[ModuleTable]:
    """One table per module, in the app's topological order; configs grouped by hardware type."""
    rates = problem.app.module_rates()
    utils = np.array(sorted(set(problem.utilizations)))
    out = []
    for name in problem.app.topological_order():
        model = problem.app.module(name).model
        parts: list[tuple[int, IntArray, FloatArray, float]] = []
        for i, h in enumerate(problem.hardware):
            prof = problem.profiles.profiles.get((model, h.name))
            if prof is None:
                continue
            f = prof.tail_latency if problem.latency == "tail" else prof.latency
            batches = np.arange(1, min(prof.max_batch, problem.max_batch) + 1)
            lat = np.array([f(int(b), h.cores, 1) for b in batches], dtype=np.float64)
            if not np.all(lat > 0):
                bad = int(batches[np.argmin(lat > 0)])
                raise ValueError(f"profile {model!r} on {h.name!r}: latency at batch {bad} is not > 0")
            parts.append((i, batches, lat, h.price_per_hour))
        # One row per (hardware, batch, utilization), grouped by hardware.
        hw = np.concatenate([np.full(len(b) * len(utils), i) for i, b, _, _ in parts])
        batch = np.concatenate([np.repeat(b, len(utils)) for _, b, _, _ in parts])
        util = np.tile(utils, len(batch) // len(utils))
        table = ModuleTable(
            name=name,
            model=model,
            rate=rates[name],
            hardware=tuple(h.name for h in problem.hardware),
            hw=hw.astype(np.int64),
            batch=batch.astype(np.int64),
            latency=np.concatenate([np.repeat(lat, len(utils)) for _, _, lat, _ in parts]),
            price=np.concatenate([np.full(len(b) * len(utils), p) for _, b, _, p in parts]),
            utilization=util,
            wait=wait_factors(batch, util, problem.wait_quantile),
        )
        out.append(table.subset(_useful_levels(table, len(utils))))
    return out


def _useful_levels(table: ModuleTable, levels: int) -> IntArray:
    """Drop a (hardware, batch) config at one utilization when a higher utilization of the same
    batch needs no more fill time ``d·A + b/c`` at every budget: it carries more with the same
    machines, so no plan needs the lower one. ``table`` rows come in blocks of ``levels``."""
    need = (table.latency * table.wait + table.batch / table.capacity).reshape(-1, levels)
    after = np.minimum.accumulate(need[:, ::-1], axis=1)[:, ::-1]  # min over this level and higher
    beaten = np.c_[after[:, 1:] <= need[:, :-1], np.zeros(len(need), dtype=bool)]
    return np.flatnonzero(~beaten.ravel())


def path_indices(app: App, order: Sequence[str]) -> list[tuple[int, ...]]:
    """Every source-to-sink path as indices into ``order``; budgets along each must sum to <= SLO."""
    index = {n: i for i, n in enumerate(order)}
    return [tuple(index[n] for n in p) for p in app.paths()]
