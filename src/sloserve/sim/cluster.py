"""The simulated cluster: drives each model's scheduler (and scaler) on an :class:`EventLoop`.

One :class:`ModelSetup` per model says how it is served: profile, scheduler, instances, cores,
noise, scaler. :func:`simulate` runs a workload through them and returns a :class:`SimResult`.
:class:`Simulation` is the same run as an object, for drivers that step it (an RL environment
stopping at decision points, a test inspecting state).

Model of execution (what the driver does, in order of the policy contract in
:mod:`sloserve.policies.base`):

- **Arrival** at ``t``: a ``Request`` is made from the workload row, ``scheduler.submit`` is
  called, then ``scheduler.decide``.
- **Dispatch** of a batch of size ``b`` on an instance with ``c`` cores: service time is
  ``profile.latency(b, c, k) × noise`` where ``k`` is the number of batches running at that moment
  on the shared hardware, this one included (all instances of a model share one machine unless
  ``shared_hardware=False``, then only the instance's own concurrent batches count). The factor
  is fixed at dispatch: batches already running keep their service time (with
  ``dynamic_slowdown=True`` instead, running batches progress at ``1/s(k)`` for the current ``k``,
  so a later batch slows them down too). Noise is a seeded
  multiplier with mean 1 and CV ``noise_cv`` (lognormal or gamma; gamma with CV 1 makes exponential
  service times), times ``tail_noise.factor`` with probability ``tail_noise.probability``. The
  instance's ``busy_until``, which policies read, is the end the profile predicts (noise left
  out, as a server knows it from its profile), and falls back to the finish time when it ends.
- **Completion**: ``scheduler.on_complete`` then ``scheduler.decide``.
- **Receive path** (optional): a driver may set :attr:`Simulation.arrival_hook`; arrivals then go
  to it, and it hands each request to the scheduler later through :meth:`Simulation.deliver`.
- **WaitUntil(t)**: ``decide`` is called again at ``t`` (the earliest requested time is kept).
- **Scaling** every ``scaler.interval`` s: ``scaler.on_tick(now, WindowStats)``, and once
  ``scaler.onset_delay`` after the first arrival following a window with none (or the start), the
  periodic ticks going on from there, when the scaler asks for it. The decisions are applied:
  ``SetInstanceCount`` adds instances that become available after ``actuation_delay + cold_start``
  (and cost from the decision on) or removes the newest ones (a running batch finishes first);
  ``SetInstanceCores`` names one of the scaler's model's instances by its number (0 its first;
  numbers count per model, as instance ids on the server) and takes effect after
  ``actuation_delay``, the instance serving on meanwhile (in-place resize); ``SetMaxBatch`` applies
  at once, capped at the profile's largest batch (the server caps it at ``max_batch_size``).
- **End of run**: after the last arrival the simulation runs on until no batch, wake-up or
  actuation is pending. Requests still queued then (a scheduler holding them forever, or no
  instance left) are drained with ``DropReason.UNAVAILABLE`` and count as misses. So every
  request ends exactly once; the driver checks it as it goes (one byte of state per request):
  a request dispatched twice (in one batch or two), dropped twice, dispatched after its drop or
  dropped after its dispatch, or one its scheduler neither dispatched, dropped nor returned from
  ``drain``, raises :class:`PolicyError` at once, naming the model, the policy's class
  and the request.
- **Stopping early** (a stepping driver calling :meth:`Simulation.finish` before the run ends):
  queued requests are drained as above; resources are charged up to now and rates are per the
  part of the arrival window simulated; requests still running (or still being received) are
  counted in :attr:`SimResult.unfinished`, neither completed nor dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np

from sloserve.core.cluster import InstanceView, WindowStats
from sloserve.core.decisions import (
    Dispatch,
    Drop,
    DropReason,
    ScaleDecision,
    SetInstanceCores,
    SetInstanceCount,
    SetMaxBatch,
    WaitUntil,
)
from sloserve.core.hardware import Hardware
from sloserve.core.profiles import ModelProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.base import PolicyError, Scaler, Scheduler
from sloserve.policies.base import short_repr as _short
from sloserve.sim.engine import EventLoop
from sloserve.sim.metrics import LatencyHistogram, Metrics, MetricsCollector, combine, merged_histogram
from sloserve.sim.workload import StreamedWorkload, Workload, WorkloadLike

IDLE_SCALER_TICKS = 10
"""After the last arrival, scaler ticks in a row with no completion before the run may end."""
TIMELINE_TAIL_ROWS = 1000
"""Most timeline rows after the arrival window ends (the drain of a long backlog goes untracked)."""

DROP_CODES: tuple[DropReason, ...] = tuple(DropReason)
"""Outcome codes in :class:`Outcomes`: ``-1`` = completed, ``i`` = dropped for ``DROP_CODES[i]``."""
_CODE = {r: i for i, r in enumerate(DROP_CODES)}

_UNSEEN, _QUEUED, _RECEIVING, _DISPATCHED, _DROPPED = 0, 1, 2, 3, 4
"""The driver's state of each request (one byte): waiting (with its scheduler; ids from
:attr:`Simulation.arrived` on: yet to arrive, which is ``_UNSEEN`` in messages); on the receive
path (:attr:`Simulation.arrival_hook`); dispatched (running or answered); dropped."""
_QUEUED_RUN = bytes((_QUEUED,))
_ENDED_STATES = bytes((_DISPATCHED, _DROPPED))
"""States a request never leaves (a prefix of them is forgotten as the run goes on)."""
_EARLIER = -1
"""State reported for an id below the kept prefix: dispatched or dropped earlier."""
_WHEN = {
    _UNSEEN: "before it arrived",
    _RECEIVING: "before it reached the scheduler",
    _DISPATCHED: "after it was dispatched",
    _DROPPED: "after it was dropped",
    _EARLIER: "after it ended",
}


def _policy_name(policy: object) -> str:
    """``module.Class`` of a policy object, as its error messages name it."""
    cls = type(policy)
    return f"{cls.__module__}.{cls.__qualname__}"


def _whole(value: object) -> bool:
    """Whether ``value`` is an integer (not a bool)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class TailNoise:
    """Occasional stragglers: with ``probability`` a batch takes ``factor`` times longer."""

    probability: float
    factor: float

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"tail_noise.probability must lie in [0, 1], got {self.probability}")
        if not self.factor >= 1:
            raise ValueError(f"tail_noise.factor must be >= 1, got {self.factor}")


@dataclass
class ModelSetup:
    """How one model is served in a simulation."""

    name: str
    """Model name (requests carry it; scale decisions name it)."""
    profile: ModelProfile
    """Batch latency of the model on its hardware."""
    scheduler: Scheduler
    """The policy that queues, batches and dispatches (one per setup; it keeps state)."""
    instances: int = 1
    """Instances at the start. Instance ids are driver-wide: the starting instances are numbered
    0, 1, ... in the order of the setups given to ``simulate``; added ones get the next numbers.
    (A scaler's ``SetInstanceCores`` names an instance by its number within the model instead.)"""
    cores: int = 1
    """Cores of each instance at the start (and of instances added later)."""
    hardware: str = "cpu"
    """Hardware type name (prices come from ``simulate(hardware_prices=...)``)."""
    scaler: Scaler | None = None
    """Called every ``scaler.interval`` seconds with a ``WindowStats``; None = fixed resources."""
    noise_cv: float = 0.0
    """Coefficient of variation of the service-time multiplier (0 = deterministic)."""
    noise: Literal["lognormal", "gamma"] = "lognormal"
    """Distribution of the multiplier (mean 1); ``gamma`` with ``noise_cv=1`` is exponential."""
    actuation_delay: float = 0.0
    """Seconds for a core change to take effect, and for an added instance to be placed."""
    cold_start: float = 0.0
    """Extra seconds before an added instance serves (loading the model)."""
    max_concurrency: int = 1
    """Batches one instance may run at once."""
    tail_noise: TailNoise | None = None
    """Optional stragglers on top of ``noise``."""
    shared_hardware: bool = True
    """True: all instances of this model share a machine, so concurrent batches slow each other by
    the profile's ``s(k)``; False: each instance is on its own machine."""
    dynamic_slowdown: bool = False
    """False: a batch's slowdown ``s(k)`` is fixed at dispatch. True: batches sharing hardware
    progress at rate ``1/s(k)`` for the current ``k``, so a batch started later slows the running
    ones too (their completions move); CoFB's throttle is judged under this model."""

    def __post_init__(self) -> None:
        if self.instances < 0:
            raise ValueError(f"model {self.name!r}: instances must be >= 0, got {self.instances}")
        if self.cores < 1:
            raise ValueError(f"model {self.name!r}: cores must be >= 1, got {self.cores}")
        if self.max_concurrency < 1:
            raise ValueError(f"model {self.name!r}: max_concurrency must be >= 1")
        if not (math.isfinite(self.noise_cv) and self.noise_cv >= 0):
            raise ValueError(f"model {self.name!r}: noise_cv must be finite and >= 0, got {self.noise_cv}")
        if self.noise not in ("lognormal", "gamma"):
            raise ValueError(f"model {self.name!r}: noise must be 'lognormal' or 'gamma', got {self.noise!r}")
        for attr in ("actuation_delay", "cold_start"):
            v = getattr(self, attr)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"model {self.name!r}: {attr} must be finite and >= 0, got {v}")


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Per-request results (``record=True``), indexed by request id (= row of the workload)."""

    arrival: np.ndarray
    deadline: np.ndarray
    start: np.ndarray
    """When its batch started (NaN if dropped)."""
    finish: np.ndarray
    """When it was answered or dropped."""
    code: np.ndarray
    """-1 = completed; otherwise index into :data:`DROP_CODES` (-2: not ended: not arrived yet, or
    unfinished when the run was stopped early)."""
    batch_size: np.ndarray
    """Size of the batch it ran in (0 if dropped)."""
    instance: np.ndarray
    """Instance id it ran on (-1 if dropped)."""
    model: np.ndarray
    """Model index."""
    service: np.ndarray
    """Service time of its batch (NaN if dropped)."""

    @property
    def completed(self) -> np.ndarray:
        """Mask of answered requests."""
        return self.code == -1  # type: ignore[no-any-return]

    @property
    def latency(self) -> np.ndarray:
        """finish − arrival (drops included: time until dropped)."""
        return self.finish - self.arrival  # type: ignore[no-any-return]

    @property
    def met(self) -> np.ndarray:
        """Mask of requests answered by their deadline."""
        return self.completed & (self.finish <= self.deadline)


@dataclass(frozen=True, eq=False)
class Timeline:
    """One row per ``timeline_interval`` of simulated time (totals over all models), from the start
    until the run ends, or :data:`TIMELINE_TAIL_ROWS` rows after the arrival window, whichever is first."""

    time: np.ndarray
    """End of each interval."""
    rate: np.ndarray
    """Arrivals per second in the interval."""
    throughput: np.ndarray
    """Answers per second in the interval."""
    attainment: np.ndarray
    """Met / (completed + dropped) in the interval (NaN when nothing ended)."""
    mean_batch: np.ndarray
    """Mean size of batches started in the interval (0 when none)."""
    max_batch: np.ndarray
    """Largest batch cap of the schedulers at the end of the interval."""
    instances: np.ndarray
    cores: np.ndarray
    queue: np.ndarray
    """Requests waiting at the end of the interval."""

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v).tolist() for k, v in self.__dict__.items()}


@dataclass(frozen=True, eq=False)
class SimResult:
    """What :func:`simulate` returns."""

    metrics: Metrics
    timeline: Timeline
    outcomes: Outcomes | None = None
    """Per-request arrays when run with ``record=True``."""
    seed: int = 0
    workload: str = ""
    """The workload's description."""
    models: tuple[str, ...] = ()
    histogram: LatencyHistogram | None = None
    """Latency distribution of answered requests (all models): CDF plots use it."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form data a caller attaches (e.g. wall-clock time of the run)."""
    unfinished: int = 0
    """Requests that arrived but had neither been answered nor dropped when a stepping driver
    stopped the run (:meth:`Simulation.finish` before the end): running, or still being received.
    ``metrics.requests == metrics.completed + metrics.dropped + unfinished``; 0 for a run that
    settled. Their outcome code stays -2."""


class _Instance(InstanceView):
    """Driver-side instance state: the view the policies see, plus bookkeeping."""

    __slots__ = ("number", "removing", "setup_index")

    def __init__(self, id: int, model: str, cores: int, hardware: str, max_concurrency: int) -> None:
        super().__init__(id, model, cores, hardware, 0, max_concurrency, 0.0, True)
        self.removing = False
        self.setup_index = 0
        self.number = 0
        """Its number among its model's instances, from 0 in the order they were added: what a
        scaler's ``SetInstanceCores`` names (as on the server, where ids count per model)."""


@dataclass(slots=True, eq=False)
class _Sharing:
    """A running batch under ``dynamic_slowdown``: work left (seconds at k = 1) and its end event."""

    batch: Batch
    instance: _Instance
    size: int
    remaining: float
    started: float
    noise: float
    """The noise multiplier drawn for it: ``remaining / noise`` is the work left by the profile."""
    handle: int = -1


class _Model:
    """State of one model in a run: its instances, collector, noise, pending wake-up."""

    def __init__(self, sim: Simulation, index: int, setup: ModelSetup, seed: int) -> None:
        self.sim = sim
        self.index = index
        self.sharing: dict[int, list[_Sharing]] = {}
        """Running batches per hardware group (``dynamic_slowdown`` only): -1 shared, else instance id."""
        self.sharing_at: dict[int, float] = {}
        self.setup = setup
        self.name = setup.name
        self.profile = setup.profile
        self.scheduler = setup.scheduler
        self.collector = MetricsCollector()
        self.instances: list[_Instance] = []
        self.running = 0
        self.wake_handle = -1
        self.wake_time = math.inf
        self.pending_actuations = 0
        self.cores_total = 0
        self.n_instances = 0
        self.instances_added = 0
        self.last_account = 0.0
        self.charges: list[tuple[float, float, int, int]] = []
        """``(from, to, cores, instances)`` per stretch charged, so that :meth:`Simulation.finish`
        can take back what was charged past the run's end (a scaler acting after it)."""
        # a spawn key keeps this stream apart from workload generators seeded with the same integer
        self.rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x51A5, index)))
        self._noise: list[float] = []
        self._noise_i = 0
        self.fixed_noise = setup.noise_cv == 0 and setup.tail_noise is None
        # window for scalers / timeline
        self.win_latencies: list[float] | None = [] if setup.scaler is not None else None
        self.win_min_budget = math.inf
        self.win_first_arrival = math.inf
        self.win_idle = True
        """Whether the scaler's last window had no arrivals (True before its first tick)."""
        self.tick_handle = -1
        self.tick_at = math.inf
        self.tick_start = 0.0
        self.onset_delay = setup.scaler.onset_delay if setup.scaler is not None else None
        self.win_mark = (0, 0, 0, 0)
        self.batch_count_mark = (0, 0)
        self.batch_started = 0
        self.batch_sum = 0
        for _ in range(setup.instances):
            self.add_instance(available_at=None)

    # -- resources ------------------------------------------------------------------------------

    def account(self, now: float) -> None:
        """Charge held cores and instances up to ``now``."""
        dt = now - self.last_account
        if dt > 0:
            self.collector.core_seconds += self.cores_total * dt
            self.collector.instance_seconds += self.n_instances * dt
            self.charges.append((self.last_account, now, self.cores_total, self.n_instances))
            self.last_account = now

    def refund_after(self, end: float) -> None:
        """Called when the run's books close at ``end``: takes back what was charged past it."""
        for start, stop, cores, instances in reversed(self.charges):
            if stop <= end:
                break
            past = stop - max(start, end)
            self.collector.core_seconds -= cores * past
            self.collector.instance_seconds -= instances * past

    def add_instance(self, available_at: float | None) -> _Instance:
        sim = self.sim
        self.account(sim.loop.now)
        inst = _Instance(
            sim.next_instance_id, self.name, self.setup.cores, self.setup.hardware, self.setup.max_concurrency
        )
        inst.setup_index = self.index
        inst.number = self.instances_added
        self.instances_added += 1
        sim.next_instance_id += 1
        sim.instance_owner[inst.id] = inst
        self.instances.append(inst)
        self.cores_total += inst.cores
        self.n_instances += 1
        if available_at is not None:
            inst.available = False
            self.pending_actuations += 1
            sim.loop.at(available_at, partial(self._instance_ready, inst))
        return inst

    def _instance_ready(self, inst: _Instance) -> None:
        self.pending_actuations -= 1
        if not inst.removing:
            inst.available = True
            self.decide()

    def remove_instance(self, inst: _Instance) -> None:
        inst.removing = True
        inst.available = False
        if inst.in_flight == 0:
            self._forget(inst)

    def _forget(self, inst: _Instance) -> None:
        self.account(self.sim.loop.now)
        self.instances.remove(inst)
        self.cores_total -= inst.cores
        self.n_instances -= 1
        del self.sim.instance_owner[inst.id]

    def set_count(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"model {self.name!r}: SetInstanceCount({count}) must be >= 0")
        active = [i for i in self.instances if not i.removing]
        now = self.sim.loop.now
        for _ in range(count - len(active)):
            self.add_instance(available_at=now + self.setup.actuation_delay + self.setup.cold_start)
        for inst in sorted(active, key=lambda i: i.id, reverse=True)[: max(0, len(active) - count)]:
            self.remove_instance(inst)

    def set_cores(self, inst: _Instance, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"instance {inst.id}: SetInstanceCores({cores}) must be >= 1")
        delay = self.setup.actuation_delay
        if delay <= 0:
            self._apply_cores(inst, cores, pending=False)
        else:
            self.pending_actuations += 1
            self.sim.loop.after(delay, partial(self._apply_cores, inst, cores, True))

    def _apply_cores(self, inst: _Instance, cores: int, pending: bool) -> None:
        if pending:
            self.pending_actuations -= 1
        if inst.id not in self.sim.instance_owner:
            return
        self.account(self.sim.loop.now)
        self.cores_total += cores - inst.cores
        inst.cores = cores
        self.decide()

    # -- service times --------------------------------------------------------------------------

    def noise(self) -> float:
        if self.fixed_noise:
            return 1.0
        i = self._noise_i
        if i >= len(self._noise):
            self._noise = self._draw_noise(4096)
            i = 0
        self._noise_i = i + 1
        return self._noise[i]

    def _draw_noise(self, n: int) -> list[float]:
        s, rng = self.setup, self.rng
        cv = s.noise_cv
        if cv * cv == 0.0:  # 0, or so small that its square underflows: no noise to draw
            x = np.ones(n)
        elif s.noise == "gamma":
            shape = 1.0 / (cv * cv)
            x = rng.gamma(shape, 1.0 / shape, n)
        else:
            sigma2 = math.log1p(cv * cv)
            x = rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), n)
        if s.tail_noise is not None and s.tail_noise.probability > 0:
            x = np.where(rng.random(n) < s.tail_noise.probability, x * s.tail_noise.factor, x)
        return x.tolist()

    # -- the policy loop ------------------------------------------------------------------------

    def violation(self, what: str, *, scaler: bool = False) -> PolicyError:
        """The error for ``what`` this model's scheduler (or scaler) did wrong just now."""
        role, policy = ("scaler", self.setup.scaler) if scaler else ("scheduler", self.scheduler)
        return PolicyError(
            f"model {self.name!r} ({role} {_policy_name(policy)}) broke the policy contract at "
            f"t={self.sim.loop.now:.6g} s: {what}"
        )

    def decide(self) -> None:
        """Ask the scheduler and carry out what it returns."""
        sim = self.sim
        now = sim.loop.now
        decisions = self.scheduler.decide(now, self.instances)
        try:
            for d in decisions:
                t = type(d)
                if t is Dispatch:
                    self.start(d)  # type: ignore[arg-type]
                elif t is Drop:
                    sim.end_dropped(self, d.request, d.reason)  # type: ignore[union-attr]
                elif t is WaitUntil:
                    self.wake_at(d.time)  # type: ignore[union-attr]
                else:
                    raise self.violation(
                        f"decide returned {_short(d)}, not a decision (Dispatch, Drop, WaitUntil)"
                    )
        except TypeError:
            if isinstance(decisions, Iterable):
                raise
            raise self.violation(f"decide returned {_short(decisions)}, not a list of decisions") from None

    def wake_at(self, time: float) -> None:
        loop = self.sim.loop
        now = loop.now
        if time <= now:
            time = math.nextafter(now, math.inf)
        if time >= self.wake_time and self.wake_handle >= 0 and loop.pending(self.wake_handle):
            return
        if self.wake_handle >= 0:
            loop.cancel(self.wake_handle)
        self.wake_time = time
        self.wake_handle = loop.at(time, self._wake)

    def _wake(self) -> None:
        self.wake_handle = -1
        self.wake_time = math.inf
        self.decide()

    def start(self, d: Dispatch) -> None:
        sim = self.sim
        now = sim.loop.now
        batch = d.batch
        instance = sim.instance_owner.get(d.instance)
        if instance is None or instance.setup_index != self.index:
            raise self.violation(f"dispatch to unknown instance {d.instance}")
        if not instance.free:
            raise self.violation(
                f"dispatch to instance {instance.id} that cannot take a batch "
                f"(available={instance.available}, in_flight={instance.in_flight})"
            )
        size = batch.size
        if size < 1 or size > self.scheduler.max_batch or not batch.requests:
            raise self.violation(
                f"batch of {size} ({len(batch.requests)} requests) "
                f"outside 1..max_batch={self.scheduler.max_batch}"
            )
        # every request of the batch must be waiting: it is dispatched once, and never after a drop
        # (the hot path: one byte per request; an id yet to arrive is found when it does arrive)
        state, base, queued, dispatched = sim._state, sim._base, _QUEUED, _DISPATCHED
        try:
            for r in batch.requests:
                i = r.id - base
                if state[i] != queued or i < 0:
                    raise sim.misuse(self, r, "dispatched", batch)
                state[i] = dispatched
        except IndexError:
            bad = next(r for r in batch.requests if not 0 <= r.id - base < len(state))
            raise sim.misuse(self, bad, "dispatched", batch) from None
        k = self.running + 1 if self.setup.shared_hardware else instance.in_flight + 1
        dynamic = self.setup.dynamic_slowdown
        predicted = self.profile.latency(size, instance.cores, 1 if dynamic else k)
        noise = self.noise()
        service = predicted * noise
        self.running += 1
        instance.in_flight += 1
        end = now + service
        if not dynamic:  # policies see the profile's end, as a server would: not the noise drawn
            instance.busy_until = max(instance.busy_until, now + predicted)
        self.batch_started += 1
        self.batch_sum += size
        self.collector.batch(size)
        if sim.outcomes is not None:
            sim.record_start(batch, now, instance.id, size, service)
        if dynamic:
            group = self._advance_sharing(instance)
            group.append(_Sharing(batch, instance, size, service, now, noise))
            self._reschedule_sharing(group)
        else:
            sim.loop.at(end, partial(self.finish, batch, instance, service))

    # -- dynamic slowdown (ModelSetup.dynamic_slowdown) -------------------------------------------

    def _advance_sharing(self, instance: _Instance) -> list[_Sharing]:
        """Progress the batches sharing ``instance``'s hardware up to now; return that group."""
        key = -1 if self.setup.shared_hardware else instance.id
        now = self.sim.loop.now
        group = self.sharing.setdefault(key, [])
        dt = now - self.sharing_at.get(key, now)
        self.sharing_at[key] = now
        if dt > 0:
            for r in group:
                r.remaining = max(0.0, r.remaining - dt / self._factor(r, len(group)))
        return group

    def _factor(self, r: _Sharing, k: int) -> float:
        if k <= 1:
            return 1.0
        c = r.instance.cores
        return self.profile.latency(r.size, c, k) / self.profile.latency(r.size, c, 1)

    def _reschedule_sharing(self, group: list[_Sharing]) -> None:
        loop = self.sim.loop
        k = len(group)
        for r in group:
            if r.handle >= 0:
                loop.cancel(r.handle)
            factor = self._factor(r, k)
            r.handle = loop.at(loop.now + r.remaining * factor, partial(self._finish_sharing, r))
            predicted = loop.now + r.remaining / r.noise * factor
            if predicted > r.instance.busy_until:
                r.instance.busy_until = predicted

    def _finish_sharing(self, r: _Sharing) -> None:
        group = self._advance_sharing(r.instance)
        group.remove(r)
        self._reschedule_sharing(group)
        self.finish(r.batch, r.instance, self.sim.loop.now - r.started)

    def finish(self, batch: Batch, instance: _Instance, service: float) -> None:
        sim = self.sim
        now = sim.loop.now
        self.running -= 1
        instance.in_flight -= 1
        if instance.in_flight == 0:
            instance.busy_until = min(instance.busy_until, now)
        reqs = batch.requests
        self.collector.completed(now, [r.arrival for r in reqs], [r.deadline for r in reqs])
        if self.win_latencies is not None:
            self.win_latencies.extend(now - r.arrival for r in reqs)
        sim.ended += len(reqs)
        if sim.outcomes is not None:
            sim.record_finish(reqs, now)
        self.scheduler.on_complete(now, batch, instance, service)
        if instance.removing and instance.in_flight == 0:
            self._forget(instance)
        self.decide()

    def busy(self) -> bool:
        """Whether something is still due to happen for this model."""
        return self.running > 0 or self.pending_actuations > 0 or self.wake_handle >= 0

    # -- scaler -----------------------------------------------------------------------------------

    def window(self, start: float, end: float) -> WindowStats:
        c = self.collector
        a0, d0, m0, x0 = self.win_mark
        lat = self.win_latencies or []
        stats = WindowStats(
            start=start,
            end=end,
            arrivals=c.arrivals - a0,
            completed=c.done - d0,
            dropped=c.n_dropped - x0,
            met=c.met - m0,
            mean_latency=float(np.mean(lat)) if lat else 0.0,
            p95_latency=float(np.percentile(lat, 95)) if lat else 0.0,
            queue_length=len(self.scheduler),
            instances=sum(1 for i in self.instances if not i.removing),
            cores=self.cores_total,
            max_batch=self.scheduler.max_batch,
            min_remaining_budget=self.win_min_budget,
            first_arrival=self.win_first_arrival,
        )
        self.win_mark = (c.arrivals, c.done, c.met, c.n_dropped)
        if self.win_latencies is not None:
            self.win_latencies.clear()
        self.win_min_budget = math.inf
        self.win_first_arrival = math.inf
        return stats


class Simulation:
    """One simulated run, as an object. :func:`simulate` is ``Simulation(...).run()``.

    Stepping drivers use :attr:`loop`, :meth:`step`, :meth:`run_until`, :meth:`wake` and finally
    :meth:`finish`.
    """

    def __init__(
        self,
        models: Sequence[ModelSetup] | ModelSetup,
        workload: WorkloadLike,
        *,
        seed: int = 0,
        record: bool = False,
        progress: bool = False,
        hardware_prices: Mapping[str, Hardware] | None = None,
        timeline_interval: float = 1.0,
    ) -> None:
        setups = [models] if isinstance(models, ModelSetup) else list(models)
        if not setups:
            raise ValueError("simulate needs at least one ModelSetup")
        names = [s.name for s in setups]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if len({id(s.scheduler) for s in setups}) != len(setups):
            raise ValueError("each ModelSetup needs its own scheduler object")
        if not (timeline_interval > 0 and math.isfinite(timeline_interval)):
            raise ValueError(f"timeline_interval must be > 0, got {timeline_interval}")
        self.loop = EventLoop()
        """The event loop; stepping drivers may schedule their own actions on it."""
        self.seed = seed
        self.workload = workload
        self.hardware_prices = dict(hardware_prices or {})
        missing = sorted({x.hardware for x in setups} - set(self.hardware_prices))
        if self.hardware_prices and missing:
            raise ValueError(
                f"hardware_prices has no entry for {missing}; known: {sorted(self.hardware_prices)}"
            )
        self.timeline_interval = timeline_interval
        self.next_instance_id = 0
        self.instance_owner: dict[int, _Instance] = {}
        self.ended = 0
        self.models = [_Model(self, i, s, seed) for i, s in enumerate(setups)]
        self._by_name = {m.name: m for m in self.models}
        self.outcomes: Outcomes | None = None
        self.arrival_hook: Callable[[Request], None] | None = None
        """When set (e.g. by CoFB's simulated receive path), each arriving request is handed to it
        instead of its scheduler; the hook calls :meth:`deliver` when the request reaches the
        scheduler. Latency still counts from the request's arrival."""
        if record:
            if not isinstance(workload, Workload):
                raise ValueError("record=True needs a Workload held in memory, not a streamed one")
            n = len(workload)
            self.outcomes = Outcomes(
                arrival=workload.arrivals.copy(),
                deadline=workload.deadline_array.copy(),
                start=np.full(n, np.nan),
                finish=np.full(n, np.nan),
                code=np.full(n, -2, dtype=np.int8),
                batch_size=np.zeros(n, dtype=np.int32),
                instance=np.full(n, -1, dtype=np.int32),
                model=(workload.models.copy() if workload.models is not None else np.zeros(n, np.int64)),
                service=np.full(n, np.nan),
            )
        self._chunks: Iterator[Workload] = iter(workload.chunks())
        self._state = bytearray()
        """One state byte (``_QUEUED``, ...) per request from id :attr:`_base` to the end of the
        chunk loaded; the ended prefix is forgotten at each chunk, so memory follows the backlog."""
        self._base = 0
        self._offset = 0
        self._arr: list[float] = []
        self._dl: list[float] = []
        self._pr: list[int] = []
        self._pb: list[int] = []
        self._md: list[int] | None = None
        self._j = 0
        self._next_chunk()
        self._timeline_rows: list[tuple[float, ...]] = []
        self._timeline_end = workload.duration + TIMELINE_TAIL_ROWS * timeline_interval
        """No timeline row after this time."""
        self._tl_mark = (0, 0, 0, 0, 0, 0)
        self._progress = progress
        self._finished: SimResult | None = None
        self.loop.at(timeline_interval, self._timeline_tick)
        for m in self.models:
            if m.setup.scaler is not None:
                interval = m.setup.scaler.interval
                if not (interval > 0 and math.isfinite(interval)):
                    raise ValueError(f"model {m.name!r}: scaler interval must be > 0, got {interval}")
                self._schedule_tick(m, interval, 0.0, 0)

    # -- arrivals --------------------------------------------------------------------------------

    @property
    def arrived(self) -> int:
        """Requests that have arrived so far (they arrive in id order)."""
        return self._offset + self._j

    def _next_chunk(self) -> bool:
        self._offset += len(self._arr)
        self._j = 0
        for chunk in self._chunks:
            if len(chunk) == 0:
                continue
            state = self._state
            ended = len(state) - len(state.lstrip(_ENDED_STATES))
            if ended:
                del state[:ended]
                self._base += ended
            state.extend(_QUEUED_RUN * len(chunk))  # C speed: arrivals need not touch the state
            self._arr = chunk.arrivals.tolist()
            self._dl = chunk.deadline_array.tolist()
            self._pr = chunk.priorities.tolist()
            self._pb = chunk.payload_bytes.tolist()
            self._md = None if chunk.models is None else chunk.models.tolist()
            if self._md is not None and max(self._md) >= len(self.models):
                raise ValueError(
                    f"workload names model index {max(self._md)} but only "
                    f"{len(self.models)} models are set up"
                )
            return True
        self._arr = []
        return False

    def next_arrival(self) -> float:
        """Time of the next arrival, ``inf`` when the workload is exhausted."""
        if self._j >= len(self._arr) and not self._next_chunk():
            return math.inf
        return self._arr[self._j]

    def _arrive(self) -> None:
        """The next arrival happens now (the loop clock must already be at its time)."""
        j = self._j
        self._j = j + 1
        t = self._arr[j]
        m = self.models[self._md[j]] if self._md is not None else self.models[0]
        r = Request(self._offset + j, m.name, t, self._dl[j], self._pr[j], self._pb[j])
        if self.arrival_hook is not None:
            self._state[r.id - self._base] = _RECEIVING
        m.collector.arrivals += 1
        if m.win_latencies is not None:
            if m.win_first_arrival == math.inf:
                m.win_first_arrival = t
                if m.win_idle and m.onset_delay is not None and t + m.onset_delay < m.tick_at:
                    self._schedule_tick(m, t + m.onset_delay, m.tick_start, 0)
            budget = r.deadline - t
            if budget < m.win_min_budget:
                m.win_min_budget = budget
        if self.arrival_hook is not None:
            self.arrival_hook(r)
            return
        d = m.scheduler.submit(t, r)
        if d is not None:
            self._refused(m, d)
        m.decide()

    def deliver(self, request: Request) -> None:
        """Hand ``request`` (which arrived earlier and went to :attr:`arrival_hook`) to its model's
        scheduler now."""
        m = self._by_name[request.model]
        state, i = self._state, request.id - self._base
        if not 0 <= i < len(state) or state[i] != _RECEIVING:
            raise RuntimeError(f"deliver: request {request.id} is not on the receive path")
        state[i] = _QUEUED
        d = m.scheduler.submit(self.loop.now, request)
        if d is not None:
            self._refused(m, d)
        m.decide()

    def _refused(self, m: _Model, d: object) -> None:
        """``m``'s scheduler returned ``d`` (not None) from ``submit``: end it as the Drop it must be."""
        if type(d) is not Drop:
            raise m.violation(f"submit returned {_short(d)}, not a Drop or None")
        self.end_dropped(m, d.request, d.reason)

    # -- outcomes --------------------------------------------------------------------------------

    def _state_of(self, request_id: int) -> int | None:
        """The state of request ``request_id`` (``_EARLIER`` below the kept prefix, ``_UNSEEN``
        from :attr:`arrived` on); None for an id no request has (not a whole number >= 0)."""
        if not _whole(request_id) or request_id < 0:
            return None
        i = request_id - self._base
        if i < 0:
            return _EARLIER
        return _UNSEEN if request_id >= self.arrived else self._state[i]

    def misuse(self, m: _Model, request: Request, action: str, batch: Batch | None = None) -> PolicyError:
        """The error for ``m``'s scheduler having ``action`` (dispatched, dropped) ``request`` when
        it was not waiting (``batch``: the batch it was dispatched in)."""
        rid = request.id
        state = self._state_of(rid)
        if state is None:
            what = f"request {_short(rid)} {action}, but no request of this run has that id"
        elif batch is not None and sum(1 for r in batch.requests if r.id == rid) > 1:
            what = f"request {rid} dispatched twice in one batch"
        elif state == (_DISPATCHED if action == "dispatched" else _DROPPED):
            what = f"request {rid} {action} twice"
        else:
            what = f"request {rid} {action} {_WHEN[state]}"
        return m.violation(what)

    def end_dropped(self, m: _Model, request: Request, reason: DropReason) -> None:
        """End ``request`` of model ``m`` as dropped for ``reason``; it must be waiting (queued or
        on the receive path), else :class:`PolicyError`."""
        state, i = self._state, request.id - self._base
        if not 0 <= i < self.arrived - self._base or ((s := state[i]) != _QUEUED and s != _RECEIVING):
            raise self.misuse(m, request, "dropped")
        if type(reason) is not DropReason:
            raise m.violation(f"request {request.id} dropped with reason {_short(reason)}, not a DropReason")
        state[i] = _DROPPED
        now = self.loop.now
        m.collector.dropped(now, reason.value)
        self.ended += 1
        if self.outcomes is not None:
            o = self.outcomes
            i = request.id
            if o.code[i] != -2:
                raise RuntimeError(f"request {i} ended twice (second time: dropped, {reason.value})")
            o.code[i] = _CODE[reason]
            o.finish[i] = now

    def record_start(self, batch: Batch, now: float, instance: int, size: int, service: float) -> None:
        o = self.outcomes
        assert o is not None
        ids = [r.id for r in batch.requests]
        if np.any(o.code[ids] != -2):
            raise RuntimeError(f"a request in batch {ids} was already ended before it ran")
        o.start[ids] = now
        o.batch_size[ids] = size
        o.instance[ids] = instance
        o.service[ids] = service

    def record_finish(self, requests: Sequence[Request], now: float) -> None:
        o = self.outcomes
        assert o is not None
        ids = [r.id for r in requests]
        if np.any(o.code[ids] != -2):
            raise RuntimeError(f"a request in {ids} ended twice")
        o.code[ids] = -1
        o.finish[ids] = now

    # -- periodic ticks --------------------------------------------------------------------------

    def _more_to_come(self) -> bool:
        """Whether the timeline should keep ticking: arrivals to come, work in progress, or other
        events pending (a receive path, a scaler's last ticks). Called from inside a tick, which is
        then no longer in the loop, so two timelines never keep each other alive."""
        return self.next_arrival() < math.inf or any(m.busy() for m in self.models) or len(self.loop) > 0

    def _timeline_tick(self) -> None:
        now = self.loop.now
        arrivals = sum(m.collector.arrivals for m in self.models)
        done = sum(m.collector.done for m in self.models)
        met = sum(m.collector.met for m in self.models)
        dropped = sum(m.collector.n_dropped for m in self.models)
        bstart = sum(m.batch_started for m in self.models)
        bsum = sum(m.batch_sum for m in self.models)
        a0, d0, m0, x0, b0, s0 = self._tl_mark
        dt = self.timeline_interval
        ended = (done - d0) + (dropped - x0)
        nb = bstart - b0
        self._timeline_rows.append(
            (
                now,
                (arrivals - a0) / dt,
                (done - d0) / dt,
                (met - m0) / ended if ended else math.nan,
                (bsum - s0) / nb if nb else 0.0,
                max(m.scheduler.max_batch for m in self.models),
                sum(sum(1 for i in m.instances if not i.removing) for m in self.models),
                sum(m.cores_total for m in self.models),
                sum(len(m.scheduler) for m in self.models),
            )
        )
        self._tl_mark = (arrivals, done, met, dropped, bstart, bsum)
        if now + dt <= self._timeline_end and self._more_to_come():
            self.loop.at(now + dt, self._timeline_tick)

    def _scaler_tick(self, m: _Model, start: float, idle: int = 0) -> None:
        scaler = m.setup.scaler
        assert scaler is not None
        now = self.loop.now
        m.tick_handle, m.tick_at = -1, math.inf
        window = m.window(start, now)
        m.win_idle = window.arrivals == 0
        decisions = scaler.on_tick(now, window)
        if not isinstance(decisions, list | tuple):
            raise m.violation(f"on_tick returned {_short(decisions)}, not a list of decisions", scaler=True)
        for d in decisions:
            self.apply(d, m.name)
        m.decide()
        # Keep ticking while requests may still come or run. After the last arrival, a scaler gets
        # up to IDLE_SCALER_TICKS ticks without any completion to bring capacity back for requests
        # still queued; its own actuations do not keep the run alive.
        work = self.next_arrival() < math.inf or any(x.running or x.wake_handle >= 0 for x in self.models)
        idle = 0 if work or window.completed else idle + 1
        if work or (any(len(x.scheduler) for x in self.models) and idle < IDLE_SCALER_TICKS):
            self._schedule_tick(m, now + scaler.interval, now, idle)

    def _schedule_tick(self, m: _Model, when: float, start: float, idle: int) -> None:
        """(Re)schedule ``m``'s next scaler tick at ``when``, for the window that began at ``start``."""
        if m.tick_handle >= 0:
            self.loop.cancel(m.tick_handle)
        m.tick_handle = self.loop.at(when, partial(self._scaler_tick, m, start, idle))
        m.tick_at, m.tick_start = when, start

    def apply(self, decision: ScaleDecision, model: str) -> None:
        """Carry out one scaling decision of ``model``'s scaler now (scalers' decisions go
        through here). As on the server, a scaler acts on its own model only: a decision naming
        another model, a value that is not a whole number, a negative count or cores below 1 raise
        :class:`PolicyError` naming both. ``SetInstanceCores`` names one of the model's
        own instances by its number (one it no longer has is skipped), and ``SetMaxBatch`` is
        capped to 1..the model's largest batch."""
        owner = self._by_name.get(model)
        if owner is None:
            raise ValueError(f"apply: no model named {model!r} (models: {sorted(self._by_name)})")

        def refuse(why: str) -> PolicyError:
            return owner.violation(f"{_short(decision)}: {why}", scaler=True)

        if isinstance(decision, SetInstanceCount | SetMaxBatch) and decision.model != model:
            raise refuse(
                f"names model {_short(decision.model)}, but a scaler acts on its own model {model!r} only"
            )
        if isinstance(decision, SetInstanceCount):
            if not _whole(decision.count) or decision.count < 0:
                raise refuse("the count must be a whole number >= 0")
            owner.set_count(int(decision.count))
        elif isinstance(decision, SetInstanceCores):
            if not _whole(decision.instance):
                raise refuse("the instance number must be a whole number")
            if not _whole(decision.cores) or decision.cores < 1:
                raise refuse("the cores must be a whole number >= 1")
            inst = next((i for i in owner.instances if i.number == decision.instance), None)
            if inst is not None and not inst.removing:
                owner.set_cores(inst, int(decision.cores))
        elif isinstance(decision, SetMaxBatch):
            if not _whole(decision.max_batch):
                raise refuse("the batch cap must be a whole number")
            owner.scheduler.set_max_batch(max(1, min(int(decision.max_batch), owner.profile.max_batch)))
        else:
            raise owner.violation(
                f"{_short(decision)} is not a scale decision "
                "(SetInstanceCount, SetInstanceCores, SetMaxBatch)",
                scaler=True,
            )

    # -- running ---------------------------------------------------------------------------------

    def wake(self, model: int | str = 0) -> None:
        """Have the scheduler of ``model`` (index or name) asked to decide at the current time."""
        m = self._by_name[model] if isinstance(model, str) else self.models[model]
        self.loop.at(self.loop.now, m.decide)

    def step(self) -> bool:
        """Process the next arrival or event, whichever comes first; False when both ran out."""
        t = self.next_arrival()
        loop = self.loop
        if loop.peek() <= t:
            return loop.step()
        if t == math.inf:
            return False
        loop.now = t
        self._arrive()
        return True

    def run_until(self, predicate: Callable[[], bool]) -> bool:
        """Step until ``predicate()`` holds (True) or the run has nothing left (False)."""
        while not predicate():
            if not self.step():
                return False
        return True

    def run(self) -> SimResult:
        """Run to the end and return the result."""
        loop = self.loop
        heap = loop._heap  # the merge of arrivals with events is the hot path: read the heap directly
        run_events = loop.run
        arrive = self._arrive
        bar = self._start_progress()
        models = self.models
        # fast path: arrivals straight to the scheduler (no receive hook, no scaler window to track)
        fast = self.arrival_hook is None and all(m.win_latencies is None for m in models)
        while True:
            arr = self._arr
            n = len(arr)
            j = self._j
            if fast:
                dl, pr, pb, md = self._dl, self._pr, self._pb, self._md
                offset = self._offset
                m = models[0]
                collector = m.collector
                while j < n:
                    t = arr[j]
                    if heap and heap[0][0] <= t:
                        run_events(t)
                    loop.now = t
                    if md is not None:
                        m = models[md[j]]
                        collector = m.collector
                    self._j = j + 1
                    collector.arrivals += 1
                    d = m.scheduler.submit(t, Request(offset + j, m.name, t, dl[j], pr[j], pb[j]))
                    if d is not None:
                        self._refused(m, d)
                    m.decide()
                    j += 1
            else:
                while j < n:
                    t = arr[j]
                    if heap and heap[0][0] <= t:
                        run_events(t)
                    loop.now = t
                    arrive()
                    j = self._j
            if bar is not None:
                bar[0].update(bar[1], completed=min(loop.now, self.workload.duration))
            if not self._next_chunk():
                break
        loop.run()
        if bar is not None:
            bar[0].update(bar[1], completed=self.workload.duration)
            bar[0].stop()
        return self.finish()

    def _start_progress(self) -> Any:
        if not self._progress:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        p = Progress(
            TextColumn("simulating"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s simulated"),
            TimeRemainingColumn(),
            transient=True,
        )
        p.start()
        return p, p.add_task("sim", total=max(self.workload.duration, 1e-9))

    def finish(self) -> SimResult:
        """End the run now: drain what is still queued (UNAVAILABLE), check that the schedulers
        lost no request, close the books, return the result.

        A run that settled (no arrival to come, nothing running) is charged up to the end of the
        arrival window or the last request's end, whichever is later, and rated per the arrival
        window. A run stopped early is charged up to now and rated per the part of the arrival
        window simulated; its requests still running are counted in :attr:`SimResult.unfinished`.
        """
        if self._finished is not None:
            return self._finished
        now = self.loop.now
        for m in self.models:
            for d in m.scheduler.drain(now, DropReason.UNAVAILABLE):
                if type(d) is not Drop:
                    raise m.violation(f"drain returned {_short(d)}, not a Drop")
                self.end_dropped(m, d.request, d.reason)
        self._check_none_lost()
        unfinished = self.arrived - self.ended
        more = self.next_arrival() < math.inf
        if unfinished < 0 or (unfinished and not more and len(self.loop) == 0):
            raise RuntimeError(
                f"{self.arrived} requests arrived but {self.ended} ended, and nothing is left to run"
            )
        settled = not more and unfinished == 0
        if settled:
            makespan = max((m.collector.last_end for m in self.models), default=0.0)
            end = max(self.workload.duration, makespan)
            window = self.workload.duration
        else:
            end = now
            window = min(self.workload.duration, now)
        for m in self.models:
            m.account(end)
            m.refund_after(end)
        parts = {}
        for m in self.models:
            hw = self.hardware_prices.get(m.setup.hardware)
            price = hw.price_per_hour / hw.cores if hw is not None else 0.0
            parts[m.name] = (m.collector, price)
        metrics = combine(parts, window)
        rows = np.array(self._timeline_rows, dtype=np.float64).reshape(-1, 9)
        timeline = Timeline(*(rows[:, i].copy() for i in range(9)))
        self._finished = SimResult(
            metrics=metrics,
            timeline=timeline,
            outcomes=self.outcomes,
            seed=self.seed,
            workload=self.workload.description,
            models=tuple(m.name for m in self.models),
            histogram=merged_histogram(m.collector for m in self.models),
            unfinished=unfinished,
        )
        return self._finished

    def _check_none_lost(self) -> None:
        """After the drain no request that arrived may still be with its scheduler: the first
        model that lost some raises :class:`PolicyError` naming them."""
        state, arrived = self._state, self.arrived - self._base
        if state.find(_QUEUED, 0, arrived) < 0:
            return
        waiting = np.frombuffer(bytes(state[:arrived]), dtype=np.uint8) == _QUEUED
        # a streamed workload's earlier chunks are gone: their requests go to a model short of ends
        short = next(
            (
                i
                for i, m in enumerate(self.models)
                if m.collector.arrivals > m.collector.done + m.collector.n_dropped
            ),
            0,
        )
        by_model: dict[int, list[int]] = {}
        for rid in (np.flatnonzero(waiting) + self._base).tolist():
            index = self._model_index(rid)
            by_model.setdefault(short if index < 0 else index, []).append(rid)
        index, lost = min(by_model.items())
        shown = ", ".join(map(str, lost[:5])) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        them = "them" if len(lost) > 1 else "it"
        raise self.models[index].violation(
            f"request{'s' if len(lost) > 1 else ''} {shown} never ended: the scheduler accepted "
            f"{them} (submit returned None) but neither dispatched nor dropped {them}, nor returned "
            f"{them} from drain"
        )

    def _model_index(self, request_id: int) -> int:
        """Index of the model of request ``request_id``; -1 when no longer known (a streamed
        workload's earlier chunk, with several models)."""
        w = self.workload
        if isinstance(w, Workload):
            return 0 if w.models is None else int(w.models[request_id])
        j = request_id - self._offset
        if 0 <= j < len(self._arr):
            return 0 if self._md is None else self._md[j]
        return 0 if len(self.models) == 1 else -1


def simulate(
    models: Sequence[ModelSetup] | ModelSetup,
    workload: WorkloadLike,
    *,
    seed: int = 0,
    record: bool = False,
    progress: bool = False,
    hardware_prices: Mapping[str, Hardware] | None = None,
    timeline_interval: float = 1.0,
) -> SimResult:
    """Run ``workload`` through ``models`` and return metrics, a timeline and (``record=True``)
    per-request outcomes. ``workload.models`` indexes ``models`` (all requests go to the first
    model when it is None). ``seed`` drives the service-time noise; the same seed, workload and
    fresh policies give the same result. See the module docstring for the execution model."""
    return Simulation(
        models,
        workload,
        seed=seed,
        record=record,
        progress=progress,
        hardware_prices=hardware_prices,
        timeline_interval=timeline_interval,
    ).run()


__all__ = [
    "DROP_CODES",
    "ModelSetup",
    "Outcomes",
    "PolicyError",
    "SimResult",
    "Simulation",
    "StreamedWorkload",
    "TailNoise",
    "Timeline",
    "simulate",
]
