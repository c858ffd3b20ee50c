"""The simulator holds policies to their contract (:mod:`sloserve.policies.base`) and reports an
early stop honestly.

Found by review: the exactly-once check compared totals only, so a scheduler that lost a request
and queued an old one again in its place ran with 100% attainment; ``Simulation.finish`` after an
early stop charged and rated the whole arrival window; a scaler's decision naming another model
scaled that model. Now each broken plug-in raises one clear error naming the model, the policy and
the request at the moment it happens, an early stop is charged and rated up to now with its running
requests counted as unfinished, and a scaler acts on its own model only.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sloserve.core.cluster import InstanceView, WindowStats
from sloserve.core.config import ConfigError
from sloserve.core.decisions import (
    Decision,
    Dispatch,
    Drop,
    DropReason,
    ScaleDecision,
    SetInstanceCores,
    SetInstanceCount,
    SetMaxBatch,
)
from sloserve.core.profiles import AffineProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.fixed import FixedBatcher
from sloserve.sim import ModelSetup, Simulation, StreamedWorkload, simulate
from sloserve.sim import workload as wl

PROFILE = AffineProfile("m", alpha=0.01, beta=0.001, max_batch=4)


def at(*times: float, duration: float = -1.0, models: Sequence[int] | None = None) -> wl.Workload:
    a = np.array(times, dtype=float)
    return wl.Workload(a, a + 1.0, models=None if models is None else np.array(models), duration=duration)


class Fifo:
    """A first-in-first-out batcher written to the contract; subclasses break it on purpose."""

    def __init__(self, max_batch: int = 4) -> None:
        self._max = max_batch
        self.queue: deque[Request] = deque()
        self.submitted = 0
        self.sent: list[Request] = []
        self.refused: list[Request] = []

    @property
    def max_batch(self) -> int:
        return self._max

    def set_max_batch(self, max_batch: int) -> None:
        self._max = max_batch

    def submit(self, now: float, request: Request) -> Drop | None:
        self.submitted += 1
        self.queue.append(request)
        return None

    def batch(self) -> list[Request]:
        return [self.queue.popleft() for _ in range(min(len(self.queue), self._max))]

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        out: list[Decision] = []
        for inst in instances:
            if inst.free and self.queue:
                reqs = self.batch()
                self.sent.extend(reqs)
                out.append(Dispatch(Batch(tuple(reqs)), inst.id))
        return out

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        pass

    def drain(self, now: float, reason: DropReason) -> list[Drop]:
        out = [Drop(r, reason) for r in self.queue]
        self.queue.clear()
        return out

    def cancel(self, now: float, request: Request) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.queue)


class Swap(Fifo):
    """Loses every 3rd request and queues the last one it dispatched again in its place."""

    def submit(self, now: float, request: Request) -> Drop | None:
        self.submitted += 1
        self.queue.append(self.sent[-1] if self.submitted % 3 == 0 and self.sent else request)
        return None


class Lose(Fifo):
    """Keeps every 3rd request nowhere (and so cannot drain it)."""

    def submit(self, now: float, request: Request) -> Drop | None:
        self.submitted += 1
        if self.submitted % 3:
            self.queue.append(request)
        return None


class TwiceInBatch(Fifo):
    def batch(self) -> list[Request]:
        first = self.queue.popleft()
        return [first, first]


class RefuseThenDispatch(Fifo):
    """Refuses every 2nd request at submit, then dispatches it with the next batch."""

    def submit(self, now: float, request: Request) -> Drop | None:
        self.submitted += 1
        if self.submitted % 2 == 0:
            self.refused.append(request)
            return Drop(request, DropReason.QUEUE_FULL)
        self.queue.append(request)
        return None

    def batch(self) -> list[Request]:
        return [self.queue.popleft(), *self.refused[-1:]]


class DropTwice(RefuseThenDispatch):
    """Refuses every 2nd request at submit, then drops it again from decide."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        return (
            [Drop(self.refused.pop(), DropReason.QUEUE_FULL)]
            if self.refused
            else super().decide(now, instances)
        )

    def batch(self) -> list[Request]:
        return [self.queue.popleft()]


class DropRunning(Fifo):
    """Drops the last request of each batch it dispatches, in the same decide."""

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        out = super().decide(now, instances)
        return [*out, Drop(self.sent[-1], DropReason.QUEUE_FULL)] if out else out


class Returns(Fifo):
    """Returns ``value`` from ``decide`` (or ``submit``) instead of what the contract says."""

    def __init__(self, value: Any, where: str = "decide") -> None:
        super().__init__()
        self.value, self.where = value, where

    def submit(self, now: float, request: Request) -> Any:
        return self.value if self.where == "submit" else super().submit(now, request)

    def decide(self, now: float, instances: Sequence[InstanceView]) -> Any:
        return self.value if self.where == "decide" else super().decide(now, instances)


def violation(scheduler: Fifo, workload: wl.Workload | StreamedWorkload, **setup: Any) -> tuple[str, float]:
    """Run until the simulator refuses ``scheduler``: the message, and the simulated time then."""
    sim = Simulation(ModelSetup("m", PROFILE, scheduler, **setup), workload)
    with pytest.raises(ConfigError) as caught:  # the CLI prints these as one line, exit 2
        sim.run()
    assert isinstance(caught.value, RuntimeError)
    return str(caught.value), sim.loop.now


def contract(what: str, name: str = "Fifo") -> str:
    head = rf"^model 'm' \(scheduler test_sim_contract\.{name}\) broke the policy contract"
    return rf"{head} at t=[0-9.e-]+ s: {what}$"


# -- 1. every request ends exactly once, checked per request ----------------------------------


def test_a_lost_request_replaced_by_an_old_one_fails_at_the_second_dispatch() -> None:
    """It ran with 100% attainment: the totals matched (the old request ended twice, the lost one
    never), only record=True noticed."""
    message, now = violation(Swap(), at(*np.arange(0, 1, 0.05), duration=1.0))
    # requests 0 and 1 run at t = 0 and 0.05; request 2 is lost at t = 0.1 and 1 queued again
    assert message.startswith(
        "model 'm' (scheduler test_sim_contract.Swap) broke the policy contract at t=0.1 s"
    )
    assert message.endswith(": request 1 dispatched twice")
    assert now == pytest.approx(0.1)  # at once, not at the end of the run


@pytest.mark.parametrize(
    ("scheduler", "what"),
    [
        (TwiceInBatch(), "request 0 dispatched twice in one batch"),
        (RefuseThenDispatch(), "request 1 dispatched after it was dropped"),
        (DropTwice(), "request 1 dropped twice"),
        (DropRunning(), "request 0 dropped after it was dispatched"),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, Fifo) else "",
)
def test_a_request_dispatched_or_dropped_when_it_is_not_waiting_fails_at_once(
    scheduler: Fifo, what: str
) -> None:
    message, now = violation(scheduler, at(0.0, 0.3, 0.6, 0.9))
    assert message.endswith(f": {what}"), message
    assert message.startswith(f"model 'm' (scheduler test_sim_contract.{type(scheduler).__name__})")
    assert now < 0.9


def test_requests_a_scheduler_never_ended_fail_at_the_end_naming_them() -> None:
    message, _ = violation(Lose(), at(*np.arange(0, 1, 0.05), duration=1.0))
    assert message.endswith(
        ": requests 2, 5, 8, 11, 14 and 1 more never ended: the scheduler accepted them (submit returned "
        "None) but neither dispatched nor dropped them, nor returned them from drain"
    )
    assert "(scheduler test_sim_contract.Lose)" in message


def test_the_model_of_a_lost_request_is_named_in_a_multi_model_run() -> None:
    w = at(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, models=[0, 1, 0, 1, 1, 1])
    setups = [ModelSetup("a", PROFILE, Fifo()), ModelSetup("b", PROFILE, Lose())]
    with pytest.raises(
        ConfigError, match=r"^model 'b' \(scheduler test_sim_contract\.Lose\) .*: request 4 never"
    ):
        simulate(setups, w)


def streamed(times: np.ndarray, chunk: int, models: np.ndarray | None = None) -> StreamedWorkload:
    def chunks() -> Iterator[wl.Workload]:
        for lo in range(0, len(times), chunk):
            m = None if models is None else models[lo : lo + chunk]
            yield wl.Workload(times[lo : lo + chunk], times[lo : lo + chunk] + 1.0, models=m)

    return StreamedWorkload(chunks, float(times[-1]) + 1e-9)


class Again(Fifo):
    """Dispatches request 0 again once request 500 (chunk 7 of 64) arrives."""

    def submit(self, now: float, request: Request) -> Drop | None:
        self.queue.append(request)
        if request.id == 500:
            self.queue.append(self.sent[0])
        return None


def test_streamed_workloads_are_checked_across_chunks_and_forget_what_ended() -> None:
    times = np.arange(0, 5, 0.005)
    ok = simulate(ModelSetup("m", PROFILE, Fifo()), streamed(times, 64))
    assert ok.metrics.completed == len(times) and ok.unfinished == 0

    sim = Simulation(ModelSetup("m", PROFILE, Again()), streamed(times, 64))
    with pytest.raises(ConfigError, match=contract("request 0 dispatched after it ended", "Again")):
        sim.run()
    assert sim._base > 0 and len(sim._state) < 200  # the prefix that ended is forgotten

    lose = streamed(times[:300], 64, models=np.array([0, 1] * 150))
    setups = [ModelSetup("a", PROFILE, Fifo()), ModelSetup("b", PROFILE, Lose())]
    with pytest.raises(ConfigError, match=r"^model 'b' .*requests 5, 11, 17, 23, 29 and 45 more never ended"):
        simulate(setups, lose)


@pytest.mark.parametrize(
    ("scheduler", "what"),
    [
        (Returns(None), "decide returned None, not a list of decisions"),
        (Returns([(1, 2)]), r"decide returned \(1, 2\), not a decision \(Dispatch, Drop, WaitUntil\)"),
        (Returns(True, "submit"), "submit returned True, not a Drop or None"),
    ],
)
def test_values_that_are_not_decisions_name_the_scheduler(scheduler: Fifo, what: str) -> None:
    message, _ = violation(scheduler, at(0.0, 0.5))
    assert message.endswith(what.replace("\\", "")), message


def test_sloserve_simulate_prints_a_broken_plug_in_as_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sloserve.cli import main

    (tmp_path / "contract_plug.py").write_text(
        "from test_sim_contract import Swap\n\ndef make(ctx, **params):\n    return Swap()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    config = {
        "name": "plug",
        "models": [
            {"name": "cnn", "profile": {"kind": "affine", "alpha_ms": 6, "beta_ms": 2, "max_batch": 8}}
        ],
        "policies": [{"label": "mine", "scheduler": "contract_plug:make"}],
        "workload": {"kind": "poisson", "rate": 200, "duration_s": 2, "slo_ms": 100},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    code = main(
        ["simulate", str(tmp_path / "exp.yaml"), "--no-progress", "--no-plots", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        "sloserve: error: model 'cnn' (scheduler test_sim_contract.Swap) broke the policy contract"
    )
    assert "dispatched twice" in err
    sys.modules.pop("contract_plug", None)


def test_the_error_type_is_exported_and_reads_as_a_config_error() -> None:
    from sloserve.policies.base import PolicyError

    assert issubclass(PolicyError, ConfigError) and issubclass(PolicyError, RuntimeError)


# -- 2. stopping early ------------------------------------------------------------------------


def test_an_early_stop_is_charged_and_rated_up_to_now_and_counts_running_requests() -> None:
    """It charged and rated the whole 10 s arrival window: half the goodput, twice the core-seconds."""
    slow = AffineProfile("m", alpha=0.5, beta=0.0, max_batch=1)
    w = at(0.0, 1.0, 4.9, 7.0, 9.0, duration=10.0)
    sim = Simulation(ModelSetup("m", slow, FixedBatcher(1)), w, record=True)
    assert sim.run_until(lambda: sim.loop.now >= 5.0)
    r = sim.finish()
    m = r.metrics
    # requests 0 and 1 answered, request 2 (arrived 4.9, due 5.4) still running, 3 and 4 to come
    assert (m.requests, m.completed, m.dropped, r.unfinished) == (3, 2, 0, 1)
    assert m.requests == m.completed + m.dropped + r.unfinished
    assert m.duration == pytest.approx(5.0) and m.core_seconds == pytest.approx(5.0)
    assert m.throughput == pytest.approx(2 / 5.0) and m.goodput == pytest.approx(2 / 5.0)
    assert r.outcomes is not None and r.outcomes.code.tolist() == [-1, -1, -2, -2, -2]


def test_an_early_stop_drains_the_queue_and_after_the_window_rates_per_the_window() -> None:
    slow = AffineProfile("m", alpha=0.5, beta=0.0, max_batch=1)
    w = at(0.0, 0.1, 0.2, 0.3, 0.4, duration=1.0)
    sim = Simulation(ModelSetup("m", slow, FixedBatcher(1)), w)
    assert sim.run_until(lambda: sim.loop.now >= 1.2)  # stops at 1.5: request 3 running, 4 queued
    r = sim.finish()
    m = r.metrics
    assert sim.loop.now == 1.5 and (m.completed, m.dropped, r.unfinished) == (3, 1, 1)
    assert m.drops_by_reason == {"unavailable": 1}
    assert m.duration == pytest.approx(1.0) and m.core_seconds == pytest.approx(sim.loop.now)


def test_a_settled_run_ends_every_request_and_rates_per_the_arrival_window() -> None:
    w = at(0.0, 1.0, 4.9, 7.0, 9.0, duration=10.0)
    r = simulate(ModelSetup("m", PROFILE, FixedBatcher(1)), w)
    m = r.metrics
    assert r.unfinished == 0 and m.completed + m.dropped == m.requests == 5
    assert m.duration == 10.0 and m.core_seconds == pytest.approx(10.0)


# -- 3. a scaler acts on its own model ----------------------------------------------------------


class Asks:
    """A scaler that returns ``decisions`` at its first tick."""

    interval = 0.5
    onset_delay = None

    def __init__(self, decisions: Any) -> None:
        self.decisions = decisions

    def on_tick(self, now: float, window: WindowStats) -> list[ScaleDecision]:
        out, self.decisions = self.decisions, []
        return out  # type: ignore[no-any-return]


def two_models(scaler: Asks) -> Simulation:
    setups = [ModelSetup("A", PROFILE, Fifo(), scaler=scaler), ModelSetup("B", PROFILE, Fifo())]
    return Simulation(setups, at(0.0, 0.2, 0.4, 0.8, 1.2, models=[0, 1, 0, 1, 0]))


@pytest.mark.parametrize("decision", [SetInstanceCount("B", 3), SetMaxBatch("B", 1)])
def test_a_decision_naming_another_model_is_refused(decision: ScaleDecision) -> None:
    sim = two_models(Asks([decision]))
    with pytest.raises(ConfigError) as caught:
        sim.run()
    assert str(caught.value) == (
        f"model 'A' (scaler test_sim_contract.Asks) broke the policy contract at t=0.5 s: {decision!r}: "
        "names model 'B', but a scaler acts on its own model 'A' only"
    )
    b = sim.models[1]
    assert len(b.instances) == 1 and b.scheduler.max_batch == 4  # B untouched


def test_apply_serves_the_named_model_only() -> None:
    sim = two_models(Asks([]))
    sim.apply(SetInstanceCount("A", 2), "A")
    sim.apply(SetMaxBatch("A", 100), "A")
    assert len(sim.models[0].instances) == 2 and sim.models[0].scheduler.max_batch == 4  # capped
    with pytest.raises(ConfigError, match=r"SetInstanceCount\(model='B', count=3\): names model 'B'"):
        sim.apply(SetInstanceCount("B", 3), "A")
    assert len(sim.models[1].instances) == 1


@pytest.mark.parametrize(
    ("decisions", "what"),
    [
        ([SetInstanceCount("A", -1)], "the count must be a whole number >= 0"),
        ([SetInstanceCount("A", 2.5)], "the count must be a whole number >= 0"),  # type: ignore[arg-type]
        ([SetInstanceCores(0, 0)], "the cores must be a whole number >= 1"),
        ([SetMaxBatch("A", "8")], "the batch cap must be a whole number"),  # type: ignore[arg-type]
        (["hello"], r"'hello' is not a scale decision \(SetInstanceCount, SetInstanceCores, SetMaxBatch\)"),
        (None, "on_tick returned None, not a list of decisions"),
    ],
)
def test_invalid_scale_decisions_raise_a_clear_error(decisions: Any, what: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^model 'A' \(scaler test_sim_contract\.Asks\) .* at t=0\.5 s: .*{what}$"
    ):
        two_models(Asks(decisions)).run()


def test_a_well_behaved_run_is_unchanged_by_the_checks() -> None:
    """Exactly-once bookkeeping, a scaler on its own model, record=True agreeing with the counts."""
    w = wl.with_slo(wl.poisson(rate=300, duration=3, seed=2), slo=0.05)
    scaler = Asks([SetInstanceCount("m", 2), SetInstanceCores(0, 2), SetMaxBatch("m", 2)])
    r = simulate(ModelSetup("m", PROFILE, Fifo(), scaler=scaler), w, record=True)
    o = r.outcomes
    assert o is not None and r.unfinished == 0
    assert int((o.code != -2).sum()) == r.metrics.requests == r.metrics.completed + r.metrics.dropped
    assert math.isclose(r.metrics.duration, 3.0)
