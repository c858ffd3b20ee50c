"""Sponge's vertical scaler (scaler ``sponge``), its rate predictor, and the horizontal baseline.

Paper's (Razavi, Ghafouri et al., EuroMLSys 2024): every second, with the predicted load ``λ`` and
the smallest remaining budget ``q`` among recent requests, choose the fewest cores ``c``, then the
smallest batch ``b``, with ``ceil(λ/b) · l(b, c) <= q - margin`` (margin = 10% of the SLO); set the
instance's threads to ``c`` in place and the batcher's cap to ``b``. The queue is EDF and hopeless
requests are dropped early — that is the ``slo`` scheduler's job, which Sponge runs beside this
scaler (the cap it forms batches under is ``b``).

Ours (*spec*): the predictor is the largest arrival rate of the last ``windows`` control windows
(:class:`MaxRatePredictor`); ``q`` is the smallest ``min_remaining_budget`` of the same windows
(the SLO when none arrived); ``l`` is the profile's median latency. With no load predicted (an idle
model) it takes one core and the largest batch whose latency fits ``q - margin``
(:func:`idle_plan`; the paper's rule would give batch 1), so traffic that starts before the next tick
meets one core at its best throughput within the budget, not at its worst. When no ``(c, b)`` meets the
budget (a second's batches cannot finish within ``q`` even on every core, e.g. when the per-item
term ``δ·b`` dominates), the rule is relaxed to what keeps every batch within the budget and the
queue stable: the fewest cores, then the smallest batch, with ``l(b, c) <= q - margin`` and
``ceil(λ/b) · l(b, c) <= 0.75 · interval`` (the instance busy at most 75% of the time by the profile,
:data:`STABLE_BUSY`); only when
that fails too does the instance get every core and the batch minimising ``ceil(λ/b) · l(b, c)``.

The integer program is solved by an injected ``solve`` callable (policies call no solver); the
registry's factory, :func:`sloserve.planning.sponge_factory.make_sponge`, wires in the HiGHS one
from :mod:`sloserve.planning.sponge_ip`. :func:`enumerate_solve` is the exhaustive reference.

The horizontal baseline (:class:`HorizontalScaler`, scaler ``horizontal``): 1-core replicas
started with a cold start (the driver's), the fewest ``n`` with
``(ceil(λ/(b·n)) + 1) · l(b, 1) < q`` for some batch ``b`` (then the smallest such ``b``); idle, the
same :func:`idle_plan` as Sponge's (one replica).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from sloserve.core.cluster import WindowStats
from sloserve.core.decisions import ScaleDecision, SetInstanceCores, SetInstanceCount, SetMaxBatch
from sloserve.core.profiles import ModelProfile, max_batch_within
from sloserve.policies.base import PolicyContext
from sloserve.policies.params import (
    BatchCapParams,
    Count,
    Index,
    Interval,
    Machines,
    Number,
    SloParams,
    parse_params,
)

Solve = Callable[[float, float, ModelProfile, int, int], "tuple[int, int] | None"]
"""``solve(lam, budget, profile, max_cores, max_batch)``: the fewest cores, then the smallest batch,
with ``ceil(lam/b) · profile.latency(b, c) <= budget``; None when no pair does."""


STABLE_BUSY = 0.75
"""Largest share of an interval the instance may be busy, by the profile, under the relaxed rule.

The profile is measured on idle cores; a server's instance shares them with its front end (and here
with the load generator). At 0.9, resnet18 at 250 req/s on the server (``sloserve experiment sponge
--server --server-model resnet18 --server-rate 250``) ran 2 cores at batch cap 2 with a p50 of 25, 42
and 55 ms and 81, 99 and 203 late requests after the first 5 s in three runs; at 0.75 (batch cap 3)
16, 24, 54 and 17 ms and 9, 46, 202 and 0 in four (the machine's speed drifts between runs), for 6.5%
more core-seconds in ``sloserve experiment sponge``."""


ONSET_TICK = 0.25
"""When traffic begins (the first arrival after a window with none), Sponge and horizontal re-plan
this share of their interval later instead of waiting for the next periodic tick, which may be up to
a whole interval away: until then the model runs its idle plan (one core or replica)."""


def sponge_cost(lam: float, batch: int, cores: int, profile: ModelProfile) -> float:
    """Sponge's left-hand side: time to run one second's ``lam`` requests in batches of ``batch``."""
    return math.ceil(lam / batch) * profile.latency(batch, cores, 1)


def every_core(lam: float, profile: ModelProfile, max_cores: int, max_batch: int) -> tuple[int, int]:
    """The last resort when no plan meets the budget: every core, and the batch (the smallest of
    equals) minimising Sponge's cost ``ceil(λ/b) · l(b, c)``."""
    return max_cores, min(range(1, max_batch + 1), key=lambda b: (sponge_cost(lam, b, max_cores, profile), b))


def idle_plan(profile: ModelProfile, budget: float, max_batch: int) -> tuple[int, int]:
    """``(1, b)`` for a model with no load predicted: one core, and the largest batch ``b`` (at
    least 1) whose latency on it fits ``budget``."""
    fits = max_batch_within(profile, budget, 1, tail=False)
    return 1, max(1, min(max_batch, fits))


def enumerate_solve(
    lam: float, budget: float, profile: ModelProfile, max_cores: int, max_batch: int
) -> tuple[int, int] | None:
    """Exhaustive reference for :data:`Solve`: tries cores, then batches, in increasing order."""
    for c in range(1, max_cores + 1):
        for b in range(1, max_batch + 1):
            if sponge_cost(lam, b, c, profile) <= budget:
                return c, b
    return None


class MaxRatePredictor:
    """Predicted rate = the largest arrival rate among the last ``windows`` windows (0 before any),
    each window's rate read from its first arrival on (:attr:`WindowStats.onset_rate`), so the window
    in which traffic begins does not under-read it."""

    def __init__(self, windows: int = 5) -> None:
        if windows < 1:
            raise ValueError(f"windows must be >= 1, got {windows}")
        self._rates: deque[float] = deque(maxlen=windows)

    def observe(self, window: WindowStats) -> float:
        """Called once per control tick; returns the prediction for the next interval."""
        self._rates.append(window.onset_rate)
        return self.predict()

    def predict(self) -> float:
        """The current prediction (req/s)."""
        return max(self._rates, default=0.0)


class RecentBudget:
    """Smallest remaining budget among the requests of the last ``windows`` windows."""

    def __init__(self, default: float, windows: int = 5) -> None:
        self.default = default
        self._budgets: deque[float] = deque(maxlen=windows)

    def observe(self, window: WindowStats) -> float:
        """Called once per control tick; returns ``q`` (``default`` when no request arrived)."""
        self._budgets.append(window.min_remaining_budget)
        finite = [q for q in self._budgets if math.isfinite(q)]
        return min(finite) if finite else self.default


class SpongeScaler:
    """Scaler ``sponge``: in-place cores and batch cap of one instance, every ``interval``."""

    def __init__(
        self,
        model: str,
        profile: ModelProfile,
        slo: float,
        solve: Solve,
        *,
        max_cores: int,
        max_batch: int,
        instance: int = 0,
        interval: float = 1.0,
        margin: float = 0.1,
        windows: int = 5,
    ) -> None:
        if slo <= 0 or max_cores < 1 or max_batch < 1 or interval <= 0:
            raise ValueError("sponge needs slo > 0, max_cores >= 1, max_batch >= 1, interval > 0")
        self.model = model
        self.profile = profile
        self.slo = slo
        self.solve = solve
        self.max_cores = max_cores
        self.max_batch = max_batch
        self.instance = instance
        """Id of the instance it resizes: 0 is a model's first instance on the server (ids count per
        model there) and in a one-model simulation."""
        self.margin = margin * slo
        self.predictor = MaxRatePredictor(windows)
        self.budget = RecentBudget(slo, windows)
        self._interval = interval
        self.cores: int | None = None
        """Cores last set (None before the first tick)."""
        self.batch: int | None = None
        """Batch cap last set (None before the first tick)."""
        self.history: list[tuple[float, float, float, int, int]] = []
        """``(now, λ, q, cores, batch)`` per tick, for timelines."""

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def onset_delay(self) -> float:
        return self._interval * ONSET_TICK

    def choose(self, lam: float, q: float) -> tuple[int, int]:
        """The ``(cores, batch)`` for predicted rate ``lam`` and smallest budget ``q``."""
        if lam <= 0:
            return idle_plan(self.profile, q - self.margin, self.max_batch)
        found = self.solve(lam, q - self.margin, self.profile, self.max_cores, self.max_batch)
        if found is not None:
            return found
        for c in range(1, self.max_cores + 1):  # relaxed: batches fit the budget, queue stays stable
            for b in range(1, self.max_batch + 1):
                lat = self.profile.latency(b, c, 1)
                if lat <= q - self.margin and math.ceil(lam / b) * lat <= STABLE_BUSY * self._interval:
                    return c, b
        return every_core(lam, self.profile, self.max_cores, self.max_batch)

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        """Called every ``interval``: re-plans and returns the changes (cores first, then the cap)."""
        lam = self.predictor.observe(window)
        q = self.budget.observe(window)
        cores, batch = self.choose(lam, q)
        self.history.append((now, lam, q, cores, batch))
        out: list[ScaleDecision] = []
        if cores != self.cores:
            out.append(SetInstanceCores(self.instance, cores))
        if batch != self.batch:
            out.append(SetMaxBatch(self.model, batch))
        self.cores, self.batch = cores, batch
        return out


def horizontal_replicas(
    lam: float, budget: float, profile: ModelProfile, max_replicas: int, max_batch: int
) -> tuple[int, int] | None:
    """Fewest 1-core replicas ``n``, then smallest ``b``, with ``(ceil(λ/(b·n)) + 1)·l(b, 1) < budget``."""
    for n in range(1, max_replicas + 1):
        for b in range(1, max_batch + 1):
            if (math.ceil(lam / (b * n)) + 1) * profile.latency(b, 1, 1) < budget:
                return n, b
    return None


class HorizontalScaler:
    """Scaler ``horizontal``: Sponge's baseline, 1-core replicas added with a cold start."""

    def __init__(
        self,
        model: str,
        profile: ModelProfile,
        slo: float,
        *,
        max_replicas: int,
        max_batch: int,
        interval: float = 1.0,
        windows: int = 5,
    ) -> None:
        if slo <= 0 or max_replicas < 1 or max_batch < 1 or interval <= 0:
            raise ValueError("horizontal needs slo > 0, max_replicas >= 1, max_batch >= 1, interval > 0")
        self.model = model
        self.profile = profile
        self.max_replicas = max_replicas
        self.max_batch = max_batch
        self.predictor = MaxRatePredictor(windows)
        self.budget = RecentBudget(slo, windows)
        self._interval = interval
        self.replicas: int | None = None
        self.batch: int | None = None
        self.history: list[tuple[float, float, float, int, int]] = []
        """``(now, λ, q, replicas, batch)`` per tick."""

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def onset_delay(self) -> float:
        return self._interval * ONSET_TICK

    def choose(self, lam: float, q: float) -> tuple[int, int]:
        """``(replicas, batch)``; every replica allowed and batch 1..max at its best when none fits."""
        if lam <= 0:
            return idle_plan(self.profile, q, self.max_batch)
        found = horizontal_replicas(lam, q, self.profile, self.max_replicas, self.max_batch)
        if found is not None:
            return found
        n = self.max_replicas
        return n, min(
            range(1, self.max_batch + 1),
            key=lambda b: ((math.ceil(lam / (b * n)) + 1) * self.profile.latency(b, 1, 1), b),
        )

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        """Called every ``interval``: returns the replica count and batch cap when they change."""
        lam = self.predictor.observe(window)
        q = self.budget.observe(window)
        n, b = self.choose(lam, q)
        self.history.append((now, lam, q, n, b))
        out: list[ScaleDecision] = []
        if n != self.replicas:
            out.append(SetInstanceCount(self.model, n))
        if b != self.batch:
            out.append(SetMaxBatch(self.model, b))
        self.replicas, self.batch = n, b
        return out


class SpongeScalerParams(SloParams, BatchCapParams):
    """``max_cores`` (16), ``max_batch_size`` (the model's), ``instance`` (0: the id of the instance
    it resizes), ``interval_s`` (1), ``margin`` (0.1: the share of the SLO kept back), ``windows``
    (5), ``slo_ms`` (the model's)."""

    max_cores: Machines = 16
    instance: Index = 0
    interval_s: Interval = 1.0
    margin: Annotated[float, Number, Field(ge=0, lt=1)] = 0.1
    windows: Count = 5


class HorizontalParams(SloParams, BatchCapParams):
    """``max_replicas`` (16), ``max_batch_size`` (the model's), ``interval_s`` (1), ``windows`` (5),
    ``slo_ms`` (the model's)."""

    max_replicas: Machines = 16
    interval_s: Interval = 1.0
    windows: Count = 5


def _profile_of(ctx: PolicyContext, name: str) -> ModelProfile:
    if ctx.profile is None:
        raise ValueError(f"model {ctx.model!r}: scaler {name!r} needs a latency profile")
    return ctx.profile


def make_sponge_with(solve: Solve, ctx: PolicyContext, **params: Any) -> SpongeScaler:
    """Build a :class:`SpongeScaler` with ``solve`` (:class:`SpongeScalerParams`)."""
    p = parse_params(SpongeScalerParams, params, "sponge")
    return SpongeScaler(
        ctx.model,
        _profile_of(ctx, "sponge"),
        p.slo(ctx),
        solve,
        max_cores=p.max_cores,
        max_batch=p.batch_cap(ctx),
        instance=p.instance,
        interval=p.interval_s,
        margin=p.margin,
        windows=p.windows,
    )


def make_horizontal(ctx: PolicyContext, **params: Any) -> HorizontalScaler:
    """Registry factory for ``horizontal`` (:class:`HorizontalParams`)."""
    p = parse_params(HorizontalParams, params, "horizontal")
    return HorizontalScaler(
        ctx.model,
        _profile_of(ctx, "horizontal"),
        p.slo(ctx),
        max_replicas=p.max_replicas,
        max_batch=p.batch_cap(ctx),
        interval=p.interval_s,
        windows=p.windows,
    )
