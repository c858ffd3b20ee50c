"""A plug-in policy that breaks its contract, on the server's model loop (virtual time).

Found by review: the simulator refuses what these schedulers and scalers do (``sim.cluster``); the
server let a value that is no decision leave every request hanging, answered half a batch when a
request was in it twice, lost track of requests a scheduler lost, ran batches above
``max_batch_size`` on a busy or unknown instance, and scaled its own model when a scaler named
another. Now each stops its model with a fault naming what the plug-in did, every request of the
model ends exactly once (running ones with their batch), and the counts add up.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from server_fakes import VirtualInstance, VirtualTimers
from sloserve.core.cluster import InstanceView, WindowStats
from sloserve.core.decisions import (
    Decision,
    Dispatch,
    Drop,
    DropReason,
    SetInstanceCores,
    SetInstanceCount,
    SetMaxBatch,
    WaitUntil,
)
from sloserve.core.profiles import AffineProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.registry import make_scaler, make_scheduler
from sloserve.runtime.model_config import ModelConfig
from sloserve.runtime.model_loop import Answer, ModelLoop, Outcome, Refusal
from sloserve.sim.engine import EventLoop

PROFILE = AffineProfile(model="m", alpha=0.010, beta=0.0, max_batch=4)


class Plugin:
    """A FIFO scheduler written to the contract; subclasses break it in :meth:`decide`."""

    def __init__(self, max_batch: int = 4) -> None:
        self.queue: list[Request] = []
        self.max_batch = max_batch
        self.sent: list[Request] = []
        self.dropped: list[Request] = []

    def set_max_batch(self, max_batch: int) -> None:
        self.max_batch = max_batch

    def submit(self, now: float, request: Request) -> Drop | None:
        self.queue.append(request)
        return None

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        pass

    def drain(self, now: float, reason: DropReason) -> list[Drop]:
        queue, self.queue = self.queue, []
        return [Drop(r, reason) for r in queue]

    def cancel(self, now: float, request: Request) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.queue)

    def take(self, n: int) -> tuple[Request, ...]:
        taken, self.queue = tuple(self.queue[:n]), self.queue[n:]
        self.sent.extend(taken)
        return taken

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        free = [i for i in instances if i.free]
        if not self.queue or not free:
            return []
        return [Dispatch(Batch(self.take(self.max_batch)), free[0].id)]


class Tuple(Plugin):
    """Returns ``(batch, instance)``, not ``Dispatch(batch, instance)``."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        return [(d.batch, d.instance) for d in super().decide(now, instances)]


class Duplicate(Plugin):
    """Puts the first request of a batch of three in it twice: ``(a, b, a, c)``."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        if len(self.queue) < 3:
            return [WaitUntil(now + 0.2)] if self.queue else []
        a, b, c = self.take(3)
        return [Dispatch(Batch((a, b, a, c)), instances[0].id)]


class Twice(Plugin):
    """Adds the last request it sent (running, or answered already) to its next batch."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        last = self.sent[-1:]
        out = super().decide(now, instances)
        return [Dispatch(Batch(d.batch.requests[:2] + tuple(last)), d.instance) for d in out]


class DropThenDispatch(Plugin):
    """Refuses every third request at ``submit``, then dispatches it all the same."""

    def submit(self, now: float, request: Request) -> Drop | None:
        if request.id % 3 == 2:
            self.dropped.append(request)
            return Drop(request, DropReason.QUEUE_FULL)
        return super().submit(now, request)

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        out = super().decide(now, instances)
        if out and self.dropped:
            d = out[0]
            return [Dispatch(Batch((*d.batch.requests[:1], self.dropped.pop())), d.instance)]
        return out


class DropRunning(Plugin):
    """Dispatches a batch, then drops its last request in the same answer."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        out: list[Any] = super().decide(now, instances)
        return [*out, Drop(out[0].batch.requests[-1], DropReason.QUEUE_FULL)] if out else out


class Redrop(Plugin):
    """Drops a request it has dropped already."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        if len(self.queue) >= 2:
            r = self.queue.pop(0)
            return [Drop(r, DropReason.QUEUE_FULL), Drop(r, DropReason.QUEUE_FULL)]
        return []


class Big(Plugin):
    """Ignores ``max_batch``: waits for ten requests and runs them at once."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        if len(self.queue) < 10:
            return [WaitUntil(now + 0.2)] if self.queue else []
        return [Dispatch(Batch(self.take(10)), instances[0].id)]


class Busy(Plugin):
    """Dispatches to the first instance whether it is free or not."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        return [Dispatch(Batch(self.take(1)), instances[0].id)] if self.queue else []


class Unknown(Plugin):
    """Dispatches to instance 999."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        return [Dispatch(Batch(self.take(1)), 999)] if self.queue else []


class Empty(Plugin):
    """Dispatches a batch with no requests."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        return [Dispatch(Batch(()), instances[0].id)] if self.queue else []


class NanWait(Plugin):
    """Asks to be woken at NaN (which fires at once, again and again)."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        return [WaitUntil(math.nan)] if self.queue else []


class LoseAtSubmit(Plugin):
    """Keeps every seventh request nowhere."""

    def submit(self, now: float, request: Request) -> Drop | None:
        return None if request.id % 7 == 6 else super().submit(now, request)


class Holding(Plugin):
    """Waits for a batch of 100 that never fills; its ``drain`` returns nothing."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Any]:
        return []

    def drain(self, now: float, reason: DropReason) -> list[Drop]:
        self.queue = []
        return []


def _loop(
    scheduler: Any, *, max_batch_size: int = 4, count: int = 1, scaler: Any = None
) -> tuple[EventLoop, ModelLoop, dict[int, VirtualInstance]]:
    ev = EventLoop()
    env = VirtualTimers(ev)
    config = ModelConfig.model_validate(
        {"max_batch_size": max_batch_size, "instance_group": {"count": count}}
    )
    runners: dict[int, VirtualInstance] = {}

    def spawn(iid: int, threads: int) -> VirtualInstance:
        runners[iid] = VirtualInstance(ev, PROFILE, threads)
        return runners[iid]

    loop = ModelLoop(
        "m", config, scheduler, clock=env, timers=env, spawn=spawn, scaler=scaler, profile=PROFILE
    )
    loop.start()
    return ev, loop, runners


def _arrivals(ev: EventLoop, loop: ModelLoop, n: int, gap: float = 0.002) -> dict[int, list[Outcome]]:
    """``n`` requests, one every ``gap`` seconds; what each ended with (a list: it must hold one)."""
    ended: dict[int, list[Outcome]] = {}

    def arrive(i: int) -> None:
        loop.submit({}, ended.setdefault(i, []).append)

    for i in range(n):
        ev.at(gap * i + 1e-6, functools.partial(arrive, i))
    return ended


def _ends_once(loop: ModelLoop, ended: dict[int, list[Outcome]], n: int) -> None:
    """Every request ended exactly once, the counts add up, the model has stopped and unloads."""
    assert sorted(ended) == list(range(n)) and all(len(o) == 1 for o in ended.values()), ended
    assert not loop.pending and loop._running == 0
    s = loop.stats
    answered = sum(isinstance(o[0], Answer) for o in ended.values())
    assert (s.success_count, s.success_count + s.fail_count) == (answered, s.arrivals) == (answered, n)
    assert not loop.ready
    closed: list[bool] = []
    loop.close(lambda: closed.append(True))
    assert closed == [True]


BROKEN: dict[str, tuple[Callable[[], Plugin], str]] = {
    "tuple": (Tuple, r"PolicyError: the scheduler's decide returned \(Batch\(requests=.*not a decision"),
    "duplicate": (Duplicate, r"dispatched request 0 twice in one batch"),
    "twice": (Twice, r"dispatched request \d+(?: again while it runs|, which is not queued)"),
    "drop then dispatch": (DropThenDispatch, r"dispatched request \d+, which is not queued"),
    "drop running": (DropRunning, r"decide dropped request \d+, which runs"),
    "redrop": (Redrop, r"decide dropped request 0, which is not queued"),
    "big": (Big, r"dispatched a batch of 10 rows \(10 requests, 0 padding\) outside 1..max_batch_size=4"),
    "busy": (Busy, r"batch to instance 0, which cannot take one now \(available=True, in_flight=1, "),
    "unknown instance": (
        Unknown,
        r"batch to instance 999, which model 'm' does not have \(its instances: \[0\]\)",
    ),
    "empty batch": (Empty, r"a batch of 0 rows \(0 requests"),
    "nan wait": (NanWait, r"asked to wait until nan, not a time"),
    "lost at submit": (
        LoseAtSubmit,
        r"the scheduler lost 1 request\(s\): it holds \d+ \(its len\) of the \d+ it was handed",
    ),
}


@pytest.mark.parametrize("mode", list(BROKEN))
def test_a_scheduler_that_breaks_the_contract_stops_its_model_and_every_request_ends_once(mode: str) -> None:
    make, fault = BROKEN[mode]
    ev, loop, runners = _loop(make())
    ended = _arrivals(ev, loop, 60)
    ev.run()  # returns: nothing is left waiting (before, some ran for ever or never ended)
    assert loop.fault is not None, mode
    assert loop.fault.startswith("model 'm' stopped serving: PolicyError: ")
    assert re.search(fault, loop.fault), loop.fault
    _ends_once(loop, ended, 60)
    refused = [o[0] for o in ended.values() if isinstance(o[0], Refusal)]
    assert any(o.message == loop.fault for o in refused)
    assert all(o.message == loop.fault or o.reason == DropReason.QUEUE_FULL for o in refused)
    assert all(size <= 4 for size in runners[0].submitted)  # nothing above max_batch_size ran


def test_a_request_in_a_batch_twice_is_refused_before_the_batch_runs() -> None:
    """The batch ``(a, b, a, c)`` never reaches the instance; the batches before it are answered."""
    ev, loop, runners = _loop(Duplicate())
    ended = _arrivals(ev, loop, 3)
    ev.run()
    assert runners[0].submitted == [] and loop.views[0].in_flight == 0
    assert [o[0].reason for o in ended.values()] == [DropReason.FAILED] * 3  # type: ignore[union-attr]
    _ends_once(loop, ended, 3)


def test_a_running_request_dropped_or_dispatched_again_ends_once_with_its_batch() -> None:
    """The batch already running when the scheduler broke the contract is answered when it returns."""
    for plugin in (DropRunning(), Twice()):
        ev, loop, runners = _loop(plugin)
        ended = _arrivals(ev, loop, 10, gap=0.001)
        ev.run()
        assert runners[0].submitted[:1] == [1] and isinstance(ended[0][0], Answer)
        _ends_once(loop, ended, 10)


def test_requests_the_scheduler_lost_end_when_the_model_unloads() -> None:
    """A scheduler that holds requests and returns none of them from ``drain``: unloading used to
    wait for them for ever (and a shutdown twice its drain timeout); now they end with the fault."""
    ev, loop, _ = _loop(Holding())
    ended = _arrivals(ev, loop, 5)
    ev.run()
    assert loop.fault is None and len(loop.pending) == 5  # held, as a batcher may
    closed: list[bool] = []
    loop.close(lambda: closed.append(True))
    assert closed == [True] and loop.fault is not None
    assert "the scheduler lost 5 request(s) [0, 1, 2, 3, 4]: its drain did not return them" in loop.fault
    assert all(isinstance(o[0], Refusal) and o[0].reason == DropReason.FAILED for o in ended.values())
    _ends_once(loop, ended, 5)

    ev, loop, _ = _loop(Holding())  # the server's shutdown: abort after its drain timeout
    ended = _arrivals(ev, loop, 5)
    ev.run()
    loop.abort(why="the server shut down")
    assert loop.fault is not None and "lost 5 request(s)" in loop.fault
    _ends_once(loop, ended, 5)


def test_a_scheduler_that_forms_batches_above_the_model_cap_is_capped_at_load() -> None:
    """As ``set_max_batch`` caps a scaler's ``SetMaxBatch``, a scheduler made for a larger
    ``max_batch`` than the model's ``max_batch_size`` is capped when the model loads."""
    plugin = Plugin(max_batch=8)
    ev, loop, runners = _loop(plugin, max_batch_size=2)
    assert plugin.max_batch == 2
    ended = _arrivals(ev, loop, 9, gap=0.0001)
    ev.run()
    assert loop.fault is None and max(runners[0].submitted) == 2
    assert all(isinstance(o[0], Answer) for o in ended.values())
    ctx = PolicyContext(model="m", max_batch=16)
    triton = make_scheduler("triton", ctx)
    _loop(triton, max_batch_size=0)  # no batch dimension: one request at a time
    assert triton.max_batch == 1


class _Asks:
    interval = 1.0
    onset_delay = None

    def __init__(self, decisions: list[Any]) -> None:
        self.decisions = decisions

    def on_tick(self, now: float, window: WindowStats) -> list[Any]:
        return self.decisions


@pytest.mark.parametrize(
    ("decision", "fault"),
    [
        (SetInstanceCount("other", 2), r"the scaler of model 'm' returned SetInstanceCount\(model='other'"),
        (SetMaxBatch("other", 1), r"returned SetMaxBatch\(model='other', max_batch=1\), for another model"),
        (SetInstanceCores(0, 0), r"SetInstanceCores: cores 0 is not a whole number in 1..256"),
        (
            SetInstanceCores(0, 2.5),  # type: ignore[arg-type]
            r"SetInstanceCores: cores 2.5 is not a whole number",
        ),
        (SetInstanceCount("m", -1), r"SetInstanceCount: count -1 is not a whole number in 0..64"),
        (SetInstanceCount("m", 10**6), r"SetInstanceCount: count 1000000 is not a whole number in 0..64"),
        ("hello", r"the scaler returned 'hello', not a scale decision"),
    ],
)
def test_a_scale_decision_for_another_model_or_out_of_range_stops_the_model(
    decision: Any, fault: str
) -> None:
    ev, loop, runners = _loop(Plugin(), count=1, scaler=_Asks([decision]))
    ended = _arrivals(ev, loop, 800)  # 1.6 s: the tick at 1 s stops the model
    ev.run()
    assert loop.fault is not None and "(raised while running the scaler;" in loop.fault
    assert re.search(fault, loop.fault), loop.fault
    assert list(runners) == [0] and runners[0].threads == 1  # nothing was scaled
    _ends_once(loop, ended, 800)


def test_valid_scale_decisions_still_apply() -> None:
    asks = [SetInstanceCount("m", 2), SetInstanceCores(0, 3), SetInstanceCores(7, 2), SetMaxBatch("m", 99)]
    plugin = Plugin()
    ev, loop, runners = _loop(plugin, scaler=_Asks(asks))
    ended = _arrivals(ev, loop, 600)
    ev.run(until=1.3)
    assert loop.fault is None and sorted(loop.views) == [0, 1] and runners[0].threads == 3
    assert plugin.max_batch == 4  # capped at max_batch_size, as before
    loop.close()
    ev.run()
    assert all(len(o) == 1 and isinstance(o[0], Answer) for o in ended.values()) and len(ended) == 600


# -- the registry: plug-ins are checked when they load ------------------------------------------


class NoOnset:
    interval = 1.0

    def on_tick(self, now: float, window: WindowStats) -> list[Any]:
        return []


class ZeroInterval(NoOnset):
    interval = 0.0
    onset_delay = None


def make_no_onset(ctx: PolicyContext) -> NoOnset:
    return NoOnset()


def make_zero_interval(ctx: PolicyContext) -> ZeroInterval:
    return ZeroInterval()


def make_buggy(ctx: PolicyContext, size: int = 1) -> Plugin:
    return Plugin(None + size)  # type: ignore[operator]


def test_a_scaler_without_the_whole_contract_is_refused_at_load() -> None:
    """Before, it loaded READY, and every request then failed on the missing ``onset_delay``."""
    ctx = PolicyContext(model="m")
    with pytest.raises(
        ValueError, match=r"scaler '.*:make_no_onset': NoOnset lacks onset_delay \(see sloserve"
    ):
        make_scaler("test_plugin_contract_server:make_no_onset", ctx)
    with pytest.raises(ValueError, match=r"interval 0.0 is not a positive number of seconds"):
        make_scaler("test_plugin_contract_server:make_zero_interval", ctx)
    assert make_scaler("aimd", PolicyContext(model="m", slo=0.1)).onset_delay is None


def test_a_factorys_own_type_error_is_not_called_bad_parameters() -> None:
    ctx = PolicyContext(model="m")
    name = "test_plugin_contract_server:make_buggy"
    with pytest.raises(ValueError) as err:
        make_scheduler(name, ctx)
    message = str(err.value)
    assert (
        "its factory test_plugin_contract_server:make_buggy raised TypeError: unsupported operand" in message
    )
    assert "bad parameters" not in message
    with pytest.raises(
        ValueError, match=r"bad parameters \['sise'\]: got an unexpected keyword argument 'sise'"
    ):
        make_scheduler(name, ctx, {"sise": 2})


def test_the_checks_leave_decisions_that_keep_the_contract_alone() -> None:
    """Several batches per decide on one instance up to its ``max_concurrency``, client batches of
    several rows, drops of queued requests: all still carried out (as before: this passes on the old
    code too)."""

    class Legal(Plugin):
        def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
            out: list[Decision] = []
            for inst in instances:
                for _ in range(inst.max_concurrency - inst.in_flight):
                    if len(self.queue) > 2:
                        out.append(Drop(self.queue.pop(), DropReason.QUEUE_FULL))
                    if self.queue:
                        out.append(Dispatch(Batch(self.take(2)), inst.id))
            return out

    ev = EventLoop()
    env = VirtualTimers(ev)
    config = ModelConfig.model_validate({"max_batch_size": 4, "instance_group": {"max_concurrency": 2}})
    runner = VirtualInstance(ev, PROFILE, 1)
    loop = ModelLoop("m", config, Legal(), clock=env, timers=env, spawn=lambda i, t: runner, profile=PROFILE)
    loop.start([runner])
    seen: list[tuple[int, int]] = []  # (rows, batches already running) of each dispatch
    loop.on_dispatch = lambda now, d: seen.append((d.batch.size, loop.views[0].in_flight))
    ended: list[Outcome] = []

    def arrive(rows: int) -> None:
        loop.submit({"x": np.zeros((rows, 1))}, ended.append)

    for i in range(40):
        ev.at(0.001 * i, functools.partial(arrive, 1 + i % 2))
    ev.run()
    assert loop.fault is None and len(ended) == 40 and not loop.pending
    assert max(s for s, _ in seen) == 3 and max(k for _, k in seen) == 2  # rows; two at once
    assert {type(o) for o in ended} == {Answer, Refusal}
