"""What a config's ``params`` may hold for each registered policy, checked before the policy is built.

Every registry factory first passes its ``params`` through :func:`parse_params` with its schema (a
:class:`PolicyParams` subclass beside the factory). A wrong name, type or value is then refused
while the config is loaded — a :class:`~sloserve.core.config.ConfigError` that names the policy and
each bad field — instead of failing on the first request it would schedule. Schemas forbid unknown
names, NaN and infinities; a number must be given as one (``true`` is not a batch size, nor is ``"8"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, PrivateAttr

from sloserve.core.config import ConfigError, StrictModel, a_number, validate
from sloserve.policies.base import PolicyContext

Number = BeforeValidator(a_number)
"""The check :class:`~sloserve.core.config.StrictModel` gives every number field, for numbers
inside a field (a list's items)."""
Count = Annotated[int, Number, Field(ge=1)]
"""A whole number of at least 1 (batch sizes, windows, cores, replicas)."""
MACHINE_LIMIT = 1024
"""Most cores, instances or replicas a policy may plan over (its search enumerates them)."""
Machines = Annotated[int, Number, Field(ge=1, le=MACHINE_LIMIT)]
"""A count of cores, instances or replicas: 1 to :data:`MACHINE_LIMIT`."""
Index = Annotated[int, Number, Field(ge=0)]
"""A whole number of at least 0."""
Positive = Annotated[float, Number, Field(gt=0)]
"""A finite number above 0 (times, rates)."""
NonNegative = Annotated[float, Number, Field(ge=0)]
"""A finite number of at least 0 (delays, margins)."""
MAX_SECONDS = 3600.0
"""Longest wait, delay or interval a policy may be given (an hour; a longer one is a typo)."""
Interval = Annotated[float, Number, Field(gt=0, le=MAX_SECONDS)]
"""Seconds between a policy's steps, or a window it looks back over: above 0, at most an hour."""
Wait = Annotated[float, Number, Field(ge=0, le=MAX_SECONDS)]
"""Seconds a policy holds requests or settles: 0 to an hour."""
Fraction = Annotated[float, Number, Field(gt=0, lt=1)]
"""A number strictly between 0 and 1."""
Slowdown = Annotated[list[Annotated[float, Number, Field(ge=1)]], Field(min_length=1)]
"""``s(k)`` for k = 1, 2, ...: each at least 1 (a co-located batch never runs faster than alone)."""


class PolicyParams(StrictModel):
    """Base of a policy's parameter schema: unknown names, NaN and infinities are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _policy: str = PrivateAttr("")
    """The policy :func:`parse_params` checked them for (the messages below name it)."""


class SloParams(PolicyParams):
    """``slo_ms``: the SLO the policy plans for (default: the model's)."""

    slo_ms: Positive | None = None

    def slo_or_none(self, ctx: PolicyContext) -> float | None:
        """The SLO in seconds: ``slo_ms``, else the model's (None when neither is set)."""
        return self.slo_ms * 1e-3 if self.slo_ms is not None else ctx.slo

    def slo(self, ctx: PolicyContext) -> float:
        """The SLO in seconds, for a policy that needs one; ValueError when neither is set."""
        slo = self.slo_or_none(ctx)
        if slo is None:
            raise ValueError(f"model {ctx.model!r}: {self._policy!r} needs an SLO (slo_ms)")
        return slo


class BatchCapParams(PolicyParams):
    """``max_batch_size``: the policy's batch cap (default: the model's)."""

    max_batch_size: Count | None = None

    def batch_cap(self, ctx: PolicyContext, default: int | None = None) -> int:
        """``max_batch_size``, else ``default`` (the model's largest batch when None); ConfigError
        when ``max_batch_size`` is above the model's."""
        if self.max_batch_size is None:
            return ctx.max_batch if default is None else default
        if self.max_batch_size > ctx.max_batch:
            raise ConfigError(
                f"{self._policy!r} params: max_batch_size: {self.max_batch_size} is above the largest batch "
                f"of model {ctx.model!r} ({ctx.max_batch})"
            )
        return self.max_batch_size


P = TypeVar("P", bound=PolicyParams)


def parse_params(schema: type[P], params: Mapping[str, Any], policy: str) -> P:
    """``params`` validated against ``schema``; ConfigError naming ``policy`` and each bad field."""
    parsed = validate(schema, dict(params), f"{policy!r} params")
    parsed._policy = policy
    return parsed
