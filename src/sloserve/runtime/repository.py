"""The model repository: which models are loaded, loading / unloading / reloading them while serving.

Each loaded model is a :class:`LoadedModel`: its validated configuration, its tensor metadata and
the :class:`~sloserve.runtime.model_loop.ModelLoop` that serves it, whose instances are
:class:`~sloserve.runtime.instances.LocalInstance` workers around an execution backend. A reload
builds the new version first, switches new requests to it, then lets the old one drain: requests
in flight never fail because of a reload or an unload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sloserve.core.config import ConfigError
from sloserve.core.profile_io import load_profiles
from sloserve.core.profiles import ModelProfile
from sloserve.policies.base import Scaler
from sloserve.policies.registry import make_scaler, make_scheduler
from sloserve.policies.scaling_guards import BoundedScaler
from sloserve.runtime.backend import BackendError, ExecutionBackend, TensorSpec
from sloserve.runtime.classification import read_labels
from sloserve.runtime.clock import AsyncioTimers, Clock
from sloserve.runtime.codec import ProtocolError, clipped
from sloserve.runtime.instances import BatchRunner, LocalInstance, Post, RequestFailure, Tensors
from sloserve.runtime.model_config import ModelConfig, find_config, load_model_config
from sloserve.runtime.model_loop import ModelLoop
from sloserve.runtime.pipeline_config import PIPELINE_BACKEND, find_pipeline_config
from sloserve.runtime.stacking import BatchInputError, split_outputs, stack_requests

log = logging.getLogger("sloserve.runtime")

BackendFactory = Callable[[Path, ModelConfig, int], ExecutionBackend]
"""``factory(model_dir, config, threads)`` builds one instance's backend (called on a worker thread)."""


def onnx_backend(model_dir: Path, config: ModelConfig, threads: int) -> ExecutionBackend:
    """The ``onnxruntime`` backend: one ONNX Runtime session on ``model_dir / model_file``."""
    from sloserve.runtime.onnx_backend import OnnxBackend

    path = model_dir / config.model_file
    if not path.is_file():
        raise ConfigError(f"{model_dir}: model_file: {config.model_file!r} not found")
    return OnnxBackend(path, threads)


Outputs = dict[str, np.ndarray]
"""One request's outputs by name."""

BACKENDS: dict[str, BackendFactory] = {"onnxruntime": onnx_backend}
"""Backend name (the config's ``backend``) → factory."""


MAX_NAME_BYTES = 255
"""Longest model name (a directory name: ``NAME_MAX`` on Linux)."""


def _is_pipeline(model: LoadedModel) -> bool:
    return model.config.backend == PIPELINE_BACKEND


def valid_model_name(name: str) -> bool:
    """Whether ``name`` can name a model: one directory name, not hidden (see :func:`_check_name`);
    for names a client or a pipeline file gives."""
    return (
        bool(name)
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


def _check_name(name: str) -> None:
    """A model name is one directory name under the repository's root, never a path (400 if not)."""
    if not valid_model_name(name):
        raise ProtocolError(
            f"invalid model name {clipped(name, 64)!r}: a model is a directory directly under the repository "
            f"(a name of at most {MAX_NAME_BYTES} bytes, without a slash, a backslash or NUL, not "
            "starting with '.')"
        )


def check_repository_parameters(parameters: Mapping[str, Any], action: str) -> None:
    """400 for the parameters of a repository ``load`` / ``unload`` sloserve does not honour: a model
    is loaded from its directory as it is (Triton's ``config`` override and ``file:`` contents are
    refused), and unloading does not reach other models (``unload_dependents`` false only, which
    ``tritonclient`` always sends)."""
    taken = {"unload_dependents": False} if action == "unload" else {}
    refused = sorted(k for k, v in parameters.items() if k not in taken or v != taken[k])
    if refused:
        raise ProtocolError(
            f"{action} parameter(s) {refused} are not supported: sloserve loads a model from its "
            "directory in the repository as it is (no config override, no files) and unloads only it"
        )


def batch_runner(allow_padding: bool) -> BatchRunner:
    """Runs one batch: stack (padding if allowed), run, split; requests whose tensors cannot be
    stacked together run in groups of equal shapes."""

    def run(backend: ExecutionBackend, requests: Sequence[Tensors]) -> list[Outputs | RequestFailure]:
        if len(requests) == 1:
            return [_alone(backend, requests[0])]
        try:
            stacked = stack_requests(requests, backend.inputs, backend.outputs, allow_padding=allow_padding)
        except BatchInputError:
            groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
            for i, req in enumerate(requests):
                groups[tuple(a.shape[1:] for a in req.values())].append(i)
            if len(groups) == 1:
                raise
            out: list[Outputs | RequestFailure | None] = [None] * len(requests)
            for members in groups.values():
                for i, result in zip(members, run(backend, [requests[i] for i in members]), strict=True):
                    out[i] = result
            return [o for o in out if o is not None]
        try:
            return list(split_outputs(backend.run(stacked.inputs), stacked.sizes))
        except BackendError:  # one request's values can fail them all: each runs alone, only it fails
            return [_alone(backend, request) for request in requests]

    return run


def _alone(backend: ExecutionBackend, request: Tensors) -> Outputs | RequestFailure:
    """One request run by itself: its outputs, or why the backend refused it."""
    try:
        return backend.run(request)
    except BackendError as exc:
        log.warning("a request failed in the model: %s", exc)
        return RequestFailure(str(exc), exc.bad_input)


@dataclass(slots=True)
class LoadedModel:
    """A model being served."""

    name: str
    version: str
    config: ModelConfig
    directory: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    loop: ModelLoop
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Class labels of outputs, by output name (the config's ``labels``), for classification."""

    @property
    def batching(self) -> bool:
        """Whether requests carry a batch dimension that sloserve batches along."""
        return self.config.max_batch_size > 0

    @property
    def platform(self) -> str:
        return "onnxruntime_onnx" if self.config.backend == "onnxruntime" else self.config.backend


class ModelRepository:
    """Models under ``root``, loaded on request; all methods run on the event loop's thread."""

    def __init__(
        self,
        root: str | Path,
        *,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        post: Post,
        backends: Mapping[str, BackendFactory] | None = None,
    ) -> None:
        self.root = Path(root)
        self.clock = clock
        self.loop = loop
        self.post = post
        self.backends = {**BACKENDS, **(backends or {})}
        self.models: dict[str, LoadedModel] = {}
        self.failed: dict[str, str] = {}
        """Models whose last load failed, with the reason (the repository index shows it)."""
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.draining: dict[ModelLoop, tuple[LoadedModel, asyncio.Future[None]]] = {}
        """Versions replaced or unloaded whose queued and running requests are still ending, with
        a future done when they have (statistics and metrics count them until then)."""
        self.accepting = True
        """False once the server drains: loads and unloads are refused (503)."""
        self._loads: set[asyncio.Future[LoadedModel]] = set()
        self.prepare: Callable[[LoadedModel], None] | None = None
        """Called with each model a load builds, before it takes requests (a deployed plan applies
        itself to a planned model loaded again); an exception fails the load."""

    def model_names(self) -> list[str]:
        """Sub-directories of the root that look like models (have a config or a model file)."""
        if not self.root.is_dir():
            return []
        found = [
            d
            for d in self.root.iterdir()
            if d.is_dir()
            and valid_model_name(d.name)
            and (find_config(d) or find_pipeline_config(d) or (d / "model.onnx").is_file())
        ]
        # pipelines last, so their members are loaded first (pipeline hook, see runtime/pipeline.py)
        return [d.name for d in sorted(found, key=lambda d: (find_pipeline_config(d) is not None, d.name))]

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """The repository extension's index: every model on disk or loaded, with its state (only
        the models ready to serve with ``ready_only``, the index request's ``ready``)."""
        out = []
        on_disk = set(self.model_names())
        for gone in set(self.failed) - on_disk - set(self.models):  # its directory was removed
            del self.failed[gone]
        for name in sorted(on_disk | set(self.models) | set(self.failed)):
            entry = {"name": name}
            if name in self.models:
                model = self.models[name]
                entry |= {"version": model.version, "state": "READY" if model.loop.ready else "LOADING"}
                if model.loop.fault is not None:
                    entry |= {"state": "UNAVAILABLE", "reason": model.loop.fault}
            elif (lock := self._locks.get(name)) is not None and lock.locked():  # a first load
                entry |= {"state": "LOADING"}
            elif name in self.failed:
                entry |= {"state": "UNAVAILABLE", "reason": self.failed[name]}
            else:
                entry |= {"state": "UNAVAILABLE", "reason": "unloaded"}
            out.append(entry)
        return [e for e in out if e["state"] == "READY"] if ready_only else out

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model; :class:`ProtocolError` 404 for an unknown model or version."""
        model = self.models.get(name)
        if model is None:
            raise ProtocolError(
                f"unknown model {name!r}" + (" (not loaded)" if name in self.failed else ""), 404
            )
        if version not in (None, "", model.version):
            raise ProtocolError(
                f"unknown version {version!r} of model {name!r} (serving {model.version!r})", 404
            )
        return model

    async def load(self, name: str) -> LoadedModel:
        """Load (or reload) model ``name``; :class:`ConfigError` / ``ValueError`` name what is wrong.

        ``name`` is a client's (the repository extension's load): it must name a directory directly
        under the root (400 for anything else, 404 for no such directory), and only the failures of
        models that exist are kept for the index."""
        _check_name(name)
        self._check_accepting()
        if not (self.root / name).is_dir():
            self.failed.pop(name, None)
            raise ProtocolError(f"no model {name!r} in the repository", 404)
        # a load once begun finishes whatever its caller does (a gRPC client's deadline cancels the
        # call, not the load): the task is kept until it ends, and the caller awaits it shielded
        task = asyncio.ensure_future(self._load_now(name))
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        return await asyncio.shield(task)

    async def _load_now(self, name: str) -> LoadedModel:
        """Called by :meth:`load`, in a task of its own: builds ``name`` and swaps it in."""
        async with self._locks[name]:
            try:
                model = await self._build(name)
            except Exception as exc:
                self.failed[name] = str(exc)
                raise
            if self.prepare is not None:
                try:
                    self.prepare(model)
                except Exception as exc:  # e.g. a reloaded config the deployed plan cannot run on
                    self._retire(model)
                    self.failed[name] = str(exc)
                    raise
            self.failed.pop(name, None)
            old = self.models.get(name)
            if old is not None and old.version == model.version:
                model.loop.stats = old.loop.stats  # one count per version: the old one's last answers too
            self.models[name] = model
            if old is not None:
                self._retire(old)
            log.info("model loaded", extra={"model": name, "version": model.version})
            return model

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; requests already queued or running still end normally."""
        self._check_accepting()
        async with self._locks[name]:
            model = self.models.pop(name, None)
            if model is None:
                raise ProtocolError(f"unknown model {name!r}", 404)
            self.failed.pop(name, None)  # an earlier failed reload is not why it is unavailable now
            done = self._retire(model)
        await done
        log.info("model unloaded", extra={"model": name})

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ProtocolError("the server is shutting down", 503)

    def _retire(self, model: LoadedModel) -> asyncio.Future[None]:
        done: asyncio.Future[None] = self.loop.create_future()
        self.draining[model.loop] = (model, done)

        def closed() -> None:
            self.draining.pop(model.loop, None)
            if not done.done():
                done.set_result(None)

        model.loop.close(closed)
        return done

    async def close(self, timeout: float) -> None:
        """Unload everything, waiting up to ``timeout`` seconds for queued requests (those of
        versions replaced or unloaded earlier too); then refuse the rest. Pipelines go first:
        their requests still need their members for the steps ahead."""
        self.accepting = False
        end = self.loop.time() + timeout
        for pipelines_only in (True, False):
            for name in [n for n, m in self.models.items() if _is_pipeline(m) or not pipelines_only]:
                self._retire(self.models.pop(name))
            group = {
                loop: done
                for loop, (model, done) in self.draining.items()
                if _is_pipeline(model) or not pipelines_only
            }
            if not group:
                continue
            _, pending = await asyncio.wait(group.values(), timeout=max(0.0, end - self.loop.time()))
            if pending:
                why = (
                    f"the server shut down before the request ran (drain timeout {timeout:g} s; unavailable)"
                )
                for model_loop in group:
                    model_loop.abort(why=why)
                await asyncio.wait(pending, timeout=max(1.0, timeout))

    @property
    def pending_requests(self) -> int:
        """Requests not yet ended, over every model (draining ones included)."""
        loops = {m.loop for m in self.models.values()} | set(self.draining)
        return sum(len(m.pending) for m in loops)

    async def _build(self, name: str) -> LoadedModel:
        directory = self.root / name
        if find_pipeline_config(directory) is not None:  # pipeline hook
            from sloserve.runtime.pipeline import build_pipeline

            return await build_pipeline(self, name, directory)
        config = load_model_config(directory)
        source = str(find_config(directory) or directory)
        factory = self.backends.get(config.backend)
        if factory is None:
            raise ConfigError(
                f"{source}: backend: unknown backend {config.backend!r}; known: {sorted(self.backends)}"
            )
        profile = self._profile(directory, config, name)
        ctx = config.policy_context(
            name, profile, config.slo_ms * 1e-3 if config.slo_ms is not None else None
        )
        try:
            scheduler = make_scheduler(config.scheduler.name, ctx, config.scheduler_params())
        except ValueError as exc:
            raise ConfigError(f"{source}: scheduler: {exc}") from None
        scaler: Scaler | None = None
        if config.scaler is not None:
            try:
                inner = make_scaler(config.scaler.name, ctx, config.scaler.params)
            except ValueError as exc:
                raise ConfigError(f"{source}: scaler: {exc}") from None
            bounds = config.autoscaling
            scaler = BoundedScaler(
                inner,
                min_replicas=bounds.min_replicas,
                max_replicas=bounds.max_replicas,
                upscale_delay_s=bounds.upscale_delay_s,
                downscale_delay_s=bounds.downscale_delay_s,
            )
        labels = {
            out: read_labels(directory / filename, f"{source}: labels: {out}")
            for out, filename in config.labels.items()
        }
        threads = config.instance_group.threads
        count = config.instance_group.count
        if count == 0 and config.scaler is None:
            raise ConfigError(
                f"{source}: instance_group.count: 0 and no scaler to start one: nothing would serve"
            )
        try:
            backends = await asyncio.gather(
                *(asyncio.to_thread(factory, directory, config, threads) for _ in range(max(1, count)))
            )
        except BackendError as exc:  # a model file the backend cannot load: the repository's fault
            raise ConfigError(f"{source}: model_file: {exc}") from None
        first = backends[0]
        unknown = sorted(set(labels) - {o.name for o in first.outputs})
        if unknown:
            for backend in backends:
                backend.close()
            raise ConfigError(
                f"{source}: labels: the model has no output {unknown[0]!r}; "
                f"its outputs are {[o.name for o in first.outputs]}"
            )
        run_batch = batch_runner(config.allow_padding)

        def make(threads: int, backend: ExecutionBackend | None = None) -> LocalInstance:
            return LocalInstance(
                name,
                lambda t: factory(directory, config, t),
                threads,
                self.post,
                run_batch,
                backend,
                concurrency=config.instance_group.max_concurrency,
            )

        model_loop = ModelLoop(
            name,
            config,
            scheduler,
            clock=self.clock,
            timers=AsyncioTimers(self.loop, self.clock),
            spawn=lambda iid, t: make(t),
            scaler=scaler,
            profile=profile,
            wall_ms=lambda: int(time.time() * 1000),
        )
        model_loop.start([make(threads, b) for b in backends[:count]])
        if count == 0:
            first.close()
        return LoadedModel(
            name, config.version, config, directory, first.inputs, first.outputs, model_loop, labels
        )

    def _profile(self, directory: Path, config: ModelConfig, name: str) -> ModelProfile | None:
        """The model's profile from its config's ``profile`` file: its only entry for ``name``, or,
        where the file has several hardware types, the one for ``cpu`` (what this server runs on)."""
        if config.profile is None:
            return None
        path = directory / config.profile
        profiles = load_profiles(path)
        if (name, "cpu") in profiles.profiles:
            return profiles.get(name, "cpu")
        try:
            return profiles.get(name)
        except KeyError as exc:
            reason = str(exc.args[0]) if exc.args else f"no profile for model {name!r}"
            hardware = profiles.hardware_for(name)
            if len(hardware) > 1:
                reason = (
                    f"model {name!r} has profiles on hardware {hardware} but none on 'cpu', "
                    "the hardware this server runs on"
                )
            raise ConfigError(f"{path}: profile: {reason}") from None
