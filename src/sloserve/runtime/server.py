"""The inference server's core, shared by the HTTP and gRPC front ends.

:class:`InferenceServer` owns the model repository and the server's life cycle (starting → ready →
draining → stopped, which the health endpoints report truthfully), turns a decoded request into a
submission to the model's loop, and builds the metadata, configuration and statistics documents
both front ends return (in Triton's JSON shapes; the gRPC front end parses them into protobufs).

A request whose tensors carry a batch dimension ``n > 1`` (a client-side batch, up to the model's
``max_batch_size``) is one request to the scheduler that fills ``n`` rows of a batch
(:attr:`~sloserve.core.request.Request.rows`): it is batched whole, with other requests, and
answered or refused as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

import sloserve
from sloserve.core.config import ConfigError
from sloserve.core.decisions import DropReason
from sloserve.runtime.backend import metadata_document
from sloserve.runtime.classification import check_classifiable, top_classes
from sloserve.runtime.clock import Clock, MonotonicClock
from sloserve.runtime.codec import InferRequest, ProtocolError, check_inputs, clipped
from sloserve.runtime.model_config import DEFAULT_SCHEDULER
from sloserve.runtime.model_loop import Answer, Outcome, Refusal
from sloserve.runtime.repository import BackendFactory, LoadedModel, ModelRepository
from sloserve.runtime.shared_memory import SystemSharedMemory

log = logging.getLogger("sloserve.runtime")

SERVER_NAME = "sloserve"
EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "logging",
    "model_configuration",
    "statistics",
    "model_repository",
    "schedule_policy",
    "system_shared_memory",
)
"""Protocol extensions listed in ``GET /v2``."""

TIMEOUT_HEADER = "x-slo-timeout-ms"
"""HTTP header (gRPC metadata key) with a request's deadline budget in milliseconds, for clients
that cannot set the ``timeout`` parameter (microseconds). The parameter wins when both are given."""

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest request body accepted (413 beyond it)."""


class StartupError(ConfigError):
    """Raised by :meth:`InferenceServer.start` when models failed to load and the server was told
    to stop on that (``exit_on_error``); ``failed`` maps each model to why."""

    def __init__(self, failed: Mapping[str, str]) -> None:
        self.failed = dict(failed)
        reasons = "; ".join(f"{name}: {why}" for name, why in self.failed.items())
        super().__init__(
            f"{len(self.failed)} model(s) failed to load, so the server stops ({reasons}); "
            "--no-exit-on-error serves the models that loaded without them"
        )


class ServerState(StrEnum):
    """Where the server is in its life; ``/v2/health/ready`` is 200 only in ``READY``."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


_STATUS = {
    DropReason.FAILED: 500,
    DropReason.REJECTED_INPUT: 400,
}


def freeze_long_lived() -> None:
    """Collect, then move every object alive (modules, sessions, configs) out of the cyclic garbage
    collector's reach (``gc.freeze``); called once, when the initial models are loaded.

    A full collection otherwise walks them all: with ONNX Runtime, NumPy and SciPy imported that is
    ~70k objects and a 33 ms stop of the event loop (measured), a latency spike that alone misses a
    tight SLO; after the freeze one took 0.3 ms. Only at start-up: objects frozen later (a reloaded
    model's) could never be collected once they became cyclic garbage.
    """
    gc.collect()
    gc.freeze()


def refusal_status(reason: DropReason) -> int:
    """HTTP status of a refused request: 500 for a failed batch, 400 for input the model refused,
    503 for everything else."""
    return _STATUS.get(reason, 503)


class InferenceServer:
    """See the module docstring. All methods run on the event loop's thread."""

    def __init__(
        self,
        repository: str | Path,
        *,
        models: list[str] | None = None,
        backends: Mapping[str, BackendFactory] | None = None,
        clock: Clock | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        freeze_gc: bool = False,
        exit_on_error: bool = True,
    ) -> None:
        """``freeze_gc``: once the initial models are loaded, collect and freeze the objects alive
        (see :func:`freeze_long_lived`). ``exit_on_error``: a model that fails to load at start-up
        stops the start (:meth:`start` raises); otherwise the others are served without it."""
        self.repository_root = Path(repository)
        self.freeze_gc = freeze_gc
        self.exit_on_error = exit_on_error
        self.initial_models = models
        self.backends = backends
        self.clock = clock or MonotonicClock()
        self.max_body_bytes = max_body_bytes
        self.state = ServerState.STARTING
        self._repository: ModelRepository | None = None
        self.bad_requests = 0
        """Requests refused before reaching a model (malformed, unknown model, ...)."""
        self.shared_memory = SystemSharedMemory(max_input_bytes=max_body_bytes, defer_reads=True)
        """The system shared-memory regions clients registered (HTTP and gRPC share them); an input
        in shared memory is bounded as a body is, and read only once the model's checks pass."""
        self.before_ready: Callable[[ModelRepository], None] | None = None
        """Called once the initial models are loaded, just before the server turns ready (e.g. to
        deploy a plan); an exception stops the start."""
        self._start_abandoned = False
        """Set by :meth:`abandon_start`: :meth:`start` loads no further model and never turns ready."""

    @property
    def repository(self) -> ModelRepository:
        if self._repository is None:
            raise ProtocolError("the server is starting", 503)
        return self._repository

    async def start(self) -> None:
        """Load the initial models (all in the repository unless a list was given); then ready.

        A model that fails to load is logged; with ``exit_on_error`` (as Triton's
        ``--exit-on-error``, on by default) the start then fails with a :class:`StartupError` naming
        every such model and why, so a broken config is not served around; without it the model is
        listed as UNAVAILABLE in the repository index and the others are served.
        """
        loop = asyncio.get_running_loop()

        def post(callback: Any) -> None:
            # a closed loop raises RuntimeError: nobody waits for the answer any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

        self._repository = ModelRepository(
            self.repository_root, clock=self.clock, loop=loop, post=post, backends=self.backends
        )
        names = self.initial_models if self.initial_models is not None else self._repository.model_names()
        failed: dict[str, str] = {}
        for i, name in enumerate(names):
            if self._start_abandoned:
                log.info("start-up abandoned", extra={"not_loaded": names[i:]})
                return
            try:
                await self._repository.load(name)
            except Exception as exc:
                failed[name] = str(exc)
                log.error("model failed to load", extra={"model": name, "error": str(exc)})
        if self._start_abandoned:
            return
        if failed and self.exit_on_error:
            raise StartupError(failed)
        if self.before_ready is not None:
            self.before_ready(self._repository)
        if self.freeze_gc:
            freeze_long_lived()
        self.state = ServerState.READY
        log.info(
            "server ready",
            extra={"models": sorted(self._repository.models), "gc_frozen_objects": gc.get_freeze_count()},
        )

    def abandon_start(self) -> None:
        """Called when the process is told to stop while :meth:`start` is loading models: the model
        loading now finishes, no other is loaded, and the server never turns ready (a slow start-up
        then stops at once, not after every model)."""
        self._start_abandoned = True

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let queued ones finish (up to ``timeout`` seconds), stop instances."""
        if self.state in (ServerState.DRAINING, ServerState.STOPPED):
            return
        self.state = ServerState.DRAINING
        log.info("server draining", extra={"pending": self.pending_requests})
        if self._repository is not None:
            await self._repository.close(timeout)
        self.shared_memory.unregister()
        self.state = ServerState.STOPPED
        log.info("server stopped")

    @property
    def live(self) -> bool:
        return self.state != ServerState.STOPPED

    @property
    def ready(self) -> bool:
        return self.state == ServerState.READY

    @property
    def pending_requests(self) -> int:
        return self._repository.pending_requests if self._repository is not None else 0

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model (404 if unknown); 503 while the server is not ready."""
        if self.state in (ServerState.DRAINING, ServerState.STOPPED):
            raise ProtocolError("the server is shutting down", 503)
        return self.repository.get(name, version)

    def count_bad_request(self, name: str) -> None:
        """Record a request refused as malformed (400): on the model's failures when it is loaded."""
        model = self._repository.models.get(name) if self._repository is not None else None
        if model is None:
            self.bad_requests += 1
        else:
            model.loop.record_failure("bad_request")

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            return self.model(name, version).loop.ready
        except ProtocolError:
            return False

    # -- inference -------------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str | None,
        request: InferRequest,
        *,
        header_timeout_ms: str | None = None,
        payload_bytes: int = 0,
        waited: float = 0.0,
    ) -> tuple[LoadedModel, dict[str, np.ndarray]]:
        """Run one request; :class:`ProtocolError` (400/404/503/500) when it cannot be answered.
        ``waited``: seconds since its first byte arrived (its deadline budget counts from then)."""
        model = self.model(name, version)
        inputs = check_inputs(request.inputs, model.inputs, model.config.max_batch_size)
        if request.outputs is not None:
            known = {o.name: o.datatype for o in model.outputs}
            unknown = [o.name for o in request.outputs if o.name not in known]
            if unknown:
                raise ProtocolError(f"unknown output(s) {unknown}; the model has {sorted(known)}")
            for out in request.outputs:
                if out.class_count:
                    check_classifiable(out.name, known[out.name])
        budget = _budget(request.parameters, header_timeout_ms)
        priority = _priority(request.parameters, model.config.priority_levels)
        # inputs in shared memory are read only now that the model's checks passed (from the region
        # each was checked against when decoded, which the request holds even if unregistered since)
        inputs = self.shared_memory.load_inputs(inputs)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> Outcome:
            if future.cancelled() and isinstance(outcome, Answer):  # ran, but nobody is waiting
                return Refusal(DropReason.CANCELLED, "the client went away before its answer (cancelled)")
            if isinstance(outcome, Answer):  # delivered before it counts as answered (see Done)
                outputs = _classified(model, request, outcome.outputs)
                try:
                    self.shared_memory.write_outputs(request, outputs)
                    outcome = Answer(outputs)
                except ProtocolError as exc:  # an output larger than its region: the client's error
                    outcome = Refusal(DropReason.REJECTED_INPUT, str(exc))
            if not future.done():  # the caller may have gone (a cancelled gRPC call)
                future.set_result(outcome)
            return outcome

        rid = model.loop.submit(
            inputs, done, budget=budget, priority=priority, payload_bytes=payload_bytes, waited=waited
        )
        try:
            outcome = await future
        except asyncio.CancelledError:  # the caller went away (a gRPC cancel or deadline)
            if rid is not None:
                model.loop.cancel(rid)
            raise
        if not isinstance(outcome, Answer):
            raise ProtocolError(outcome.message, refusal_status(outcome.reason), counted=True)
        return model, outcome.outputs

    # -- documents -------------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": sloserve.__version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.model(name, version)
        return metadata_document(model.name, model.version, model.platform, model.inputs, model.outputs)

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's model configuration JSON (``dims`` without the batch dimension when batching)."""
        model = self.model(name, version)
        c = model.config

        def tensors(specs: Any) -> list[dict[str, Any]]:
            skip = 1 if model.batching else 0
            return [
                {
                    "name": s.name,
                    "data_type": "TYPE_" + ("STRING" if s.datatype == "BYTES" else s.datatype),
                    "dims": list(s.shape[skip:]),
                }
                | ({"label_filename": c.labels[s.name]} if s.name in c.labels else {})
                for s in specs
            ]

        # Triton's batching settings are shown only where its batcher runs: other schedulers derive
        # their own (slo: from the profile) or take them as params (ray, fixed)
        triton_batching = (
            {
                "preferred_batch_size": list(c.preferred_batch_size),
                "max_queue_delay_microseconds": c.max_queue_delay_microseconds,
            }
            if c.scheduler.name == DEFAULT_SCHEDULER
            else {}
        )
        own = {
            "slo_ms": c.slo_ms,
            "serve_late": c.serve_late,
            "scheduler": c.scheduler.name,
            "scaler": c.scaler.name if c.scaler is not None else None,
        }
        return {
            "name": model.name,
            "platform": model.platform,
            "backend": c.backend,
            "version_policy": {"specific": {"versions": [model.version]}},
            "max_batch_size": c.max_batch_size,
            "input": tensors(model.inputs),
            "output": tensors(model.outputs),
            "dynamic_batching": triton_batching
            | {
                "priority_levels": c.priority_levels,
                "default_priority_level": c.default_priority_level,
                "default_queue_policy": {
                    "timeout_action": c.queue_policy.timeout_action,
                    "default_timeout_microseconds": c.queue_policy.default_timeout_microseconds,
                    "allow_timeout_override": c.queue_policy.allow_timeout_override,
                    "max_queue_size": c.queue_policy.max_queue_size,
                },
            },
            "instance_group": [
                {"name": f"{model.name}_0", "kind": "KIND_CPU", "count": len(model.loop.views)}
            ],
            "parameters": {k: {"string_value": str(v)} for k, v in own.items() if v is not None},
        }

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics extension document for one model or all loaded models."""
        models = [self.model(name, version)] if name else list(self.repository.models.values())
        return {"model_stats": [_stats_of(m) for m in models]}


def _classified(
    model: LoadedModel, request: InferRequest, outputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``outputs`` with those the request asked to classify replaced by their top classes."""
    wanted = [o for o in request.outputs or () if o.class_count]
    if not wanted:
        return outputs
    classified = dict(outputs)
    for out in wanted:
        classified[out.name] = top_classes(
            outputs[out.name], out.class_count, batched=model.batching, labels=model.labels.get(out.name, ())
        )
    return classified


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def _stats_of(model: LoadedModel) -> dict[str, Any]:
    s = model.loop.stats
    zero = _duration(0, 0)
    return {
        "name": model.name,
        "version": model.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success_count, s.success_ns),
            "fail": _duration(s.fail_count, s.fail_ns),
            "queue": _duration(s.queue_count, s.queue_ns),
            "compute_input": zero,
            "compute_infer": _duration(s.compute_count, s.compute_ns),
            "compute_output": zero,
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(count, 0),
                "compute_infer": _duration(count, s.batch_ns[size]),
                "compute_output": _duration(count, 0),
            }
            for size, count in sorted(s.batch_sizes.items())
        ],
    }


_DECIMAL = re.compile(r"\d+(\.\d*)?|\.\d+")
"""A plain decimal number (``float()`` would also take ``1_000``, ``-0``, ``inf``, ``1e3``)."""


def _budget(params: Mapping[str, Any], header_ms: str | None) -> float | None:
    """The request's own deadline budget in seconds: ``timeout`` (µs) parameter, else the header."""
    timeout = params.get("timeout")
    if timeout is not None:
        try:  # an integer past a float's range (JSON has no limit) is not finite either
            number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
            finite = number and 0 <= float(timeout) < math.inf
        except OverflowError:
            finite = False
        if not finite:
            raise ProtocolError(  # NaN and Infinity too, which Python's JSON reader takes
                f"parameter 'timeout' must be a non-negative finite number of microseconds, "
                f"got {clipped(repr(timeout))}"
            )
        return timeout * 1e-6 if timeout > 0 else None
    if header_ms is not None:
        try:
            value = float(header_ms) if _DECIMAL.fullmatch(header_ms.strip()) else math.nan
        except ValueError:
            value = math.nan
        if not 0 <= value < math.inf:
            raise ProtocolError(
                "header X-SLO-Timeout-Ms must be a decimal number of milliseconds, "
                f"got {clipped(header_ms)!r}"
            )
        return value * 1e-3 if value > 0 else None
    return None


def _priority(params: Mapping[str, Any], levels: int) -> int:
    priority = params.get("priority")
    if priority is None:  # absent or null, as for 'timeout'
        return 0
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise ProtocolError(f"parameter 'priority' must be a non-negative integer, got {priority!r}")
    if priority > levels:
        raise ProtocolError(f"priority {priority} is beyond the model's {levels} priority level(s)")
    return priority
