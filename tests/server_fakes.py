"""Helpers for the server tests: a controllable fake backend and repository builders.

Not a test module (no ``test_`` prefix); the server test files import it by name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import numpy as np
import yaml

from sloserve.core.cluster import InstanceView
from sloserve.core.decisions import Decision, Drop
from sloserve.core.profiles import ModelProfile
from sloserve.core.request import Batch, Request
from sloserve.policies.base import PolicyContext
from sloserve.policies.triton import TritonDynamicBatcher
from sloserve.runtime.backend import TensorSpec
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.instances import BatchResult, InstanceRunner, Tensors
from sloserve.runtime.model_config import ModelConfig
from sloserve.runtime.service import BackgroundServer
from sloserve.sim.engine import EventLoop

SPEC_IN = TensorSpec("INPUT0", "FP32", (-1, -1))
SPEC_OUT = TensorSpec("OUTPUT0", "FP32", (-1, -1))


@dataclass
class FakeControl:
    """Shared by every instance of one fake model: a gate that holds batches, and what ran."""

    gate: threading.Event = field(default_factory=threading.Event)
    batches: list[list[float]] = field(default_factory=list)
    """First element of each request's row, per batch, in the order the batches ran."""
    running: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    """Released once each time a batch starts."""
    delay: float = 0.0
    load_delay: float = 0.0
    """Seconds each instance takes to start (a model that loads slowly)."""
    threads_seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.set()

    def started(self, timeout: float = 10.0) -> bool:
        """Wait for a batch to start (taking one start from :attr:`running`); False on timeout."""
        end = time.monotonic() + timeout
        while not self.running.acquire(blocking=False):
            if time.monotonic() > end:
                return False
            _yield_to_greenlets()
        return True


class FakeBackend:
    """Identity on ``INPUT0`` → ``OUTPUT0`` (FP32, [-1, -1]) that can be held by its control's gate."""

    def __init__(self, control: FakeControl, threads: int) -> None:
        time.sleep(control.load_delay)
        self.control = control
        self._threads = threads
        control.threads_seen.append(threads)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (SPEC_IN,)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (SPEC_OUT,)

    @property
    def threads(self) -> int:
        return self._threads

    def run(self, inputs: Any) -> dict[str, np.ndarray]:
        x = inputs["INPUT0"]
        self.control.batches.append([float(v) for v in x[:, 0]] if x.shape[1] else [])
        self.control.running.release()
        if not self.control.gate.wait(timeout=30):
            raise RuntimeError("fake backend gate never opened")
        if self.control.delay:
            time.sleep(self.control.delay)
        return {"OUTPUT0": np.array(x, copy=True)}

    def set_threads(self, threads: int) -> Future[None]:
        self._threads = threads
        self.control.threads_seen.append(threads)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def close(self) -> None:
        pass


class FakeBackends:
    """A ``backends`` mapping entry: ``fake`` builds a :class:`FakeBackend` whose control is per model."""

    def __init__(self) -> None:
        self.controls: dict[str, FakeControl] = {}

    def control(self, model: str) -> FakeControl:
        return self.controls.setdefault(model, FakeControl())

    def __call__(self, model_dir: Path, config: ModelConfig, threads: int) -> FakeBackend:
        return FakeBackend(self.control(model_dir.name), threads)


def write_model(root: Path, name: str, config: dict[str, Any], profile: dict[str, Any] | None = None) -> Path:
    """Create ``root/name/config.yaml`` (and ``profile.yaml`` when given)."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    if profile is not None:
        doc = {"format": "sloserve-profile/v1", "profiles": [{"model": name, **profile}]}
        (directory / "profile.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        config = {"profile": "profile.yaml", **config}
    (directory / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return directory


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (a synchronisation helper, not a timing assertion)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        _yield_to_greenlets()


def _yield_to_greenlets() -> None:
    """Sleep 2 ms letting gevent run: ``tritonclient.http``'s ``async_infer`` sends from a greenlet,
    which runs only while its thread yields to gevent (it yields for 10 ms itself, and on a busy
    machine a request was then not sent until ``get_result``; a test waiting with ``time.sleep`` for
    it to arrive waited in vain)."""
    gevent.sleep(0.002)


class VirtualTimers:
    """Clock and timers on the simulator's event loop (virtual time)."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop

    def now(self) -> float:
        return self.loop.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Any:
        loop = self.loop
        handle = loop.at(when, callback)

        class _Handle:
            def cancel(self) -> None:
                loop.cancel(handle)

        return _Handle()


class VirtualInstance(InstanceRunner):
    """An instance whose batches take ``slowdown * profile.latency(batch, threads)`` of virtual time,
    and whose answers reach the loop ``handoff`` seconds after that."""

    def __init__(
        self,
        loop: EventLoop,
        profile: ModelProfile,
        threads: int,
        slowdown: float = 1.0,
        handoff: float = 0.0,
    ) -> None:
        self.loop, self.profile, self.threads, self.slowdown = loop, profile, threads, slowdown
        self.handoff = handoff
        self.submitted: list[int] = []
        self.stopped = False

    def start(self, ready: Callable[[str | None], None]) -> None:
        ready(None)

    def submit(self, inputs: Sequence[Tensors], done: Callable[[BatchResult], None]) -> None:
        self.submitted.append(len(inputs))
        service = self.slowdown * self.profile.latency(len(inputs), self.threads, 1)
        result = BatchResult([dict(x) for x in inputs], service)
        self.loop.at(self.loop.now + service + self.handoff, lambda: done(result))

    def resize(self, threads: int) -> None:
        self.threads = threads

    def stop(self) -> None:
        self.stopped = True


class GreedyScaler:
    """Asks for ``count`` instances of its model every ``interval`` seconds."""

    def __init__(self, model: str, count: int, interval: float) -> None:
        self.model, self.count, self._interval = model, count, interval

    @property
    def interval(self) -> float:
        return self._interval

    onset_delay = None

    def on_tick(self, now: float, window: Any) -> list[Any]:
        from sloserve.core.decisions import SetInstanceCount

        return [SetInstanceCount(self.model, self.count)]


def make_greedy_scaler(ctx: Any, **params: Any) -> GreedyScaler:
    """Registry factory (by import path ``server_fakes:make_greedy_scaler``)."""
    return GreedyScaler(ctx.model, int(params.pop("count", 3)), float(params.pop("interval_s", 0.05)))


class FragileScheduler(TritonDynamicBatcher):
    """Triton's batcher with a bug on demand: it raises in ``fail_in`` (``submit``, ``decide`` or
    ``on_complete``) once a request of priority 1 reaches that method."""

    def __init__(self, fail_in: str, max_batch: int, priority_levels: int) -> None:
        super().__init__(max_batch, priority_levels=priority_levels)
        self.fail_in = fail_in
        self._armed = False

    def _maybe_fail(self, method: str, priorities: Sequence[int]) -> None:
        if method == self.fail_in and 1 in priorities:
            raise ZeroDivisionError(f"fragile scheduler: asked to fail in {method}")

    def submit(self, now: float, request: Request) -> Drop | None:
        self._maybe_fail("submit", [request.priority])
        self._armed |= request.priority == 1
        return super().submit(now, request)

    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        self._maybe_fail("decide", [1] if self._armed else [])
        return super().decide(now, instances)

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None:
        super().on_complete(now, batch, instance, latency)
        self._maybe_fail("on_complete", [r.priority for r in batch.requests])


def make_fragile_scheduler(ctx: PolicyContext, fail_in: str = "on_complete") -> FragileScheduler:
    """Registry factory (by import path ``server_fakes:make_fragile_scheduler``)."""
    return FragileScheduler(fail_in, ctx.max_batch, ctx.priority_levels)


def demo_model_without_slo(name: str, root: Path) -> Path:
    """Demo model ``name`` built into ``root`` with its ``slo_ms`` taken out: its requests have no
    deadline unless they bring one. For tests about something else, which a busy machine must not
    fail by missing the demo's SLO (identity's is 10 ms; on 2 cores shared with 4 busy processes
    such tests failed with ``queue_timeout``)."""
    directory = build_demo_model(name, root)
    config = directory / "config.yaml"
    fields = yaml.safe_load(config.read_text(encoding="utf-8"))
    fields.pop("slo_ms", None)
    config.write_text(yaml.safe_dump(fields, sort_keys=False), encoding="utf-8")
    return directory


def bench_identity(
    server: BackgroundServer, protocol: str, out: Path, *options: str
) -> tuple[dict[str, Any], int]:
    """Run ``sloserve bench`` (40 req/s for 0.5 s, no ceiling) against ``server``'s demo identity
    model over ``protocol`` with ``options``; the report's result and the rows the model ran meanwhile."""
    import json

    import tritonclient.http as th

    from sloserve.cli import main

    url = server.http_url if protocol == "http" else server.grpc_url
    client = th.InferenceServerClient(server.http_url)
    try:

        def rows_run() -> int:
            return int(client.get_inference_statistics("identity")["model_stats"][0]["inference_count"])

        before = rows_run()
        argv = ["bench", url, "-m", "identity", "--protocol", protocol, "--rate", "40", "--duration", "0.5"]
        code = main([*argv, *options, "--no-ceiling", "--out", str(out)])
        assert code == 0
        return json.loads((out / "bench.json").read_text())["result"], rows_run() - before
    finally:
        client.close()


class SchedulerWithoutCancel:
    """A user's scheduler written before ``cancel`` joined the contract (the registry refuses it)."""

    max_batch = 1

    def set_max_batch(self, max_batch: int) -> None: ...
    def submit(self, now: float, request: Request) -> Drop | None: ...
    def decide(self, now: float, instances: Sequence[InstanceView]) -> list[Decision]:
        return []

    def on_complete(self, now: float, batch: Batch, instance: InstanceView, latency: float) -> None: ...
    def drain(self, now: float, reason: Any) -> list[Drop]:
        return []

    def __len__(self) -> int:
        return 0


def make_scheduler_without_cancel(ctx: PolicyContext) -> SchedulerWithoutCancel:
    """Registry factory (by import path ``server_fakes:make_scheduler_without_cancel``)."""
    return SchedulerWithoutCancel()
