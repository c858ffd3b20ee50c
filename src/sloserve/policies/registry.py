"""Policies by name, as configs name them.

Each table maps a name to ``"module:factory"``; the module is imported on first use, so adding a
policy is one line here. A user may also give an import path ``"package.module:factory"``
directly. Scheduler and scaler factories take ``(ctx: PolicyContext, **params)``; dispatcher
factories take no arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from sloserve.policies.base import Dispatcher, PolicyContext, Scaler, Scheduler

SCHEDULERS: dict[str, str] = {
    "triton": "sloserve.policies.triton:make_triton",
    "ray": "sloserve.policies.ray_batch:make_ray",
    "fixed": "sloserve.policies.fixed:make_fixed",
    "qos_heuristic": "sloserve.policies.qos_scheduling:make_qos_heuristic",
    "qos_random": "sloserve.policies.qos_scheduling:make_qos_random",
    "qos_triton": "sloserve.policies.qos_scheduling:make_qos_triton",
    "qos_rl": "sloserve.rl.scheduler:make_rl_scheduler",
    "slo": "sloserve.policies.slo_batcher:make_slo_batcher",
    "cofb": "sloserve.policies.cofb:make_cofb",
    "dvabatch": "sloserve.policies.dvabatch:make_dvabatch",
    "harpagon": "sloserve.policies.harpagon_dispatch:make_harpagon",
    "plan_round_robin": "sloserve.policies.harpagon_dispatch:make_plan_round_robin",
}
"""Scheduler (queue + batcher) names."""

DISPATCHERS: dict[str, str] = {
    "round_robin": "sloserve.policies.dispatch:RoundRobinDispatcher",
    "least_loaded": "sloserve.policies.dispatch:LeastLoadedDispatcher",
}
"""Dispatcher names."""

SCALERS: dict[str, str] = {
    "aimd": "sloserve.policies.aimd:make_aimd",
    "sponge": "sloserve.planning.sponge_factory:make_sponge",
    "horizontal": "sloserve.policies.sponge:make_horizontal",
    "dnnscaler": "sloserve.policies.dnnscaler:make_dnnscaler",
    "dnnscaler_batch": "sloserve.policies.dnnscaler:make_dnnscaler_batch",
    "dnnscaler_mt": "sloserve.policies.dnnscaler:make_dnnscaler_mt",
}
"""Scaler names."""

SCHEDULER_METHODS = ("submit", "decide", "on_complete", "drain", "cancel", "set_max_batch", "__len__")
"""What a scheduler a factory makes must have (:class:`~sloserve.policies.base.Scheduler`)."""


def _resolve(kind: str, table: Mapping[str, str], name: str) -> Callable[..., Any]:
    target = table.get(name, name if ":" in name else None)
    if target is None:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return cast(Callable[..., Any], getattr(module, attr))
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{kind} {name!r}: cannot load {target!r}: {exc}") from None


def _call(kind: str, name: str, factory: Callable[..., Any], *args: Any, **params: Any) -> Any:
    try:
        return factory(*args, **params)
    except TypeError as exc:
        raise ValueError(f"{kind} {name!r}: bad parameters {sorted(params)}: {exc}") from None


def make_scheduler(name: str, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> Scheduler:
    """Build the scheduler called ``name`` for the model in ``ctx``; ``ValueError`` names bad input."""
    factory = _resolve("scheduler", SCHEDULERS, name)
    scheduler = _call("scheduler", name, factory, ctx, **dict(params or {}))
    missing = [m for m in SCHEDULER_METHODS if not callable(getattr(scheduler, m, None))]
    if missing:  # a user's factory: refused at load, not when the method is first needed
        raise ValueError(
            f"scheduler {name!r}: {type(scheduler).__name__} lacks {', '.join(missing)} "
            "(see sloserve.policies.base.Scheduler)"
        )
    return cast(Scheduler, scheduler)


def make_dispatcher(name: str) -> Dispatcher:
    """Build the dispatcher called ``name``."""
    return cast(Dispatcher, _call("dispatcher", name, _resolve("dispatcher", DISPATCHERS, name)))


def make_scaler(name: str, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> Scaler:
    """Build the scaler called ``name`` for the model in ``ctx``."""
    factory = _resolve("scaler", SCALERS, name)
    return cast(Scaler, _call("scaler", name, factory, ctx, **dict(params or {})))
