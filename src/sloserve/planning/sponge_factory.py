"""Registry factory for scaler ``sponge``: the policy with the HiGHS integer program wired in.

It lives in ``planning`` because policies call no solver; the registry names it by import path.
"""

from __future__ import annotations

from typing import Any

from sloserve.planning.sponge_ip import solve_sponge_ip
from sloserve.policies.base import PolicyContext
from sloserve.policies.sponge import SpongeScaler, make_sponge_with


def make_sponge(ctx: PolicyContext, **params: Any) -> SpongeScaler:
    """Scaler ``sponge`` for the model in ``ctx``; see :func:`make_sponge_with` for the params."""
    return make_sponge_with(solve_sponge_ip, ctx, **params)
