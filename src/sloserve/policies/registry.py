"""Policies by name, as configs name them.

Each table maps a name to ``"module:factory"``; the module is imported on first use, so adding a
policy is one line here. A user may also give an import path ``"package.module:factory"``
directly. Scheduler and scaler factories take ``(ctx: PolicyContext, **params)``; dispatcher
factories take no arguments.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
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

SCALER_ATTRIBUTES = ("interval", "onset_delay")
SCALER_METHODS = ("on_tick",)
"""What a scaler a factory makes must have (:class:`~sloserve.policies.base.Scaler`): two values
(read by the driver) and a method."""

_MISSING = object()


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
    """``factory(*args, **params)``; a call its signature refuses is "bad parameters", a
    ``TypeError`` raised inside the factory is the factory's own error (both ``ValueError``)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to read (some builtins): the call alone tells
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **params)
        except TypeError as exc:
            raise ValueError(f"{kind} {name!r}: bad parameters {sorted(params)}: {exc}") from None
    try:
        return factory(*args, **params)
    except TypeError as exc:
        if signature is None and exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            raise ValueError(f"{kind} {name!r}: bad parameters {sorted(params)}: {exc}") from None
        raise ValueError(
            f"{kind} {name!r}: its factory {_qualname(factory)} raised TypeError: {exc} "
            "(a bug in the factory, not in the parameters)"
        ) from exc


def _qualname(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None) or type(factory).__qualname__
    return f"{module}:{qualname}" if module else qualname


def _lacking(policy: Any, methods: tuple[str, ...], attributes: tuple[str, ...] = ()) -> list[str]:
    """The names of ``methods`` that ``policy`` lacks or has as no callable, then of ``attributes``
    it lacks (a property that raises counts as lacking)."""
    missing = [m for m in methods if not callable(getattr(policy, m, None))]
    for attribute in attributes:
        try:
            value = getattr(policy, attribute, _MISSING)
        except Exception:
            value = _MISSING
        if value is _MISSING:
            missing.append(attribute)
    return missing


def make_scheduler(name: str, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> Scheduler:
    """Build the scheduler called ``name`` for the model in ``ctx``; ``ValueError`` names bad input."""
    factory = _resolve("scheduler", SCHEDULERS, name)
    scheduler = _call("scheduler", name, factory, ctx, **dict(params or {}))
    missing = _lacking(scheduler, SCHEDULER_METHODS)
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
    scaler = _call("scaler", name, factory, ctx, **dict(params or {}))
    missing = _lacking(scaler, SCALER_METHODS, SCALER_ATTRIBUTES)
    if missing:  # a user's factory: refused at load, not when the first request or tick needs it
        raise ValueError(
            f"scaler {name!r}: {type(scaler).__name__} lacks {', '.join(missing)} "
            "(see sloserve.policies.base.Scaler)"
        )
    interval, onset = scaler.interval, scaler.onset_delay
    if not _seconds(interval) or interval <= 0:
        raise ValueError(f"scaler {name!r}: interval {interval!r} is not a positive number of seconds")
    if onset is not None and not _seconds(onset):
        raise ValueError(f"scaler {name!r}: onset_delay {onset!r} is neither None nor a number of seconds")
    return cast(Scaler, scaler)


def _seconds(value: Any) -> bool:
    """Whether ``value`` is a finite number of seconds, not negative."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= float(value) < math.inf
