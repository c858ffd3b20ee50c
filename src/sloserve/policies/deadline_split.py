"""Deadline splitting for pipelines: one end-to-end deadline becomes a deadline per step (sans-I/O).

A pipeline is a DAG of steps; each step has a *weight* (its share of the latency): the planner's
budget for the step when a plan is deployed, else the step's profiled latency at batch 1, else 1
(an even split). Let ``R(s)`` be the heaviest weighted path from step ``s`` to the end of the
pipeline (``s`` included). When step ``s`` starts at ``now`` (all its parents done), with the
request's end-to-end deadline ``D``:

- ``split`` (sloserve): ``deadline(s) = now + (D - now) · w(s) / R(s)``, raised to the latest
  parent deadline (deadlines never go backwards along a path) and capped at ``D``. Time the
  earlier steps did not use is thus shared by the steps still to run, in proportion to their
  weights; the last step of a path gets all that is left.
- ``whole`` (Triton-ensemble behaviour, the baseline): every step gets the whole budget from its
  own start, ``deadline(s) = now + (D - arrival)``, which may lie past ``D``.

:meth:`DeadlineSplit.unreachable` says when a request can no longer make ``D`` at a step (the
step's start plus the fastest latency of the heaviest remaining path is past ``D``): the pipeline
drops it there, at the earliest step, instead of running steps whose result comes too late. In
``whole`` mode nothing is dropped early (as in Triton).

Called by the pipeline (``sloserve.runtime.pipeline``) with ``now`` from its clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

SplitMode = Literal["split", "whole"]


@dataclass(frozen=True, slots=True)
class SplitStep:
    """One step of the DAG as the split rule sees it."""

    name: str
    parents: tuple[str, ...] = ()
    weight: float = 1.0
    """Share of the latency (plan budget, profiled latency or 1); > 0."""
    min_latency: float = 0.0
    """Fastest the step can run, seconds (profile at batch 1; 0 when unknown)."""

    def __post_init__(self) -> None:
        if not self.weight > 0 or math.isinf(self.weight):
            raise ValueError(f"step {self.name!r}: weight must be a positive number, got {self.weight}")
        if self.min_latency < 0:
            raise ValueError(f"step {self.name!r}: min_latency must be >= 0, got {self.min_latency}")


class DeadlineSplit:
    """The split rule for one pipeline; see the module docstring. Immutable after construction."""

    def __init__(self, steps: Sequence[SplitStep], mode: SplitMode = "split") -> None:
        if mode not in ("split", "whole"):
            raise ValueError(f"mode must be 'split' or 'whole', got {mode!r}")
        self.mode: SplitMode = mode
        self.steps = {s.name: s for s in steps}
        if len(self.steps) != len(steps):
            raise ValueError("step names must be unique")
        children: dict[str, list[str]] = {s.name: [] for s in steps}
        for s in steps:
            for p in s.parents:
                if p not in children:
                    raise ValueError(f"step {s.name!r}: unknown parent {p!r}")
                children[p].append(s.name)
        self.children = children
        self.remaining: dict[str, float] = {}
        """``R(s)``: heaviest weighted path from ``s`` to an end of the pipeline, ``s`` included."""
        self.fastest: dict[str, float] = {}
        """Fastest latency of the slowest remaining path from ``s`` (``s`` included), seconds."""
        for name in reversed(self._order()):
            step = self.steps[name]
            after = children[name]
            self.remaining[name] = step.weight + max((self.remaining[c] for c in after), default=0.0)
            self.fastest[name] = step.min_latency + max((self.fastest[c] for c in after), default=0.0)

    def _order(self) -> list[str]:
        indegree = {n: len(s.parents) for n, s in self.steps.items()}
        ready = [n for n, d in indegree.items() if d == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for c in self.children[n]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    ready.append(c)
        if len(order) != len(self.steps):
            raise ValueError("the steps form a cycle")
        return order

    def with_weights(self, weights: Mapping[str, float]) -> DeadlineSplit:
        """A copy with some steps' weights replaced (e.g. by a deployed plan's budgets)."""
        steps = [
            SplitStep(s.name, s.parents, weights.get(s.name, s.weight), s.min_latency)
            for s in self.steps.values()
        ]
        return DeadlineSplit(steps, self.mode)

    def with_mode(self, mode: SplitMode) -> DeadlineSplit:
        """A copy with another mode."""
        return DeadlineSplit(list(self.steps.values()), mode)

    def step_deadline(
        self,
        step: str,
        now: float,
        arrival: float,
        deadline: float,
        parent_deadlines: Sequence[float] = (),
    ) -> float:
        """Absolute deadline of ``step`` starting at ``now`` for a request that arrived at
        ``arrival`` with end-to-end ``deadline`` (``inf``: none); called when the step starts."""
        if math.isinf(deadline):
            return math.inf
        if self.mode == "whole":
            return now + (deadline - arrival)
        share = self.steps[step].weight / self.remaining[step]
        own = now + max(0.0, deadline - now) * share
        return min(deadline, max(own, *parent_deadlines) if parent_deadlines else own)

    def unreachable(self, step: str, now: float, deadline: float) -> bool:
        """Whether a request starting ``step`` at ``now`` can no longer meet ``deadline``
        (always False in ``whole`` mode, which never drops early)."""
        if self.mode == "whole" or math.isinf(deadline):
            return False
        return now + self.fastest[step] > deadline or now >= deadline
