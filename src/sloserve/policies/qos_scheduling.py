"""QoS schedulers for a heterogeneous pool: each decision picks (variant, batch) for a free server.

A dispatched batch carries the chosen variant number in ``batch.meta["variant"]``; the driver runs
that variant's profile on the server's hardware. Paper (Fang et al., CIKM 2017): decide when a server
frees; maximise total utility. Ours (*spec*, SEEDS §5): the heuristic's rule below, dropping requests
that can no longer earn any utility, serving free servers fastest first, and the two baselines.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Dispatch, Drop, DropReason
from sloserve.core.request import Batch, Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.batching import QueueScheduler
from sloserve.policies.params import Index, Interval, PolicyParams, Positive, parse_params
from sloserve.policies.qos import QosSpec, RateEstimator, qos_spec_from_params
from sloserve.policies.queues import FifoQueue, pop_rows
from sloserve.policies.triton import TritonDynamicBatcher, TritonParams

VARIANT_KEY = "variant"
"""Key of ``Batch.meta`` holding the variant number a QoS scheduler chose."""


def batch_variant(batch: Batch) -> int:
    """The variant number a batch was dispatched with (0 when the scheduler did not say)."""
    return int(batch.meta.get(VARIANT_KEY, 0))


class QosScheduler(QueueScheduler):
    """Base of the QoS schedulers: a FIFO queue, a rate estimate, and one choice per free server.

    Admission, the batch cap, completions and draining are :class:`QueueScheduler`'s. Subclasses
    implement :meth:`choose`. ``decide`` first drops requests that cannot finish before the
    utility cutoff even alone on the fastest variant and server, then offers each free server (fastest
    first) to :meth:`choose` while requests wait.
    """

    def __init__(self, spec: QosSpec, *, rate_tau: float = 1.0, max_queue_size: int = 0) -> None:
        super().__init__(spec.batch_sizes[-1], FifoQueue(), max_queue_size=max_queue_size)
        self.spec = spec
        self.rate = RateEstimator(rate_tau)
        self._best = spec.by_accuracy()[0]
        fastest = min(p.latency(1) for p in spec.profiles.profiles.values())
        self._hopeless_age = spec.utility.cutoff - fastest
        """Requests older than this cannot earn utility any more."""
        self.planned_busy: dict[int, float] = {}
        """Busy-until times of servers given a batch earlier in the current ``decide`` call."""
        self._latency: dict[tuple[int, str, int], float] = {}
        self._capacity: dict[tuple[int, int, tuple[str, ...]], float] = {}

    # -- Scheduler protocol -------------------------------------------------------------------
    def submit(self, now: float, request: Request) -> Drop | None:
        """Called on arrival: every arrival counts towards the rate estimate, admitted or not."""
        self.rate.observe(now)
        return super().submit(now, request)

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        out: list[Decision] = []
        self.drop_hopeless(now, out)
        self.planned_busy = {}
        free = sorted((i for i in instances if i.free), key=lambda i: (self.speed_key(i), i.id))
        for inst in free:
            if not len(self.queue):
                break
            choice = self.choose(now, inst, instances)
            if choice is None:
                continue
            variant, batch = choice
            picked = Batch(
                tuple(pop_rows(self.queue, min(batch, self.max_batch))), meta={VARIANT_KEY: float(variant)}
            )
            out.append(Dispatch(picked, inst.id))
            self.planned_busy[inst.id] = now + self.latency(variant, inst.hardware, picked.rows)
        return out

    # -- for subclasses -----------------------------------------------------------------------
    def choose(
        self, now: float, instance: InstanceView, instances: Sequence[InstanceView]
    ) -> tuple[int, int] | None:
        """Called for a free ``instance`` while requests wait: ``(variant, batch size)`` to run on it
        now (the batch is cut to the queue length), or None to leave it idle until the next event."""
        raise NotImplementedError

    def latency(self, variant: int, hardware: str, batch: int) -> float:
        """``spec.latency``, memoised (profiles do not change during a run)."""
        key = (variant, hardware, batch)
        lat = self._latency.get(key)
        if lat is None:
            lat = self._latency[key] = self.spec.latency(variant, hardware, batch)
        return lat

    def capacity(self, variant: int, batch: int, instances: Sequence[InstanceView]) -> float:
        """Requests per second ``instances`` serve running ``variant`` at ``batch`` (memoised)."""
        key = (variant, batch, tuple(i.hardware for i in instances))
        cap = self._capacity.get(key)
        if cap is None:
            cap = self._capacity[key] = sum(batch / self.latency(variant, h, batch) for h in key[2])
        return cap

    def speed_key(self, instance: InstanceView) -> float:
        """Sort key of free servers: the most accurate variant's batch-1 latency on its hardware."""
        return self.latency(self._best, instance.hardware, 1)

    def busy_until(self, instance: InstanceView) -> float:
        """When ``instance`` is predicted to be free, counting batches given in this ``decide`` call."""
        return self.planned_busy.get(instance.id, instance.busy_until)

    def oldest_ages(self, now: float, k: int) -> list[float]:
        """Waiting times of the ``k`` longest-waiting requests (fewer when the queue is shorter)."""
        return [now - r.arrival for r in itertools.islice(iter(self.queue), k)]

    def drop_hopeless(self, now: float, out: list[Decision]) -> None:
        """Drop queued requests that can no longer earn utility (their value would be 0 anyway)."""
        queue = self.queue
        while len(queue) and now - queue.peek().arrival >= self._hopeless_age:
            out.append(Drop(queue.pop(), DropReason.DEADLINE_UNREACHABLE))


class QosHeuristic(QosScheduler):
    """SEEDS §5 heuristic: the most accurate variant, with the smallest batch that keeps up with the
    estimated arrival rate, whose run still meets the target delay for the oldest request.

    "Keeps up": every server of the pool running that variant at that batch size would serve at
    least ``headroom × rate`` requests per second. When no variant meets the target (a backlog), the
    variant with the highest throughput on this server runs the largest batch, to drain it (ours).
    """

    def __init__(
        self, spec: QosSpec, *, headroom: float = 1.0, rate_tau: float = 1.0, max_queue_size: int = 0
    ):
        super().__init__(spec, rate_tau=rate_tau, max_queue_size=max_queue_size)
        if headroom <= 0:
            raise ValueError(f"headroom must be > 0, got {headroom}")
        self.headroom = headroom

    def choose(
        self, now: float, instance: InstanceView, instances: Sequence[InstanceView]
    ) -> tuple[int, int] | None:
        return heuristic_choice(self, now, instance, instances, self.headroom)


def keeping_up_batch(
    sched: QosScheduler, variant: int, rate: float, instances: Sequence[InstanceView], headroom: float = 1.0
) -> int | None:
    """Smallest batch bucket at which the pool's throughput with ``variant`` reaches ``headroom × rate``."""
    for b in sched.spec.batch_sizes:
        if b > sched.max_batch:
            break
        if sched.capacity(variant, b, instances) >= headroom * rate:
            return b
    return None


def heuristic_choice(
    sched: QosScheduler,
    now: float,
    instance: InstanceView,
    instances: Sequence[InstanceView],
    headroom: float = 1.0,
) -> tuple[int, int]:
    """The heuristic's ``(variant, batch)`` for free ``instance`` given ``sched``'s queue and rate
    (the queue must not be empty); the RL features also show it to the policy network."""
    spec = sched.spec
    rate = sched.rate.rate(now)
    age = now - sched.queue.oldest_arrival()
    waiting = len(sched.queue)
    for v in spec.by_accuracy():
        b = keeping_up_batch(sched, v, rate, instances, headroom)
        if (
            b is not None
            and age + sched.latency(v, instance.hardware, min(b, waiting)) <= spec.utility.target
        ):
            return v, b
    largest = max(b for b in spec.batch_sizes if b <= sched.max_batch)
    fastest = min(
        range(len(spec.variants)),
        key=lambda v: sched.latency(v, instance.hardware, min(largest, waiting)) / min(largest, waiting),
    )
    return fastest, largest


class RandomQos(QosScheduler):
    """Baseline: a uniformly random variant and batch bucket at each decision (seeded)."""

    def __init__(self, spec: QosSpec, *, seed: int = 0, rate_tau: float = 1.0, max_queue_size: int = 0):
        super().__init__(spec, rate_tau=rate_tau, max_queue_size=max_queue_size)
        self.rng = np.random.default_rng(seed)

    def choose(
        self, now: float, instance: InstanceView, instances: Sequence[InstanceView]
    ) -> tuple[int, int] | None:
        v = int(self.rng.integers(len(self.spec.variants)))
        allowed = [b for b in self.spec.batch_sizes if b <= self.max_batch]
        return v, int(allowed[int(self.rng.integers(len(allowed)))])


class TritonQos(TritonDynamicBatcher):
    """Baseline: Triton's dynamic batcher serving one fixed variant on every server of the pool."""

    def __init__(self, variant: int, max_batch: int, **triton: Any) -> None:
        super().__init__(max_batch, **triton)
        self.variant = variant

    def next_batch(self, now: float, instance: InstanceView, drops: list[Decision]) -> Batch | float | None:
        step = super().next_batch(now, instance, drops)
        if isinstance(step, Batch):
            return Batch(step.requests, step.padding, meta={VARIANT_KEY: float(self.variant)})
        return step


# ---------------------------------------------------------------------------------- factories

_QOS_KEYS = ("variants", "profiles", "utility", "batch_sizes")


def _split(params: dict[str, Any]) -> tuple[QosSpec, dict[str, Any]]:
    base_dir = params.pop("base_dir", ".")
    qos = {k: params.pop(k) for k in _QOS_KEYS if k in params}
    return qos_spec_from_params(qos, base_dir), params


def check_variants_run(spec: QosSpec, ctx: PolicyContext, name: str) -> None:
    """ValueError when ``spec`` chooses among variants a driver cannot run: one that runs the model
    itself (the server, ``sloserve simulate``) runs a QoS scheduler only with the one variant that
    is that model (a batch named for another would be timed and answered as this one)."""
    names = [v.name for v in spec.variants]
    if not ctx.runs_variants and names != [ctx.model]:
        raise ValueError(
            f"{name}: variants {names}: here every batch runs model {ctx.model!r} itself, so a choice "
            "among variants would not happen; schedule variants with `sloserve experiment qos` or "
            f"`sloserve train-rl` (to use the scheduler here, give the one variant {ctx.model!r})"
        )


S = TypeVar("S", bound=QosScheduler)


def capped(sched: S, ctx: PolicyContext) -> S:
    """``sched`` with its batch cap lowered to the model's ``max_batch`` (the largest batch it accepts)."""
    sched.set_max_batch(min(sched.max_batch, ctx.max_batch))
    return sched


class QosHeuristicParams(PolicyParams):
    """``qos_heuristic``'s own (beside the QoS params): ``headroom`` (1) and ``rate_tau`` (1 s)."""

    headroom: Positive = 1.0
    rate_tau: Interval = 1.0


class QosRandomParams(PolicyParams):
    """``qos_random``'s own (beside the QoS params): ``seed`` (0) and ``rate_tau`` (1 s)."""

    seed: Index = 0
    rate_tau: Interval = 1.0


class QosTritonParams(TritonParams):
    """``qos_triton``'s own (beside the QoS params): ``variant`` (a variant's name; default the
    most accurate) and Triton's names (:class:`~sloserve.policies.triton.TritonParams`;
    ``max_batch_size`` defaults to the largest of ``batch_sizes`` within the model's)."""

    variant: str | None = None


def make_qos_heuristic(ctx: PolicyContext, **params: Any) -> QosHeuristic:
    """Registry factory ``qos_heuristic``: QoS params (``variants``, ``profiles``, ``utility``,
    ``batch_sizes``, ``base_dir``) and :class:`QosHeuristicParams`."""
    spec, rest = _split(params)
    p = parse_params(QosHeuristicParams, rest, "qos_heuristic")
    check_variants_run(spec, ctx, "qos_heuristic")
    sched = QosHeuristic(spec, headroom=p.headroom, rate_tau=p.rate_tau, max_queue_size=ctx.max_queue_size)
    return capped(sched, ctx)


def make_qos_random(ctx: PolicyContext, **params: Any) -> RandomQos:
    """Registry factory ``qos_random``: QoS params and :class:`QosRandomParams`."""
    spec, rest = _split(params)
    p = parse_params(QosRandomParams, rest, "qos_random")
    check_variants_run(spec, ctx, "qos_random")
    return capped(RandomQos(spec, seed=p.seed, rate_tau=p.rate_tau, max_queue_size=ctx.max_queue_size), ctx)


def make_qos_triton(ctx: PolicyContext, **params: Any) -> TritonQos:
    """Registry factory ``qos_triton``: QoS params and :class:`QosTritonParams`."""
    spec, rest = _split(params)
    p = parse_params(QosTritonParams, rest, "qos_triton")
    check_variants_run(spec, ctx, "qos_triton")
    names = [v.name for v in spec.variants]
    if p.variant is not None and p.variant not in names:
        raise ValueError(f"qos_triton: unknown variant {p.variant!r}; known: {names}")
    variant = names.index(p.variant) if p.variant is not None else spec.by_accuracy()[0]
    return TritonQos(
        variant,
        max_batch=p.batch_cap(ctx, default=min(spec.batch_sizes[-1], ctx.max_batch)),
        preferred_batch_sizes=p.preferred_batch_size,
        max_queue_delay=p.max_queue_delay_microseconds * 1e-6,
        timeout_action=p.timeout_action,
        max_queue_size=ctx.max_queue_size,
    )
