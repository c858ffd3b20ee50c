"""The model loop on virtual time: scaling while serving, in-place resizes, scalers and their
bounds, serve_late, drain on close, failing instances — every request ends exactly once."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_fakes import FragileScheduler, VirtualInstance, VirtualTimers
from sloserve.core.cluster import WindowStats
from sloserve.core.config import ConfigError
from sloserve.core.decisions import DropReason, SetInstanceCores, SetInstanceCount, SetMaxBatch
from sloserve.core.profiles import AffineProfile, ModelProfile, SpongeProfile
from sloserve.policies.base import PolicyContext
from sloserve.policies.registry import make_scheduler
from sloserve.policies.scaling_guards import BoundedScaler
from sloserve.runtime.model_config import ModelConfig, load_model_config
from sloserve.runtime.model_loop import Answer, ModelLoop, Outcome, Refusal
from sloserve.sim.engine import EventLoop

PROFILE = AffineProfile(model="m", alpha=0.010, beta=0.0, max_batch=4)


class _Scaler:
    interval = 1.0

    def __init__(self, plan: list[list[Any]], onset_delay: float | None = None) -> None:
        self.plan = plan
        self.onset_delay = onset_delay
        self.windows: list[WindowStats] = []

    def on_tick(self, now: float, window: WindowStats) -> list[Any]:
        self.windows.append(window)
        return self.plan.pop(0) if self.plan else []


def _loop(
    config: dict[str, Any] | None = None,
    scheduler: str = "triton",
    scaler: Any = None,
    slowdown: float = 1.0,
    profile: ModelProfile = PROFILE,
    handoff: float = 0.0,
) -> tuple[EventLoop, ModelLoop, dict[int, VirtualInstance]]:
    ev = EventLoop()
    env = VirtualTimers(ev)
    cfg = ModelConfig.model_validate({"max_batch_size": 4, **(config or {})})
    ctx = PolicyContext(model="m", max_batch=4, profile=profile, slo=cfg.slo_ms and cfg.slo_ms * 1e-3)
    runners: dict[int, VirtualInstance] = {}

    def spawn(iid: int, threads: int) -> VirtualInstance:
        runners[iid] = VirtualInstance(ev, profile, threads, slowdown, handoff)
        return runners[iid]

    loop = ModelLoop(
        "m",
        cfg,
        make_scheduler(scheduler, ctx, cfg.scheduler_params()),
        clock=env,
        timers=env,
        spawn=spawn,
        scaler=scaler,
        profile=profile,
    )
    loop.start()
    return ev, loop, runners


def _send(loop: ModelLoop, outcomes: list[Outcome], n: int, **kw: Any) -> None:
    for _ in range(n):
        loop.submit({}, outcomes.append, **kw)


def test_scaling_down_while_busy_fails_nothing() -> None:
    ev, loop, runners = _loop({"instance_group": {"count": 2}})
    outcomes: list[Outcome] = []
    _send(loop, outcomes, 8)
    assert [v.in_flight for v in loop.views.values()] == [1, 1]
    loop.set_instance_count(1)  # instance 1 is busy: it retires after its batch
    assert 1 in loop.views and not loop.views[1].available
    ev.run()
    assert 1 not in loop.views and runners[1].stopped and not runners[0].stopped
    assert len(outcomes) == 8 and all(isinstance(o, Answer) for o in outcomes)
    loop.set_instance_count(3)
    assert sorted(loop.views) == [0, 2, 3]
    _send(loop, outcomes, 12)
    ev.run()
    assert len(outcomes) == 20 and all(isinstance(o, Answer) for o in outcomes)
    assert {len(r.submitted) > 0 for r in (runners[2], runners[3])} == {True}


def test_the_scalers_window_carries_its_first_arrival() -> None:
    scaler = _Scaler([])
    ev, loop, _ = _loop(scaler=scaler)
    outcomes: list[Outcome] = []
    ev.run(until=0.6)
    _send(loop, outcomes, 3)
    ev.run(until=0.8)
    _send(loop, outcomes, 2)
    ev.run(until=2.5)
    first, second = scaler.windows[:2]
    assert first.arrivals == 5 and first.first_arrival == pytest.approx(0.6)
    assert first.onset_rate == pytest.approx(4 / 0.4)  # 4 arrivals after the first, in its last 0.4 s
    assert second.arrivals == 0 and second.first_arrival == math.inf
    loop.close()
    ev.run()


def test_a_model_without_a_scaler_keeps_no_latency_per_request() -> None:
    """Found by review: each answer's latency went into the scaler's window, which only a
    scaler's tick empties: a model without one grew by a float per request for ever."""
    ev, loop, _ = _loop()
    outcomes: list[Outcome] = []
    for _ in range(50):
        _send(loop, outcomes, 4)
        ev.run()
    assert len(outcomes) == 200 and all(isinstance(o, Answer) for o in outcomes)
    assert loop._window.latencies == []
    scaler = _Scaler([])
    ev, loop, _ = _loop(scaler=scaler)  # with one, the window's latencies reach it
    _send(loop, outcomes, 4)
    ev.run(until=1.5)
    assert scaler.windows[0].completed == 4 and scaler.windows[0].mean_latency > 0
    loop.close()
    ev.run()


def test_a_scaler_that_asks_ticks_early_when_traffic_begins() -> None:
    ends = {}
    for onset in (None, 0.25):
        scaler = _Scaler([], onset_delay=onset)
        ev, loop, _ = _loop(scaler=BoundedScaler(scaler))  # the repository's guard passes it on
        outcomes: list[Outcome] = []
        ev.run(until=1.6)
        _send(loop, outcomes, 3)  # traffic begins after an idle window
        ev.run(until=2.1)
        _send(loop, outcomes, 2)  # in a window that follows one with arrivals: no early tick
        ev.run(until=4.0)
        ends[onset] = [round(w.end, 6) for w in scaler.windows]
        if onset is not None:
            assert scaler.windows[1].first_arrival == pytest.approx(1.6)
            assert scaler.windows[1].onset_rate == pytest.approx(2 / 0.25)
        loop.close()
        ev.run()
        assert len(outcomes) == 5
    assert ends[None] == [1.0, 2.0, 3.0, 4.0]
    assert ends[0.25] == [1.0, 1.85, 2.85, 3.85]


def test_stats_keep_the_profiles_time_beside_the_measured_time_of_each_batch() -> None:
    by_cores = SpongeProfile("m", gamma=0.002, delta=0.0, epsilon=0.010, eta=0.0, max_batch=4)
    ev, loop, runners = _loop({"instance_group": {"threads": 2}}, slowdown=1.5, profile=by_cores)
    outcomes: list[Outcome] = []
    _send(loop, outcomes, 6)
    ev.run(until=0.5)
    before = len(runners[0].submitted)
    loop.set_instance_threads(0, 1)  # later batches are predicted at one thread
    _send(loop, outcomes, 3)
    ev.run(until=1.0)
    s = loop.stats
    sizes = runners[0].submitted
    assert len(outcomes) == 9 and len(sizes) > before > 0
    predicted = sum(by_cores.latency(b, 2 if i < before else 1) for i, b in enumerate(sizes))
    assert s.profiled_ns == pytest.approx(predicted * 1e9, abs=10)
    assert sum(s.batch_ns.values()) == pytest.approx(1.5 * s.profiled_ns, rel=1e-6)
    loop.close()
    ev.run()


def test_the_scheduler_learns_a_batchs_time_as_the_loop_saw_it() -> None:
    """A batch computes in 10 ms and its answer reaches the loop 3 ms later (the hand-off between
    threads): the scheduler, which plans deadlines in the loop's time, is told 13 ms; the
    statistics keep the 10 ms of compute."""
    ev, loop, _ = _loop(handoff=0.003)
    told: list[float] = []
    on_complete = loop.scheduler.on_complete

    def record(now: float, batch: Any, view: Any, latency: float) -> None:
        told.append(latency)
        on_complete(now, batch, view, latency)

    loop.scheduler.on_complete = record  # type: ignore[method-assign]
    outcomes: list[Outcome] = []
    _send(loop, outcomes, 3)
    ev.run(until=0.5)
    assert len(outcomes) == 3 and told
    assert told == pytest.approx([0.013] * len(told))
    assert sum(loop.stats.batch_ns.values()) == pytest.approx(len(told) * 0.010 * 1e9, rel=1e-6)
    loop.close()
    ev.run()


def test_resize_in_place_and_scaler_bounds() -> None:
    scaler = _Scaler(
        [
            [SetInstanceCores(0, 3), SetMaxBatch("m", 2)],
            [SetInstanceCount("m", 10)],  # above autoscaling.max_replicas
        ]
    )
    guarded = BoundedScaler(scaler, min_replicas=1, max_replicas=2)
    ev, loop, runners = _loop(scaler=guarded)
    outcomes: list[Outcome] = []
    _send(loop, outcomes, 3)
    ev.run(until=1.5)
    assert loop.views[0].cores == 3 and runners[0].threads == 3 and loop.scheduler.max_batch == 2
    ev.run(until=2.5)
    assert len(loop.views) == 2  # clamped to max_replicas
    assert scaler.windows[0].arrivals == 3 and scaler.windows[0].completed == 3
    _send(loop, outcomes, 4)
    ev.run(until=3.5)
    assert all(isinstance(o, Answer) for o in outcomes) and len(outcomes) == 7
    loop.close()
    ev.run()


def test_serve_late_runs_what_would_be_refused() -> None:
    for late, expect in ((False, Refusal), (True, Answer)):
        ev, loop, _ = _loop(
            {"slo_ms": 1000, "serve_late": late, "scheduler": {"name": "slo"}}, scheduler="slo"
        )
        outcomes: list[Outcome] = []
        _send(loop, outcomes, 1, budget=0.001)  # 1 ms; a batch takes 10 ms
        ev.run()
        assert len(outcomes) == 1 and isinstance(outcomes[0], expect)
        if late:
            assert loop.stats.slo_missed == 1
        else:
            assert outcomes[0].reason == DropReason.DEADLINE_UNREACHABLE  # type: ignore[union-attr]


def test_close_drains_and_abort_refuses() -> None:
    ev, loop, runners = _loop()
    outcomes: list[Outcome] = []
    _send(loop, outcomes, 9)
    closed: list[bool] = []
    loop.close(lambda: closed.append(True))
    _send(loop, outcomes, 1)  # refused at once: not accepting
    assert isinstance(outcomes[-1], Refusal) and outcomes[-1].reason == DropReason.UNAVAILABLE
    ev.run()
    assert closed == [True] and runners[0].stopped
    assert sum(isinstance(o, Answer) for o in outcomes) == 9

    ev, loop, _ = _loop()
    outcomes = []
    _send(loop, outcomes, 9)
    loop.abort()  # queued ones end now; the running batch (the first request, alone) still finishes
    ev.run()
    assert sum(isinstance(o, Answer) for o in outcomes) == 1
    assert sum(isinstance(o, Refusal) for o in outcomes) == 8
    assert loop.stats.success_count + loop.stats.fail_count == loop.stats.arrivals == 9


def test_a_cancelled_request_leaves_the_queue_at_once_and_ends_once() -> None:
    """``cancel`` (the front end's, when a client goes away): a queued request ends now, frees its
    queue slot and never runs; a running one, or one already ended, is left to end as it does."""
    ev, loop, runners = _loop({"max_batch_size": 1})
    loop.scheduler.max_queue_size = 2  # type: ignore[attr-defined]  # (_loop's context has no queue cap)
    outcomes: dict[int, Outcome] = {}

    def send(i: int) -> int:
        rid = loop.submit({}, lambda o: outcomes.setdefault(i, o))
        assert rid is not None
        return rid

    running, queued, _ = send(0), send(1), send(2)  # 0 runs; 1 and 2 fill the queue
    send(3)
    assert outcomes[3].reason == DropReason.QUEUE_FULL  # type: ignore[union-attr]
    loop.cancel(queued)
    assert outcomes[1] == Refusal(DropReason.CANCELLED, "the client went away before its answer (cancelled)")
    send(4)  # the slot it held is free
    loop.cancel(queued)  # ended already: nothing happens
    loop.cancel(running)  # running: it ends with its batch
    ev.run()
    assert sorted(i for i, o in outcomes.items() if isinstance(o, Answer)) == [0, 2, 4]
    assert sum(runners[0].submitted) == 3  # 1 never ran
    assert loop.stats.failures == {"queue_full": 1, "cancelled": 1}
    assert loop.stats.success_count + loop.stats.fail_count == loop.stats.arrivals == 5


def test_a_scheduler_without_the_whole_contract_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match=r"SchedulerWithoutCancel lacks cancel \(see sloserve"):
        make_scheduler("server_fakes:make_scheduler_without_cancel", PolicyContext(model="m"))


def test_instance_that_fails_to_start_is_dropped() -> None:
    ev, loop, _runners = _loop({"instance_group": {"count": 1}})

    class Broken(VirtualInstance):
        def start(self, ready: Any) -> None:
            ready("cannot load")

    loop.spawn = lambda iid, threads: Broken(ev, PROFILE, threads)
    loop.set_instance_count(2)
    assert list(loop.views) == [0]
    outcomes: list[Outcome] = []
    _send(loop, outcomes, 2)
    ev.run()
    assert all(isinstance(o, Answer) for o in outcomes)


class _RaisingScaler(_Scaler):
    def on_tick(self, now: float, window: WindowStats) -> list[Any]:
        raise ZeroDivisionError("scaler bug")


@pytest.mark.parametrize("fail_in", ["submit", "decide", "on_complete", "on_tick"])
def test_a_policy_that_raises_stops_the_model_and_every_request_still_ends_once(fail_in: str) -> None:
    """A scheduler (or scaler) that raises must not leave requests queued for ever: what ran is
    answered, what was queued is refused with the reason, and the model refuses what comes after."""
    scaler = _RaisingScaler([]) if fail_in == "on_tick" else None  # ticks at 1 s
    ev, loop, _ = _loop({"instance_group": {"count": 2}, "priority_levels": 2}, scaler=scaler)
    loop.scheduler = FragileScheduler(fail_in, max_batch=4, priority_levels=2)
    trigger = 500 if fail_in == "on_tick" else 300  # the request at 1 s, or the one of priority 1
    ended: dict[int, Outcome] = {}

    def arrive(i: int) -> None:
        def done(outcome: Outcome) -> None:
            assert i not in ended, "a request ended twice"
            ended[i] = outcome

        loop.submit({}, done, priority=1 if i == trigger and scaler is None else 0)

    for i in range(700):  # one every 2 ms; two instances serve 4 per 10 ms each
        ev.at(0.002 * i + 1e-6, lambda i=i: arrive(i))
    ev.run()  # returns: the model's timers are gone with it
    assert sorted(ended) == list(range(700)) and not loop.pending
    assert loop.fault is not None and "ZeroDivisionError" in loop.fault and not loop.ready
    assert all(isinstance(ended[i], Answer) for i in range(trigger - 10))
    refused = {i: o for i, o in ended.items() if isinstance(o, Refusal)}
    assert min(refused) >= trigger - 10 and max(refused) == 699
    assert {o.reason for o in refused.values()} <= {DropReason.FAILED, DropReason.UNAVAILABLE}
    assert all(o.message == loop.fault for o in refused.values())
    assert all(o.reason == DropReason.UNAVAILABLE for i, o in refused.items() if i > trigger + 20)
    if fail_in in ("submit", "decide"):  # the request that made it raise ends too
        assert refused[trigger].reason == DropReason.FAILED
    s = loop.stats
    assert s.success_count + s.fail_count == s.arrivals == 700
    closed: list[bool] = []
    loop.close(lambda: closed.append(True))
    assert closed == [True]


def test_config_errors_name_file_and_field(tmp_path: Any) -> None:
    cases = {
        "preferred_batch_size: [16]\nmax_batch_size: 8\n": "preferred_batch_size [16]",
        "queue_policy: {timeout_action: DROP}\n": "queue_policy.timeout_action",
        "max_batch_sise: 8\n": "max_batch_sise",
        "instance_group: {count: 1, threads: 0}\n": "instance_group.threads",
        "name: other\n": "differs from the directory name",
        "profile: missing.yaml\n": "profile: file 'missing.yaml' not found",
        "autoscaling: {min_replicas: 3, max_replicas: 2}\n": "min_replicas (3) > max_replicas (2)",
        # found by fuzzing: a config could name any file of the machine
        "labels: {OUTPUT0: ../../../etc/passwd}\n": "labels: OUTPUT0: '../../../etc/passwd' is outside",
        "model_file: /etc/hostname\n": "model_file: '/etc/hostname' is outside the model directory",
        "profile: ../p.yaml\n": "profile: '../p.yaml' is outside",
        "a: " + "[" * 100_000 + "]" * 100_000 + "\n": "nested too deeply",
        # the last of two values used to win in silence
        "max_batch_size: 8\nslo_ms: 20\nmax_batch_size: 4\n": "duplicate key 'max_batch_size'",
        "instance_group: {count: 1, count: 2}\n": "duplicate key 'count'",
        # pydantic reads true as 1 and "8" as 8
        "max_batch_size: true\n": "max_batch_size: expected a number, got True",
        "slo_ms: '20'\n": "slo_ms: expected a number, got '20'",
        "instance_group: {count: 1, threads: yes}\n": "instance_group: threads: expected a number, got True",
        "preferred_batch_size: ['64', 128]\n": "preferred_batch_size.0: expected a number",
        # bounds that bound nothing were taken in silence
        "autoscaling: {min_replicas: 3}\n": "autoscaling: bounds a scaler's instance count, but the config",
        "scaler: {name: aimd}\ninstance_group: {count: 5}\nautoscaling: {max_replicas: 2}\n": (
            "instance_group.count: 5 lies outside autoscaling's 0..2 replicas"
        ),
    }
    for i, (text, words) in enumerate(cases.items()):
        d = tmp_path / f"m{i}"
        d.mkdir()
        (d / "config.yaml").write_text(text)
        with pytest.raises(ConfigError) as err:
            load_model_config(d)
        assert str(d / "config.yaml") in str(err.value) and words in str(err.value), str(err.value)
    exponent = tmp_path / "exponent"
    exponent.mkdir()
    (exponent / "config.yaml").write_text("slo_ms: 2e1\nmax_queue_delay_microseconds: 1e3\n")
    config = load_model_config(exponent)  # YAML 1.2 / JSON numbers; PyYAML alone reads them as text
    assert (config.slo_ms, config.max_queue_delay_microseconds) == (20.0, 1000)
    ok = tmp_path / "ok"
    ok.mkdir()
    config = load_model_config(ok)  # no file: defaults
    assert config.scheduler.name == "triton" and config.deadline_budget(None) is None
    assert config.deadline_budget(0.5) == 0.5
    (ok / "config.yaml").write_text("queue_policy: {default_timeout_microseconds: 50000}\n")
    config = load_model_config(ok)  # as in Triton, a request's timeout only shortens the default
    assert config.deadline_budget(None) == config.deadline_budget(10.0) == pytest.approx(0.05)
    assert config.deadline_budget(0.01) == pytest.approx(0.01)


def test_bounded_scaler_delays_and_bounds() -> None:
    def window(instances: int) -> WindowStats:
        return WindowStats(0, 1, 0, 0, 0, 0, 0.0, 0.0, 0, instances, instances, 1, float("inf"))

    asks = _Scaler([[SetInstanceCount("m", 5)]] * 4 + [[SetInstanceCount("m", 1)]] * 3)
    guard = BoundedScaler(asks, min_replicas=2, max_replicas=4, upscale_delay_s=2.0, downscale_delay_s=1.0)
    got = [guard.on_tick(float(t), window(2 if t < 3 else 4)) for t in range(7)]
    assert got[:2] == [[], []]  # asked for more since t=0: not yet 2 s
    assert got[2] == [SetInstanceCount("m", 4)]  # after 2 s, clamped to max_replicas
    assert got[3] == []  # 4 run: nothing to change
    assert got[4:] == [[], [SetInstanceCount("m", 2)], []]  # down after 1 s, clamped to min_replicas


def test_a_scale_the_scaler_asks_for_once_is_applied_after_the_delay() -> None:
    """Found by review: scalers ask for a count once, when it changes; the guard held the first ask
    back for its delay, saw no ask on the next tick and forgot it, so with any delay the instance
    count never changed (Horizontal and DNNScaler's instance scaler alike)."""

    def window(instances: int) -> WindowStats:
        return WindowStats(0, 1, 0, 0, 0, 0, 0.0, 0.0, 0, instances, instances, 1, float("inf"))

    once = [[SetInstanceCount("m", 3)], [], [], [], [], [SetInstanceCount("m", 1)], [], []]
    guard = BoundedScaler(_Scaler(once), upscale_delay_s=1.5, downscale_delay_s=1.0)
    running = [1, 1, 1, 3, 3, 3, 3, 1]
    got = [guard.on_tick(float(t), window(n)) for t, n in enumerate(running)]
    assert got == [[], [], [SetInstanceCount("m", 3)], [], [], [], [SetInstanceCount("m", 1)], []]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    scheduler=st.sampled_from(["triton", "slo"]),
    serve_late=st.booleans(),
    changes=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 3), st.integers(1, 3)), max_size=6),
)
def test_every_request_ends_exactly_once(
    seed: int, scheduler: str, serve_late: bool, changes: list[tuple[float, int, int]]
) -> None:
    """Random traces, deadlines and scaling while serving: each request ends once, never early."""
    rng = np.random.default_rng(seed)
    config = {"slo_ms": 30, "serve_late": serve_late, "scheduler": {"name": scheduler}}
    ev, loop, _ = _loop({**config, "instance_group": {"count": 1}}, scheduler=scheduler)
    ended: dict[int, tuple[Outcome, float]] = {}
    arrivals = np.cumsum(rng.exponential(1 / 400, 200))
    for t, count, threads in changes:
        ev.at(t, lambda c=count: loop.set_instance_count(c))
        ev.at(t, lambda th=threads: [loop.set_instance_threads(i, th) for i in list(loop.views)])
    ev.at(0.6, lambda: loop.set_instance_count(1))  # end with capacity, so queued work drains

    def arrive(i: int, budget: float | None) -> None:
        def done(outcome: Outcome) -> None:
            assert i not in ended, "a request ended twice"
            ended[i] = (outcome, ev.now)

        loop.submit({}, done, budget=budget)

    for i, t in enumerate(arrivals):
        budget = float(rng.choice([0.001, 0.02, 0.1])) if rng.random() < 0.5 else None
        ev.at(float(t), lambda i=i, b=budget: arrive(i, b))
    ev.run()
    assert sorted(ended) == list(range(len(arrivals)))
    for i, (outcome, t) in ended.items():
        if isinstance(outcome, Answer):
            assert t >= arrivals[i] + PROFILE.latency(1) - 1e-12  # no answer before the service time
    s = loop.stats
    assert s.success_count + s.fail_count == s.arrivals == len(arrivals) and not loop.pending
