"""Pipeline models: a DAG of member models served as one model (like a Triton ensemble).

:func:`build_pipeline` (called by the repository for a directory with a ``pipeline.yaml``) checks
the wiring against the members' tensor metadata and returns a
:class:`~sloserve.runtime.repository.LoadedModel` whose ``loop`` is a :class:`PipelineLoop`.
The loop offers what the server and the repository use of a
:class:`~sloserve.runtime.model_loop.ModelLoop` (``submit``, ``cancel``, ``ready``, ``stats``, ``pending``,
``views``, ``profile``, ``close``, ``abort``, ``record_failure``), so the HTTP and gRPC front ends serve a
pipeline unchanged.

A request runs each step when all the steps it reads from are done, by submitting the step's
inputs to the member's own loop (so every step is batched and scheduled by the member's policy)
with the step's deadline from :class:`~sloserve.policies.deadline_split.DeadlineSplit` and the
request's priority. A request that can no longer make its end-to-end deadline is refused at the
first step where that is known; a step refused by its member ends the request with the member's
reason. Every request ends exactly once, through :meth:`PipelineLoop._end`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from sloserve.core.cluster import InstanceView
from sloserve.core.config import ConfigError
from sloserve.core.decisions import DropReason
from sloserve.core.profiles import ModelProfile
from sloserve.policies.deadline_split import DeadlineSplit, SplitStep
from sloserve.runtime.backend import TensorSpec
from sloserve.runtime.clock import Clock
from sloserve.runtime.instances import Tensors
from sloserve.runtime.model_config import ModelConfig
from sloserve.runtime.model_loop import Answer, Done, ModelLoop, ModelStats, Outcome, Refusal, deliver
from sloserve.runtime.pipeline_config import (
    PIPELINE_BACKEND,
    PipelineConfig,
    PipelineStep,
    find_pipeline_config,
    load_pipeline_config,
)

if TYPE_CHECKING:
    from sloserve.runtime.repository import LoadedModel, ModelRepository

log = logging.getLogger("sloserve.runtime")


@dataclass(slots=True)
class _Run:
    """One pipeline request in progress."""

    rid: int
    arrival: float
    deadline: float
    priority: int
    done: Done
    tensors: dict[str, np.ndarray]
    waiting: dict[str, int]
    """Step → parents not yet done."""
    left: int
    """Steps not yet done."""
    step_deadlines: dict[str, float] = field(default_factory=dict)
    in_flight: dict[str, tuple[ModelLoop, int]] = field(default_factory=dict)
    """Step → the member loop running it and the request's id there (what a cancel withdraws)."""


class PipelineLoop:
    """Runs pipeline requests through the member models' loops; see the module docstring."""

    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        model_config: ModelConfig,
        split: DeadlineSplit,
        *,
        clock: Clock,
        member: Callable[[str], ModelLoop | None],
        rewired: Callable[[PipelineStep], str | None] | None = None,
    ) -> None:
        self.name = name
        self.pipeline = config
        self.config = model_config
        self.split = split
        self.clock = clock
        self.member = member
        """Model name → its current loop (None when not loaded): members may be reloaded."""
        self.rewired = rewired
        """Step → why its member, reloaded since the pipeline was built, no longer fits the step's
        tensors (None while it does); None: members are not checked."""
        self.steps: dict[str, PipelineStep] = {s.step_name: s for s in config.steps}
        self.parents = config.parents()
        self.children: dict[str, list[str]] = {n: [] for n in self.steps}
        for n, ps in self.parents.items():
            for p in ps:
                self.children[p].append(n)
        self.outputs = config.pipeline_outputs()
        self.pending: dict[int, _Run] = {}
        self.stats = ModelStats()
        self.step_drops: Counter[str] = Counter()
        """Requests ended at each step (dropped there or refused by the member)."""
        self.views: dict[int, InstanceView] = {}
        """A pipeline has no instances of its own (its members have)."""
        self.profile: ModelProfile | None = None
        """Nor a latency profile (its members have theirs)."""
        self.retiring: set[int] = set()
        self.accepting = False
        self._ids = itertools.count()
        self._closing = False
        self._closed_callbacks: list[Callable[[], None]] = []

    # -- life cycle (what the repository calls) ---------------------------------------------------

    def start(self) -> None:
        self.accepting = True

    @property
    def fault(self) -> str | None:
        """Why the pipeline cannot serve while it accepts requests: a member not loaded or not
        ready (the repository index shows it; a pipeline has no policy of its own to fail)."""
        if not self.accepting:
            return None
        for step in self.steps.values():
            loop = self.member(step.model)
            if loop is None:
                return f"member model {step.model!r} is not loaded"
            if not loop.ready:
                return f"member model {step.model!r} is not ready" + (f": {loop.fault}" if loop.fault else "")
            why = self.rewired(step) if self.rewired is not None else None
            if why is not None:
                return why
        return None

    @property
    def ready(self) -> bool:
        """Accepting, and every member loaded, ready and still fitting its step."""
        return self.accepting and self.fault is None

    def close(self, on_closed: Callable[[], None] | None = None) -> None:
        """Stop accepting; requests in progress still end normally."""
        self.accepting = False
        self._closing = True
        if on_closed is not None:
            self._closed_callbacks.append(on_closed)
        self._maybe_closed()

    def abort(self, reason: DropReason = DropReason.UNAVAILABLE, why: str | None = None) -> None:
        """End every request in progress with ``reason`` (steps still running are ignored)."""
        now = self.clock.now()
        message = why or f"pipeline {self.name!r} is unavailable ({reason.value})"
        for run in list(self.pending.values()):
            self._end(now, run, Refusal(reason, message))
        self._maybe_closed()

    def _maybe_closed(self) -> None:
        if not self._closing or self.pending:
            return
        callbacks, self._closed_callbacks = self._closed_callbacks, []
        for callback in callbacks:
            callback()

    def record_failure(self, reason: str) -> None:
        """Count a request refused before it reached the pipeline (e.g. ``bad_request``)."""
        self.stats.fail_count += 1
        self.stats.failures[reason] += 1

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Split deadlines by these step weights from now on (a deployed plan's budgets)."""
        unknown = sorted(set(weights) - set(self.steps))
        if unknown:
            raise ValueError(f"pipeline {self.name!r} has no step(s) {unknown}")
        self.split = self.split.with_weights(weights)

    # -- requests ---------------------------------------------------------------------------------

    def submit(
        self,
        inputs: Tensors,
        done: Done,
        *,
        budget: float | None = None,
        priority: int = 0,
        payload_bytes: int = 0,
        waited: float = 0.0,
    ) -> int:
        """Called by a front end per request; ``done`` is called exactly once with the outcome.
        ``budget`` counts from the request's arrival, ``waited`` seconds ago (see ``ModelLoop.submit``).
        Returns the request's id (what :meth:`cancel` takes)."""
        now = self.clock.now()
        rid = next(self._ids)
        if not self.accepting:
            self.record_failure(DropReason.UNAVAILABLE.value)
            done(Refusal(DropReason.UNAVAILABLE, f"pipeline {self.name!r} is not accepting requests"))
            return rid
        arrival = now - max(0.0, waited)
        slo = self.config.deadline_budget(budget)
        deadline = arrival + slo if slo is not None else math.inf
        run = _Run(
            rid,
            arrival,
            deadline,
            priority or self.config.default_priority_level,  # 0: the pipeline's default if it sets one
            done,
            dict(inputs),
            {n: len(ps) for n, ps in self.parents.items()},
            len(self.steps),
        )
        self.pending[run.rid] = run
        self.stats.arrivals += 1
        for step, parents in self.parents.items():
            if not parents and run.rid in self.pending:
                self._start(now, run, step)
        return rid

    def cancel(self, rid: int) -> None:
        """Called by a front end when the client of request ``rid`` has gone away: it ends now,
        ``cancelled``, and its steps are withdrawn from their members (those queued there leave the
        queue; those running finish, their answers unused)."""
        run = self.pending.get(rid)
        if run is None:
            return
        message = "the client went away before its answer (cancelled)"
        self._end(self.clock.now(), run, Refusal(DropReason.CANCELLED, message))
        for loop, member_rid in list(run.in_flight.values()):
            loop.cancel(member_rid)

    def _start(self, now: float, run: _Run, step: str) -> None:
        spec = self.steps[step]
        split = self.split
        if split.unreachable(step, now, run.deadline):
            why = f"dropped at step {step!r}: the request can no longer finish before its end-to-end deadline"
            self._drop_at(now, run, step, DropReason.DEADLINE_UNREACHABLE, why)
            return
        parent_deadlines = [run.step_deadlines[p] for p in self.parents[step]]
        deadline = split.step_deadline(step, now, run.arrival, run.deadline, parent_deadlines)
        run.step_deadlines[step] = deadline
        loop = self.member(spec.model)
        if loop is None:
            self._drop_at(
                now, run, step, DropReason.UNAVAILABLE, f"step {step!r}: model {spec.model!r} is not loaded"
            )
            return
        misfit = self.rewired(spec) if self.rewired is not None else None
        if misfit is not None:
            self._drop_at(now, run, step, DropReason.UNAVAILABLE, f"step {step!r}: {misfit}")
            return
        inputs = {member_in: run.tensors[t] for member_in, t in spec.input_map.items()}
        budget = None if math.isinf(deadline) else max(deadline - now, 1e-9)
        member_rid = loop.submit(
            inputs, lambda outcome: self._step_done(run, step, outcome), budget=budget, priority=run.priority
        )
        if member_rid is not None and member_rid in loop.pending:  # not already ended
            run.in_flight[step] = (loop, member_rid)

    def _drop_at(self, now: float, run: _Run, step: str, reason: DropReason, why: str) -> None:
        """End ``run`` at ``step`` with ``reason``; ``why`` is the message, the reason added."""
        self.step_drops[step] += 1
        self._end(now, run, Refusal(reason, f"{why} ({reason.value})"))

    def _step_done(self, run: _Run, step: str, outcome: Outcome) -> None:
        run.in_flight.pop(step, None)
        if run.rid not in self.pending:  # another branch already ended the request
            return
        now = self.clock.now()
        spec = self.steps[step]
        if isinstance(outcome, Refusal):
            self.step_drops[step] += 1
            message = f"step {step!r} (model {spec.model!r}): {outcome.message}"
            self._end(now, run, Refusal(outcome.reason, message))
            return
        missing = sorted(set(spec.output_map) - set(outcome.outputs))
        if missing:  # the member was reloaded with other outputs since the pipeline was built
            why = (
                f"step {step!r}: model {spec.model!r} no longer has output(s) {missing}; reload the pipeline"
            )
            self._drop_at(now, run, step, DropReason.FAILED, why)
            return
        for member_out, tensor in spec.output_map.items():
            run.tensors[tensor] = outcome.outputs[member_out]
        run.left -= 1
        if run.left == 0:
            self._end(now, run, Answer({t: run.tensors[t] for t in self.outputs}))
            return
        for child in self.children[step]:
            run.waiting[child] -= 1
            if run.waiting[child] == 0 and run.rid in self.pending:
                self._start(now, run, child)

    def _end(self, now: float, run: _Run, outcome: Outcome) -> None:
        del self.pending[run.rid]  # KeyError here would mean a request ended twice
        outcome = deliver(run.done, outcome, f"pipeline {self.name}: request {run.rid}")
        duration_ns = int((now - run.arrival) * 1e9)
        stats = self.stats
        if isinstance(outcome, Answer):
            stats.success_count += 1
            stats.success_ns += duration_ns
            if now <= run.deadline:
                stats.slo_met += 1
            else:
                stats.slo_missed += 1
        else:
            stats.fail_count += 1
            stats.fail_ns += duration_ns
            stats.failures[outcome.reason.value] += 1
        self._maybe_closed()


# -- building -------------------------------------------------------------------------------------


def split_steps(config: PipelineConfig, loops: Mapping[str, ModelLoop]) -> list[SplitStep]:
    """The split rule's view of the steps; ``loops`` maps model name → loop.

    When every member has a profile, a step's weight is its expected time: the member's batching
    delay (``max_queue_delay_microseconds``) plus its profiled latency at batch 1; else the split
    is even. The fastest a step can run is its profiled latency at batch 1 (0 without a profile).
    """
    parents = config.parents()
    profiles = {s.step_name: loops[s.model].profile for s in config.steps}
    known = all(p is not None for p in profiles.values())
    steps = []
    for s in config.steps:
        profile = profiles[s.step_name]
        latency = profile.latency(1) if profile is not None else 0.0
        delay = loops[s.model].config.max_queue_delay_microseconds * 1e-6
        weight = latency + delay if known and latency + delay > 0 else 1.0
        steps.append(SplitStep(s.step_name, parents[s.step_name], weight, latency))
    return steps


def _check_step_tensors(config: PipelineConfig, members: Mapping[str, LoadedModel], source: str) -> None:
    """A tensor a step passes to another must have the datatype and a shape the other takes:
    otherwise every request would fail inside the pipeline, blamed on the client."""
    made: dict[str, tuple[int, TensorSpec]] = {}
    for i, step in enumerate(config.steps):
        outs = {s.name: s for s in members[step.model].outputs}
        for member_out, tensor in step.output_map.items():
            made[tensor] = (i, outs[member_out])
    for i, step in enumerate(config.steps):
        ins = {s.name: s for s in members[step.model].inputs}
        for member_in, tensor in step.input_map.items():
            if tensor not in made:
                continue
            j, out = made[tensor]
            want = ins[member_in]
            fits = len(out.shape) == len(want.shape) and all(
                a < 0 or b < 0 or a == b for a, b in zip(out.shape, want.shape, strict=True)
            )
            if out.datatype != want.datatype or not fits:
                raise ConfigError(
                    f"{source}: steps.{i}.input_map: {tensor!r} is {out.datatype} {list(out.shape)} from "
                    f"steps.{j}, but {step.model!r}'s input {member_in!r} takes "
                    f"{want.datatype} {list(want.shape)}"
                )


def _merged_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape a tensor must have to fit both ``a`` and ``b`` (-1: any size), or None if none does."""
    if len(a) != len(b) or any(x >= 0 and y >= 0 and x != y for x, y in zip(a, b, strict=True)):
        return None
    return tuple(x if x >= 0 else y for x, y in zip(a, b, strict=True))


async def build_pipeline(repo: ModelRepository, name: str, directory: Path) -> LoadedModel:
    """Build the pipeline in ``directory`` (members load first when not loaded yet).

    Raises :class:`ConfigError` naming the file and the field for a wiring that does not match
    the members' tensors.
    """
    from sloserve.runtime.repository import LoadedModel, valid_model_name

    config = load_pipeline_config(directory)
    source = str(find_pipeline_config(directory))
    members: dict[str, LoadedModel] = {}
    for i, step in enumerate(config.steps):
        if step.model == name:
            raise ConfigError(f"{source}: steps.{i}.model: a pipeline cannot contain itself")
        if step.model not in members:
            if step.model not in repo.models:
                member_dir = repo.root / step.model
                if not valid_model_name(step.model) or not member_dir.is_dir():
                    raise ConfigError(f"{source}: steps.{i}.model: no model {step.model!r} in {repo.root}")
                if find_pipeline_config(member_dir) is not None:  # loading it could wait on this one
                    raise ConfigError(
                        f"{source}: steps.{i}.model: {step.model!r} is itself a pipeline "
                        "(nesting is not supported)"
                    )
                await repo.load(step.model)
            members[step.model] = repo.models[step.model]
    if any(isinstance(m.loop, PipelineLoop) for m in members.values()):
        raise ConfigError(f"{source}: steps: a member is itself a pipeline (nesting is not supported)")
    specs: dict[str, TensorSpec] = {}
    for i, step in enumerate(config.steps):
        loaded = members[step.model]
        ins = {s.name: s for s in loaded.inputs}
        outs = {s.name: s for s in loaded.outputs}
        unknown = sorted(set(step.input_map) - set(ins))
        if unknown:
            raise ConfigError(f"{source}: steps.{i}.input_map: {step.model!r} has no input(s) {unknown}; "
                              f"it has {sorted(ins)}")  # fmt: skip
        missing = sorted(set(ins) - set(step.input_map))
        if missing:
            raise ConfigError(
                f"{source}: steps.{i}.input_map: input(s) {missing} of {step.model!r} are not mapped"
            )
        unknown = sorted(set(step.output_map) - set(outs))
        if unknown:
            raise ConfigError(f"{source}: steps.{i}.output_map: {step.model!r} has no output(s) {unknown}; "
                              f"it has {sorted(outs)}")  # fmt: skip
        for member_in, tensor in step.input_map.items():
            taken = TensorSpec(tensor, ins[member_in].datatype, ins[member_in].shape)
            first = specs.setdefault(tensor, taken)
            if tensor not in config.pipeline_inputs() or first is taken:
                continue
            merged = _merged_shape(first.shape, taken.shape)  # a pipeline input feeding several steps
            if first.datatype != taken.datatype or merged is None:
                raise ConfigError(
                    f"{source}: steps.{i}.input_map: pipeline input {tensor!r} goes to steps that take "
                    f"{first.datatype} {list(first.shape)} and {taken.datatype} {list(taken.shape)} "
                    f"({step.model!r}'s {member_in!r}): no request fits both"
                )
            specs[tensor] = TensorSpec(tensor, first.datatype, merged)
        for member_out, tensor in step.output_map.items():
            specs[tensor] = TensorSpec(tensor, outs[member_out].datatype, outs[member_out].shape)
    _check_step_tensors(config, members, source)
    caps = {m.config.max_batch_size for m in members.values()}
    if 0 in caps and len(caps) > 1:
        raise ConfigError(f"{source}: steps: members mix batching and non-batching models ({sorted(caps)})")
    model_config = ModelConfig.model_validate(
        {
            "name": name,
            "version": config.version,
            "backend": PIPELINE_BACKEND,
            "model_file": "",
            "max_batch_size": min(caps),
            "priority_levels": config.priority_levels,
            "default_priority_level": config.default_priority_level,
            "slo_ms": config.slo_ms,
            "instance_group": {"count": 0},
        }
    )
    split = DeadlineSplit(split_steps(config, {n: m.loop for n, m in members.items()}), config.deadline_split)

    def member(model: str) -> ModelLoop | None:
        loaded = repo.models.get(model)
        return loaded.loop if loaded is not None else None

    built = {n: (m.inputs, {s.name: s for s in m.outputs}) for n, m in members.items()}

    def rewired(step: PipelineStep) -> str | None:
        loaded = repo.models.get(step.model)
        if loaded is None:
            return None
        inputs, outputs = built[step.model]
        if loaded.inputs != inputs:
            return (
                f"model {step.model!r} was loaded again with other inputs ({_described(loaded.inputs)}) "
                f"than the pipeline was built with ({_described(inputs)}); load the pipeline again"
            )
        now = {s.name: s for s in loaded.outputs}
        changed = sorted(out for out in step.output_map if now.get(out) != outputs[out])
        if changed:
            return (
                f"model {step.model!r} was loaded again with other output(s) {changed} than the "
                "pipeline was built with; load the pipeline again"
            )
        return None

    loop = PipelineLoop(name, config, model_config, split, clock=repo.clock, member=member, rewired=rewired)
    loop.start()
    inputs = tuple(specs[t] for t in config.pipeline_inputs())
    outputs = tuple(specs[t] for t in config.pipeline_outputs())
    # The pipeline loop offers the part of ModelLoop's interface the server and repository use.
    return LoadedModel(name, config.version, model_config, directory, inputs, outputs, cast(ModelLoop, loop))


def _described(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs)


def pipeline_loop(model: LoadedModel) -> PipelineLoop | None:
    """The pipeline loop of a loaded model, or None when it is an ordinary model."""
    loop: object = model.loop
    return loop if isinstance(loop, PipelineLoop) else None
