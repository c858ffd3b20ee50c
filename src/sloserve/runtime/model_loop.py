"""The serving loop of one model: a thin driver around the same policy objects the simulator runs.

It feeds the model's :class:`~sloserve.policies.base.Scheduler` with ``now`` from a
:class:`~sloserve.runtime.clock.Clock`, in the contract's order (``submit`` on arrival,
``decide`` after arrivals / completions / a ``WaitUntil``, ``on_complete`` when a batch ends,
``drain`` on abort), and carries out what it returns: ``Dispatch`` → the instance's
:class:`~sloserve.runtime.instances.InstanceRunner`, ``Drop`` → the request is refused with its
reason (or, with ``serve_late``, queued again without a deadline), ``WaitUntil`` → a timer. A
scaler, when configured, is called every ``interval`` seconds with a
:class:`~sloserve.core.cluster.WindowStats` (and ``onset_delay`` after traffic begins, when it asks)
and its decisions are applied in place.

Every request ends exactly once, through :meth:`ModelLoop._end`. Everything here runs on one
thread (the event loop's); instances call back through their ``post``.

A policy is code the loop does not own (a config may name any ``package.module:factory``). If
it raises, the model stops rather than leave requests waiting on a broken queue: the loop's
:attr:`~ModelLoop.fault` says what raised, the queued requests are refused with it (500), new ones
too (503), batches already running finish and are answered, and loading the model again starts it
afresh. The entry points the event loop calls (:meth:`~ModelLoop.submit`, timers, an instance's
completion or start, :meth:`~ModelLoop.close`, :meth:`~ModelLoop.abort`) are where that is caught.

A policy that breaks its contract stops the model the same way, with a :class:`PolicyError` naming
what it did, checked before the loop acts on it: a value that is not a decision; a dispatch to an
instance the model does not have or that cannot take a batch now (``InstanceView.free``), of a
batch outside 1..``max_batch_size`` rows, or naming a request twice, one already running or one not
queued (ended before, or unknown); a drop of a request that is running or not queued; a request the
scheduler lost (``len(scheduler)`` short of the requests it was handed and neither dispatched nor
dropped, or left out of its ``drain``); a scale decision for another model or with a value out of
range. The simulator refuses the same (``sim.cluster``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, SupportsIndex, TypeVar

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
from sloserve.core.profiles import ModelProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.base import PolicyError, Scaler, Scheduler
from sloserve.policies.base import short_repr as _short
from sloserve.runtime.clock import Clock, TimerHandle, Timers
from sloserve.runtime.instances import BatchResult, InstanceRunner, RequestFailure, Tensors
from sloserve.runtime.model_config import MAX_INSTANCES, MAX_THREADS, ModelConfig

log = logging.getLogger("sloserve.runtime")

LATE_REASONS = frozenset(
    {DropReason.DEADLINE_UNREACHABLE, DropReason.DEADLINE_EXPIRED, DropReason.QUEUE_TIMEOUT}
)
"""Drop reasons that ``serve_late`` turns into "run it anyway, without a deadline"."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The request ran; its outputs by name."""

    outputs: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The request ended without an answer."""

    reason: DropReason
    message: str


Outcome = Answer | Refusal

Done = Callable[[Outcome], Outcome | None]
"""A front end's callback for the end of a request, called exactly once with its outcome. It
returns the outcome the request ends with when that differs (None: as given): an answer it cannot
deliver as the request asked (an output larger than the shared-memory region named for it) ends as
the refusal it returns, and is counted as one."""


def deliver(done: Done, outcome: Outcome, what: str) -> Outcome:
    """Call ``done`` with ``outcome``; the outcome the request ends with (what the statistics count).
    A callback that raises is logged: the request has ended all the same."""
    try:
        ended = done(outcome)
    except Exception:  # a front end's callback must not break the loop
        log.exception("%s: callback failed", what)
        return outcome
    return outcome if ended is None else ended


@dataclass(slots=True)
class _Pending:
    request: Request
    inputs: Tensors
    done: Done
    deadline: float
    """The deadline the request arrived with (kept when ``serve_late`` lifts it)."""
    submitted: float
    """When the front end handed it over (the request's ``arrival`` is earlier by the time it took
    to receive)."""
    dispatched: float = math.nan


@dataclass(slots=True)
class ModelStats:
    """Cumulative counts of one loaded model (what the stats extension and metrics report)."""

    arrivals: int = 0
    """Every request the model saw; ``success_count + fail_count == arrivals + len(pending)``."""
    success_count: int = 0
    success_ns: int = 0
    inference_count: int = 0
    """Rows answered (Triton's ``inference_count``): a client batch of ``n`` rows counts ``n``."""
    fail_count: int = 0
    fail_ns: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    """Failed requests by reason (a :class:`DropReason` value, or ``bad_request``)."""
    queue_count: int = 0
    queue_ns: int = 0
    compute_count: int = 0
    compute_ns: int = 0
    """Compute time of the batches, attributed to each request they carried."""
    execution_count: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    batch_ns: Counter[int] = field(default_factory=Counter)
    profiled_ns: int = 0
    """What the profile predicted for the same batches as ``batch_ns`` (its median latency at the
    instance's cores when each was dispatched); 0 without a profile. ``sum(batch_ns) / profiled_ns``
    is how much slower (> 1) or faster the batches ran than the profile says."""
    slo_met: int = 0
    slo_missed: int = 0
    last_inference_ms: int = 0


@dataclass(slots=True)
class _Window:
    start: float
    arrivals: int = 0
    completed: int = 0
    dropped: int = 0
    met: int = 0
    latencies: list[float] = field(default_factory=list)
    min_budget: float = math.inf
    first_arrival: float = math.inf


_NOT_QUEUED = "it ended before, or is unknown"


def _whole(value: object, what: str, low: float = -math.inf, high: float = math.inf) -> int:
    """``value`` as an int in ``low..high``, else :class:`PolicyError` naming ``what``."""
    number = operator.index(value) if isinstance(value, SupportsIndex) else None
    if number is None or not low <= number <= high:
        raise PolicyError(f"{what} {_short(value)} is not a whole number in {low:g}..{high:g}")
    return number


SpawnInstance = Callable[[int, int], InstanceRunner]
"""``spawn(instance_id, threads)`` makes a (not yet started) instance of the model."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _stops_on_error(
    during: str,
) -> Callable[[Callable[Concatenate[ModelLoop, _P], _R]], Callable[Concatenate[ModelLoop, _P], _R | None]]:
    """Wraps an entry point of the loop: an exception from it (a policy's, mostly) stops the model
    (:meth:`ModelLoop._stop_on_error`) instead of escaping into the event loop, which would log it
    and leave the model's queued requests waiting for ever. The entry point then returns None."""

    def wrap(
        method: Callable[Concatenate[ModelLoop, _P], _R],
    ) -> Callable[Concatenate[ModelLoop, _P], _R | None]:
        @functools.wraps(method)
        def guarded(self: ModelLoop, /, *args: _P.args, **kwargs: _P.kwargs) -> _R | None:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                self._stop_on_error(during, exc)
                return None

        return guarded

    return wrap


class ModelLoop:
    """Serves one model; see the module docstring."""

    def __init__(
        self,
        name: str,
        config: ModelConfig,
        scheduler: Scheduler,
        *,
        clock: Clock,
        timers: Timers,
        spawn: SpawnInstance,
        scaler: Scaler | None = None,
        profile: ModelProfile | None = None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.scheduler = scheduler
        self.scaler = scaler
        self.profile = profile
        self.clock = clock
        self.timers = timers
        self.spawn = spawn
        self.wall_ms = wall_ms
        self.views: dict[int, InstanceView] = {}
        self.runners: dict[int, InstanceRunner] = {}
        self.retiring: set[int] = set()
        self.starting: set[int] = set()
        self.pending: dict[int, _Pending] = {}
        self.stats = ModelStats()
        self.accepting = False
        self.on_dispatch: Callable[[float, Dispatch], None] | None = None
        """Hook for tests and traces: called with every dispatch as it is carried out."""
        self.on_drop: Callable[[float, Drop], None] | None = None
        """Hook for tests and traces: called with every drop as it is carried out."""
        self._ids = itertools.count()
        self._request_ids = itertools.count()
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._scaler_timer: TimerHandle | None = None
        self._scaler_tick_at = math.inf
        self._window = _Window(clock.now())
        self._idle_window = True
        """Whether the last window the scaler saw had no arrivals (True before its first tick)."""
        self._closed_callbacks: list[Callable[[], None]] = []
        self._closing = False
        self.fault: str | None = None
        """Why the model stopped serving (a policy raised, see the module docstring); None while it serves."""
        self._running = 0
        """Pending requests in batches that run (the others are the scheduler's to hold)."""
        self._deciding = False
        """Whether a ``decide``'s decisions are being carried out (a nested one does not count)."""
        cap = config.batch_cap
        formed = getattr(scheduler, "max_batch", None)
        if isinstance(formed, int) and formed > cap:  # capped, as set_max_batch caps a scaler's ask
            log.warning("model %s: scheduler's max_batch %d capped at max_batch_size %d", name, formed, cap)
            scheduler.set_max_batch(cap)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, runners: list[InstanceRunner] | None = None) -> None:
        """Called once: starts the given instances (or ``instance_group.count`` new ones) and the scaler."""
        self.accepting = True
        if runners is None:
            self.set_instance_count(self.config.instance_group.count)
        else:
            for runner in runners:
                self._add(runner)
        if self.scaler is not None:
            self._schedule_tick(self.clock.now() + self.scaler.interval)

    @property
    def ready(self) -> bool:
        """Accepting requests and (unless configured with no instances) with an instance up."""
        if not self.accepting:
            return False
        return any(v.available for v in self.views.values()) or not self.views

    @_stops_on_error("closing the model")
    def close(self, on_closed: Callable[[], None] | None = None) -> None:
        """Stop accepting; queued and running requests still end normally; then stop the instances."""
        self.accepting = False
        self._closing = True
        if on_closed is not None:
            self._closed_callbacks.append(on_closed)
        self._decide(self.clock.now())  # what the scheduler holds for arrivals that cannot come now
        self._maybe_closed()

    @_stops_on_error("draining the queue")
    def abort(self, reason: DropReason = DropReason.UNAVAILABLE, why: str | None = None) -> None:
        """End every queued request with ``reason`` (running batches still finish); ``why``: the
        message they get (default: the reason's)."""
        if self.fault is not None:  # nothing is queued any more
            return
        now = self.clock.now()
        for drop in self.scheduler.drain(now, reason):
            self._check_drop(drop, "drain")
            self._end(now, drop.request.id, Refusal(drop.reason, why or self._reason_text(drop.reason)))
        lost = [rid for rid, p in self.pending.items() if math.isnan(p.dispatched)]
        if lost:  # _stop_on_error ends them with the fault
            raise PolicyError(
                f"the scheduler lost {len(lost)} request(s) {_short(lost)}: its drain did not return "
                "them, and they were neither dispatched nor dropped"
            )
        self._maybe_closed()

    @property
    def closed(self) -> bool:
        """Closed and every request ended."""
        return self._closing and not self.pending

    def _maybe_closed(self) -> None:
        if not self._closing or self.pending:
            return
        for handle in (self._timer, self._scaler_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._scaler_timer = None
        for iid in list(self.runners):
            self._finalize(iid)
        callbacks, self._closed_callbacks = self._closed_callbacks, []
        for callback in callbacks:
            callback()

    def _stop_on_error(self, during: str, exc: Exception) -> None:
        """Called when an entry point raised: the model stops (see the module docstring)."""
        log.error("model %s stopped serving: raised while %s", self.name, during, exc_info=exc)
        if self.fault is None:
            self.fault = (
                f"model {self.name!r} stopped serving: {type(exc).__name__}: {exc} (raised while "
                f"{during}; the server's log has the traceback; load the model again to restart it)"
            )
        self.accepting = False
        for handle in (self._timer, self._scaler_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._scaler_timer = None
        now = self.clock.now()
        for rid, pending in list(self.pending.items()):
            if math.isnan(pending.dispatched):  # queued, not running: nothing will ever run it
                self._end(now, rid, Refusal(DropReason.FAILED, self.fault))
        self._maybe_closed()

    def record_failure(self, reason: str) -> None:
        """Count a request refused before it reached the scheduler (e.g. ``bad_request``)."""
        self.stats.arrivals += 1
        self.stats.fail_count += 1
        self.stats.failures[reason] += 1

    # -- requests ------------------------------------------------------------------------------

    @_stops_on_error("taking a request")
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
        """Called by a front end for each request; ``done`` is called exactly once with the outcome
        (see :data:`Done`). Returns the request's id (what :meth:`cancel` takes).

        ``budget`` is the request's own deadline budget in seconds (None: the model's default),
        counted from its arrival: ``waited`` seconds before now, the time the front end spent
        receiving and decoding it since its first byte (the client's clock was running).
        For a batching model, the inputs' batch dimension is the request's ``rows``: a client-side
        batch is scheduled as one request that fills that many rows of a batch.
        """
        now = self.clock.now()
        rid = next(self._request_ids)
        if not self.accepting:
            self.record_failure(DropReason.UNAVAILABLE.value)
            message = self.fault or f"model {self.name!r} is not accepting requests"
            done(Refusal(DropReason.UNAVAILABLE, message))
            return rid
        slo = self.config.deadline_budget(budget)
        arrival = now - max(0.0, waited)
        deadline = arrival + slo if slo is not None else math.inf
        rows = _rows(inputs) if self.config.max_batch_size > 0 else 1
        request = Request(rid, self.name, arrival, deadline, priority, payload_bytes, rows)
        self.pending[rid] = _Pending(request, inputs, done, deadline, now)
        self.stats.arrivals += 1
        window = self._window
        if window.arrivals == 0:
            window.first_arrival = now
            if self._idle_window:
                self._tick_at_onset(now)
        window.arrivals += 1
        window.min_budget = min(window.min_budget, deadline - now)
        drop = self.scheduler.submit(now, request)
        if drop is not None:
            self._carry_out_drop(now, drop, "submit")
        self._decide(now)
        return rid

    @_stops_on_error("cancelling a request")
    def cancel(self, rid: int) -> None:
        """Called by a front end when the client of request ``rid`` has gone away. A queued request
        leaves the queue and ends now, ``cancelled``; one already running ends with its batch (the
        front end's ``done`` then turns its answer into the same refusal); an ended one: nothing."""
        pending = self.pending.get(rid)
        if pending is None or not math.isnan(pending.dispatched) or self.fault is not None:
            return
        now = self.clock.now()
        if self.scheduler.cancel(now, pending.request):
            self._end(now, rid, Refusal(DropReason.CANCELLED, self._reason_text(DropReason.CANCELLED)))
            self._decide(now)  # the queue changed: what waited for it may go now

    def _decide(self, now: float) -> None:
        """Ask the scheduler and carry out its decisions; a broken one raises :class:`PolicyError`."""
        if self.fault is not None:
            return
        outer = not self._deciding
        self._deciding = True
        try:
            again = True
            while again:
                again = False
                decisions = self.scheduler.decide(now, list(self.views.values()))
                if type(decisions) is not list and not isinstance(decisions, Iterable):
                    raise PolicyError(
                        f"the scheduler's decide returned {_short(decisions)}, not a list of decisions"
                    )
                for decision in decisions:
                    if isinstance(decision, Dispatch):
                        self._dispatch(now, decision)
                    elif isinstance(decision, Drop):
                        again |= self._carry_out_drop(now, decision, "decide")
                    elif isinstance(decision, WaitUntil):
                        self._wake_at(now, decision.time)
                    else:
                        raise PolicyError(
                            f"the scheduler's decide returned {_short(decision)}, not a decision "
                            "(Dispatch, Drop or WaitUntil)"
                        )
        finally:
            if outer:
                self._deciding = False
        queued = len(self.pending) - self._running
        # (asked from inside an outer decide, whose decisions are not all carried out yet: no count)
        if outer and queued and len(self.scheduler) < queued:
            raise PolicyError(
                f"the scheduler lost {queued - len(self.scheduler)} request(s): it holds "
                f"{len(self.scheduler)} (its len) of the {queued} it was handed and neither "
                "dispatched nor dropped"
            )
        if self._closing:
            self._refuse_held(now)

    def _refuse_held(self, now: float) -> None:
        """Called after ``decide`` while closing: requests still queued with no batch running, no
        instance starting and no wake-up asked for can never run (the scheduler waits for arrivals
        to fill a batch, and none can come), so they end now, ``unavailable``."""
        if self._timer is not None or self.starting or any(v.in_flight for v in self.views.values()):
            return
        if any(math.isnan(p.dispatched) for p in self.pending.values()):
            self.abort(why=f"model {self.name!r} was unloaded before the request could run (unavailable)")

    def _wake_at(self, now: float, when: float) -> None:
        """Ask ``decide`` again at ``when``; the earliest pending wake-up is kept (as the simulator does)."""
        if math.isnan(when):  # (a TypeError for what is no number) it would fire at once, again and again
            raise PolicyError(f"the scheduler asked to wait until {_short(when)}, not a time")
        if when <= now:
            when = math.nextafter(now, math.inf)
        elif when == math.inf:  # never: no timer to set
            return
        if self._timer is not None:
            if when >= self._timer_at:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.timers.call_at(when, self._on_timer)

    @_stops_on_error("acting on a timer")
    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self._decide(self.clock.now())

    def _dispatch(self, now: float, decision: Dispatch) -> None:
        """Run a batch, once checked against the rules the simulator enforces: a broken dispatch
        raises :class:`PolicyError` and leaves every request and instance as it was."""
        batch = decision.batch
        view = self.views.get(decision.instance)
        if view is None or not view.free:
            raise PolicyError(self._bad_instance(decision.instance, view))
        requests = batch.requests
        size = batch.size
        cap = self.config.batch_cap
        if not requests or not 0 < size <= cap:
            raise PolicyError(
                f"the scheduler dispatched a batch of {size} rows ({len(requests)} requests, "
                f"{batch.padding} padding) outside 1..max_batch_size={cap}"
            )
        pending = self.pending
        try:
            carried = [pending[r.id] for r in requests]
        except KeyError as exc:
            raise PolicyError(self._bad_request(exc.args[0], carried=None)) from None
        for i, p in enumerate(carried):  # marked as they are checked: one met twice is found marked
            if p.dispatched == p.dispatched:  # not NaN: running already, or earlier in this batch
                message = self._bad_request(p.request.id, carried, i)
                self._unmark(carried, i)
                raise PolicyError(message)
            p.dispatched = now
        self._running += len(carried)
        view.in_flight += 1
        try:
            estimate = self.profile.latency(size, view.cores) if self.profile is not None else 0.0
            view.busy_until = max(view.busy_until, now + estimate)
            inputs = [p.inputs for p in carried]
            if batch.padding:
                inputs.extend([inputs[0]] * batch.padding)
            if self.on_dispatch is not None:
                self.on_dispatch(now, decision)
            self.runners[view.id].submit(
                inputs, lambda result: self._batch_done(batch, view.id, result, estimate, now)
            )
        except BaseException:  # the instance does not have the batch: its requests are still queued
            self._unmark(carried, len(carried))
            self._running -= len(carried)
            view.in_flight -= 1
            raise

    @staticmethod
    def _unmark(carried: list[_Pending], marked: int) -> None:
        """Take back the dispatch marks of the first ``marked`` of ``carried``."""
        for p in carried[:marked]:
            p.dispatched = math.nan

    def _bad_instance(self, iid: object, view: InstanceView | None) -> str:
        """What is wrong with a dispatch to instance ``iid`` (``view``: None when unknown)."""
        if view is None:
            return (
                f"the scheduler dispatched a batch to instance {_short(iid)}, which model "
                f"{self.name!r} does not have (its instances: {sorted(self.views)})"
            )
        return (
            f"the scheduler dispatched a batch to instance {view.id}, which cannot take one now "
            f"(available={view.available}, in_flight={view.in_flight}, "
            f"max_concurrency={view.max_concurrency})"
        )

    @staticmethod
    def _bad_request(rid: int, carried: list[_Pending] | None, at: int = 0) -> str:
        """What is wrong with dispatching request ``rid``: it is not pending (``carried`` None),
        or ``carried[at]`` was found marked: by this batch (it is in it twice) or running."""
        if carried is None:
            return f"the scheduler dispatched request {rid}, which is not queued ({_NOT_QUEUED})"
        pending = carried[at]
        if any(q is pending for q in carried[:at]):
            return f"the scheduler dispatched request {rid} twice in one batch"
        return f"the scheduler dispatched request {rid} again while it runs"

    def _check_drop(self, drop: object, source: str) -> None:
        """Raises :class:`PolicyError` unless ``drop`` (from the scheduler's ``source``) is a
        ``Drop`` of a request queued and not running."""
        if not isinstance(drop, Drop) or not isinstance(drop.reason, DropReason):
            raise PolicyError(f"the scheduler's {source} returned {_short(drop)}, not a Drop")
        rid = drop.request.id
        pending = self.pending.get(rid)
        if pending is None:
            raise PolicyError(
                f"the scheduler's {source} dropped request {rid}, which is not queued ({_NOT_QUEUED})"
            )
        if not math.isnan(pending.dispatched):
            raise PolicyError(
                f"the scheduler's {source} dropped request {rid}, which runs (it was dispatched)"
            )

    @_stops_on_error("completing a batch")
    def _batch_done(
        self, batch: Batch, iid: int, result: BatchResult, estimate: float, dispatched: float
    ) -> None:
        """Called when instance ``iid`` finished ``batch``; ``estimate``: the profile's time for it.

        The scheduler is told the batch's time as this loop saw it, from dispatch to now: the
        compute plus the hand-offs to and from the instance, which a deadline has to cover too
        (the statistics keep the compute time alone)."""
        now = self.clock.now()
        try:
            view = self.views[iid]
            view.in_flight -= 1
            if view.in_flight == 0:
                view.busy_until = min(view.busy_until, now)
            if self.fault is None:
                self.scheduler.on_complete(now, batch, view, max(result.compute_s, now - dispatched))
        finally:  # the batch ran: its requests are answered whatever the scheduler does
            self._end_batch(now, batch, result, estimate)
        if iid in self.retiring and view.in_flight == 0:
            self._finalize(iid)
        self._decide(now)
        self._maybe_closed()

    def _end_batch(self, now: float, batch: Batch, result: BatchResult, estimate: float) -> None:
        """Called when a batch has run: counts it and ends each of its requests with its answer
        (or with the batch's failure)."""
        stats = self.stats
        stats.execution_count += 1
        stats.batch_sizes[batch.size] += 1
        stats.batch_ns[batch.size] += int(result.compute_s * 1e9)
        stats.profiled_ns += int(estimate * 1e9)
        if self.wall_ms is not None:
            stats.last_inference_ms = self.wall_ms()
        for i, r in enumerate(batch.requests):
            pending = self.pending.get(r.id)
            if pending is None:  # the checks in _dispatch keep this from happening; the rest still end
                log.error("model %s: request %d of a finished batch had already ended", self.name, r.id)
                continue
            out = None if result.outputs is None else result.outputs[i]
            if out is None:
                outcome: Outcome = Refusal(DropReason.FAILED, f"inference failed: {result.error}")
            elif isinstance(out, RequestFailure):
                reason = DropReason.REJECTED_INPUT if out.bad_input else DropReason.FAILED
                outcome = Refusal(reason, f"inference failed: {out.message}")
            else:  # queue and compute time are counted for answered requests, as Triton does
                stats.queue_count += 1
                stats.queue_ns += int((pending.dispatched - pending.submitted) * 1e9)
                stats.compute_count += 1
                stats.compute_ns += int(result.compute_s * 1e9)
                outcome = Answer(out)
            self._end(now, r.id, outcome)

    def _carry_out_drop(self, now: float, drop: Drop, source: str) -> bool:
        """End the dropped request, or (``serve_late``) queue it again without a deadline;
        ``source``: the scheduler's method that returned it (for a :class:`PolicyError`).

        Returns whether a request was queued again (``decide`` must then be asked once more).
        """
        self._check_drop(drop, source)
        if self.on_drop is not None:
            self.on_drop(now, drop)
        if self.config.serve_late and drop.reason in LATE_REASONS and not math.isinf(drop.request.deadline):
            relaxed = dataclasses.replace(drop.request, deadline=math.inf)
            self.pending[relaxed.id].request = relaxed
            again = self.scheduler.submit(now, relaxed)
            if again is None:
                return True
            self._check_drop(again, "submit")
            drop = again
        self._end(now, drop.request.id, Refusal(drop.reason, self._reason_text(drop.reason)))
        return False

    def _reason_text(self, reason: DropReason) -> str:
        texts = {
            DropReason.DEADLINE_UNREACHABLE: "the request cannot finish before its deadline",
            DropReason.DEADLINE_EXPIRED: "the request's deadline passed while it waited",
            DropReason.QUEUE_TIMEOUT: "the request's deadline passed while it was queued",
            DropReason.QUEUE_FULL: "the model's queue is full",
            DropReason.UNAVAILABLE: f"model {self.name!r} is unavailable",
            DropReason.FAILED: "inference failed",
            DropReason.CANCELLED: "the client went away before its answer",
        }
        return f"{texts.get(reason, 'refused')} ({reason.value})"

    def _end(self, now: float, rid: int, outcome: Outcome) -> None:
        pending = self.pending.pop(rid)  # KeyError here would mean a request ended twice
        if pending.dispatched == pending.dispatched:  # (not NaN) it ran
            self._running -= 1
        outcome = deliver(pending.done, outcome, f"model {self.name}: request {rid}")
        request = pending.request
        duration_ns = int((now - request.arrival) * 1e9)
        stats = self.stats
        window = self._window
        if isinstance(outcome, Answer):
            stats.success_count += 1
            stats.success_ns += duration_ns
            stats.inference_count += request.rows
            window.completed += 1
            if self.scaler is not None:  # only a scaler's tick reads (and empties) them
                window.latencies.append(now - request.arrival)
            if now <= pending.deadline:
                stats.slo_met += 1
                window.met += 1
            else:
                stats.slo_missed += 1
        else:
            stats.fail_count += 1
            stats.fail_ns += duration_ns
            stats.failures[outcome.reason.value] += 1
            window.dropped += 1

    # -- instances -----------------------------------------------------------------------------

    def _add(self, runner: InstanceRunner | None = None) -> int:
        iid = next(self._ids)
        threads = self.config.instance_group.threads
        if runner is None:
            runner = self.spawn(iid, threads)
        self.views[iid] = InstanceView(
            iid,
            self.name,
            cores=threads,
            max_concurrency=self.config.instance_group.max_concurrency,
            available=False,
        )
        self.runners[iid] = runner
        self.starting.add(iid)
        runner.start(lambda error: self._instance_ready(iid, error))
        return iid

    @_stops_on_error("starting an instance")
    def _instance_ready(self, iid: int, error: str | None) -> None:
        self.starting.discard(iid)
        if iid not in self.views:
            return
        if error is not None:
            log.error("model %s: instance %d failed to start: %s", self.name, iid, error)
            del self.views[iid]
            del self.runners[iid]
            self.retiring.discard(iid)
            return
        if iid in self.retiring:
            self._finalize(iid)
            return
        self.views[iid].available = True
        self._decide(self.clock.now())

    def _finalize(self, iid: int) -> None:
        runner = self.runners.pop(iid, None)
        self.views.pop(iid, None)
        self.retiring.discard(iid)
        if runner is not None:
            runner.stop()

    def set_instance_count(self, count: int) -> None:
        """Add or retire instances until ``count`` serve; retiring ones finish their batches first."""
        live = sorted(i for i in self.views if i not in self.retiring)
        for _ in range(count - len(live)):
            self._add()
        for iid in reversed(live[count:] if count < len(live) else []):
            self.retiring.add(iid)
            view = self.views[iid]
            view.available = False
            if view.in_flight == 0 and iid not in self.starting:  # a starting one ends when ready
                self._finalize(iid)

    def set_instance_threads(self, iid: int, threads: int) -> None:
        """Change the threads of instance ``iid`` in place (batches in flight are not disturbed)."""
        view = self.views.get(iid)
        if view is None or threads < 1:
            return
        view.cores = threads
        self.runners[iid].resize(threads)

    def set_max_batch(self, max_batch: int) -> None:
        """Cap the batches the scheduler forms (never above the model's ``max_batch_size``)."""
        self.scheduler.set_max_batch(max(1, min(max_batch, self.config.batch_cap)))

    def apply(self, decision: ScaleDecision) -> None:
        """Carry out one scaler decision (the repository wraps the scaler in the ``autoscaling`` guards).

        As in the simulator, ``SetInstanceCores`` for an instance the model no longer has is
        skipped and ``SetMaxBatch`` is capped at ``max_batch_size``; a decision for another model,
        a count or cores out of range, or a value that is no scale decision raises
        :class:`PolicyError` (from a tick, the model stops: see :meth:`_tick`)."""
        if isinstance(decision, SetInstanceCount):
            self._check_model(decision, decision.model)
            self.set_instance_count(_whole(decision.count, "SetInstanceCount: count", 0, MAX_INSTANCES))
        elif isinstance(decision, SetInstanceCores):
            cores = _whole(decision.cores, "SetInstanceCores: cores", 1, MAX_THREADS)
            iid = _whole(decision.instance, "SetInstanceCores: instance")
            self.set_instance_threads(iid, cores)
        elif isinstance(decision, SetMaxBatch):
            self._check_model(decision, decision.model)
            self.set_max_batch(_whole(decision.max_batch, "SetMaxBatch: max_batch"))
        else:
            raise PolicyError(
                f"the scaler returned {_short(decision)}, not a scale decision "
                "(SetInstanceCount, SetInstanceCores or SetMaxBatch)"
            )

    def _check_model(self, decision: ScaleDecision, model: object) -> None:
        """A scaler serves its own model: a decision naming another raises :class:`PolicyError`."""
        if model != self.name:
            raise PolicyError(
                f"the scaler of model {self.name!r} returned {_short(decision)}, for another model"
            )

    @_stops_on_error("running the scaler")
    def _tick(self) -> None:
        scaler = self.scaler
        assert scaler is not None
        now = self.clock.now()
        window, self._window = self._window, _Window(now)
        self._idle_window = window.arrivals == 0
        latencies = sorted(window.latencies)
        live = [v for v in self.views.values() if v.id not in self.retiring]
        stats = WindowStats(
            start=window.start,
            end=now,
            arrivals=window.arrivals,
            completed=window.completed,
            dropped=window.dropped,
            met=window.met,
            mean_latency=sum(latencies) / len(latencies) if latencies else 0.0,
            p95_latency=latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else 0.0,
            queue_length=len(self.scheduler),
            instances=len(live),
            cores=sum(v.cores for v in live),
            max_batch=self.scheduler.max_batch,
            min_remaining_budget=window.min_budget,
            first_arrival=window.first_arrival,
        )
        for decision in scaler.on_tick(now, stats):
            self.apply(decision)
        self._decide(now)
        if self.accepting:
            self._schedule_tick(now + scaler.interval)

    def _schedule_tick(self, when: float) -> None:
        if self._scaler_timer is not None:
            self._scaler_timer.cancel()
        self._scaler_tick_at = when
        self._scaler_timer = self.timers.call_at(when, self._tick)

    def _tick_at_onset(self, now: float) -> None:
        """Called at the first arrival after a window with none: brings the scaler's next tick
        forward to ``onset_delay`` from now when it asks for that."""
        delay = self.scaler.onset_delay if self.scaler is not None else None
        if delay is not None and self._scaler_timer is not None and now + delay < self._scaler_tick_at:
            self._schedule_tick(now + delay)

    def instances_summary(self) -> Mapping[int, InstanceView]:
        """The instances serving now (read-only use)."""
        return self.views


def _rows(inputs: Tensors) -> int:
    """The batch dimension of a request's tensors (1 for no tensors or scalars)."""
    first = next(iter(inputs.values()), None)
    return max(1, int(first.shape[0])) if first is not None and getattr(first, "ndim", 0) > 0 else 1
