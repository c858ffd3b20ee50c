"""Deploying a Harpagon plan on the running server (``sloserve serve --plan PLAN``).

For each module of the plan, the loaded model it names (``model``) gets:

- the plan's dispatcher as its scheduler (``harpagon``: batch-aware, or ``plan_round_robin``),
  built through the policy registry with the module's tuples (batch sizes, counts, rates, dummy
  rates, execution times) and its latency budget;
- one instance per planned machine (the sum of the tuples' counts), each with the model's
  configured threads;

and every pipeline with a step of the module's name (else, a step running the module's model)
splits deadlines by the plan's budgets from then on.

Hardware: this server runs instances on the local CPU and names that hardware ``"cpu"`` (the
name :class:`~sloserve.core.cluster.InstanceView` carries and the dispatchers match tuples by),
with ``os.cpu_count()`` cores. A plan whose tuples need any other hardware is refused before the
server starts listening, with a message naming the hardware and the modules. The plan is applied
after the models are loaded and before the server reports ready, so no request is queued under
the models' own schedulers when the dispatchers are swapped in; a planned model (or a pipeline)
that a repository load builds again gets the plan again before it takes requests (a load the plan
cannot run on fails, and the model already served stays). A model with a ``scaler`` in its config
is refused (it would change what the plan fixed), and the model's configuration document names the
plan's dispatcher.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from sloserve.core.config import ConfigError
from sloserve.planning.plan import ModulePlan, Plan
from sloserve.planning.plan_io import load_plan
from sloserve.policies.registry import make_scheduler
from sloserve.runtime.model_config import MAX_INSTANCES, PolicyRef
from sloserve.runtime.pipeline import PipelineLoop, pipeline_loop
from sloserve.runtime.repository import LoadedModel, ModelRepository

log = logging.getLogger("sloserve.runtime")

LOCAL_HARDWARE = "cpu"
"""The name of this machine's hardware type in plans (instances run on the local CPU)."""

DISPATCHERS = {"harpagon": "harpagon", "round_robin": "plan_round_robin"}
"""A plan's dispatch policy → the scheduler's registry name."""


def local_hardware() -> tuple[str, int]:
    """``("cpu", os.cpu_count())``: what plans for this machine must name, and its cores."""
    return LOCAL_HARDWARE, os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class DeployedModule:
    """What was applied for one module."""

    module: str
    model: str
    dispatcher: str
    instances: int
    batches: tuple[int, ...]
    budget: float


def read_plan(path: str | Path) -> Plan:
    """Load a plan file and check that this machine can run it; :class:`ConfigError` otherwise."""
    plan = load_plan(path)
    check_plan(plan, str(path))
    return plan


def check_plan(plan: Plan, source: str) -> None:
    """Refuse (``ConfigError``) an infeasible plan, one with shared nodes, or one for hardware this
    machine does not have."""
    if not plan.feasible:
        raise ConfigError(f"{source}: feasible: the plan is infeasible ({plan.reason}); nothing to deploy")
    if plan.shared:
        raise ConfigError(f"{source}: shared: plans with shared duty-cycle nodes cannot be deployed")
    name, cores = local_hardware()
    wanted: dict[str, list[str]] = defaultdict(list)
    for m in plan.modules:
        for t in m.tuples:
            if t.hardware != name and m.name not in wanted[t.hardware]:
                wanted[t.hardware].append(m.name)
    if wanted:
        needs = "; ".join(f"{hw!r} (modules {mods})" for hw, mods in sorted(wanted.items()))
        raise ConfigError(
            f"{source}: modules.tuples.hardware: the plan needs hardware {needs}, but this machine "
            f"only has {name!r} ({cores} cores, os.cpu_count()); make the plan with a hardware "
            f"catalogue naming this machine {name!r}"
        )
    models: dict[str, str] = {}
    for m in plan.modules:
        if m.model in models:
            raise ConfigError(
                f"{source}: modules: modules {models[m.model]!r} and {m.name!r} both run model "
                f"{m.model!r}; one loaded model serves one module"
            )
        models[m.model] = m.name


def apply_plan(repo: ModelRepository, plan: Plan, source: str = "<plan>") -> list[DeployedModule]:
    """Apply ``plan`` to the loaded models (see the module docstring); called before the server
    is ready. Raises :class:`ConfigError` when a module's model is not loaded or cannot run as
    planned. From then on the repository re-applies it to each planned model (or pipeline) a load
    builds again (:func:`reapply_plan`), so a reload does not drop the plan in silence."""
    check_plan(plan, source)
    deployed = []
    for i, module in enumerate(plan.modules):
        loaded = repo.models.get(module.model)
        if loaded is None:
            loaded_names = sorted(repo.models)
            raise ConfigError(
                f"{source}: modules.{i}.model: no loaded model {module.model!r} (loaded: {loaded_names})"
            )
        deployed.append(_apply_module(loaded, module, f"{source}: modules.{i}"))
    for model in repo.models.values():
        pipeline = pipeline_loop(model)
        if pipeline is not None:
            _split_by_budgets(pipeline, plan)
    repo.prepare = lambda model: reapply_plan(model, plan, source)
    return deployed


def reapply_plan(model: LoadedModel, plan: Plan, source: str) -> None:
    """Called by the repository with each model a load builds once ``plan`` is deployed, before
    the model takes requests: a planned model gets its module again, a pipeline the plan's budgets;
    :class:`ConfigError` (the load fails) when the reloaded model cannot run as planned."""
    pipeline = pipeline_loop(model)
    if pipeline is not None:
        _split_by_budgets(pipeline, plan)
        return
    for i, module in enumerate(plan.modules):
        if module.model == model.name:
            _apply_module(model, module, f"{source}: modules.{i}")


def _apply_module(loaded: LoadedModel, module: ModulePlan, where: str) -> DeployedModule:
    """Give ``loaded`` the module's dispatcher, instances and budget (see the module docstring)."""
    if pipeline_loop(loaded) is not None:
        raise ConfigError(
            f"{where}.model: {module.model!r} is a pipeline; a plan module names a model it runs (a "
            "pipeline's steps take the plan's budgets by themselves)"
        )
    config, loop = loaded.config, loaded.loop
    if config.scaler is not None:
        raise ConfigError(
            f"{where}.model: {module.model!r} has a scaler ({config.scaler.name}) in its config, which "
            "would change the planned instances and batches; remove it to deploy the plan"
        )
    batches = tuple(t.batch for t in module.tuples)
    if max(batches, default=1) > config.batch_cap:
        raise ConfigError(
            f"{where}.tuples.batch: batch {max(batches)} is beyond {module.model!r}'s "
            f"max_batch_size {config.max_batch_size}"
        )
    if len(loop.scheduler):
        raise ConfigError(f"{where}: model {module.model!r} has queued requests; deploy plans at start")
    instances = sum(t.count for t in module.tuples)
    if instances > MAX_INSTANCES:
        raise ConfigError(
            f"{where}.tuples.count: {instances} instances of {module.model!r}; one server runs at most "
            f"{MAX_INSTANCES} of a model (instance_group.count's limit)"
        )
    params = {
        "budget_ms": module.budget * 1e3,
        "tuples": [
            {"hardware": t.hardware, "batch": t.batch, "count": t.count, "rate": t.rate,
             "dummy_rate": t.dummy_rate, "exec_ms": t.exec_time * 1e3, "wait_ms": t.wait * 1e3}
            for t in module.tuples
        ],
    }  # fmt: skip
    ctx = config.policy_context(module.model, loop.profile, module.budget)
    name = DISPATCHERS[module.dispatch]
    loop.scheduler = make_scheduler(name, ctx, params)
    loop.set_instance_count(instances)
    # what the model's configuration document reports: the plan's dispatcher, not the file's scheduler
    loaded.config = config.model_copy(update={"scheduler": PolicyRef(name=name, params=params)})
    log.info(
        "plan module deployed",
        extra={"plan_module": module.name, "model": module.model, "dispatcher": name,
               "instances": instances, "batches": list(batches), "budget_ms": module.budget * 1e3},
    )  # fmt: skip
    return DeployedModule(module.name, module.model, name, instances, batches, module.budget)


def _split_by_budgets(pipeline: PipelineLoop, plan: Plan) -> None:
    """Give the pipeline's steps the plan's budgets as split weights (by step name, else by model)."""
    by_name = {m.name: m.budget for m in plan.modules}
    by_model = {m.model: m.budget for m in plan.modules}
    weights = {}
    for step, spec in pipeline.steps.items():
        budget = by_name.get(step, by_model.get(spec.model))
        if budget is not None:
            weights[step] = budget
    if weights:
        pipeline.set_weights(weights)
        log.info("pipeline split by plan budgets", extra={"pipeline": pipeline.name, "weights": weights})
