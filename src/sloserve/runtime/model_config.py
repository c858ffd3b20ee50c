"""The model repository's configuration schema (``config.yaml`` / ``config.json`` per model).

A repository is a directory with one sub-directory per model::

    repo/
      resnet18/
        config.yaml        # this schema
        model.onnx         # the model file (``model_file``)
        profile.yaml       # optional latency profile (``profile``), read by SLO-aware policies

or is laid out for Triton (``config.pbtxt`` and ``1/model.onnx``; see :mod:`sloserve.runtime.triton_repo`).

Names follow Triton where Triton has one (``max_batch_size``, ``preferred_batch_size``,
``max_queue_delay_microseconds``, ``priority_levels``, ``default_priority_level``, the queue
policy, ``instance_group``) and Ray Serve for autoscaling bounds; sloserve adds ``slo_ms``,
``serve_late``, ``scheduler`` and ``scaler``. Example::

    max_batch_size: 8                  # 0: the model has no batch dimension (runs one request at a time)
    preferred_batch_size: [4, 8]
    max_queue_delay_microseconds: 500
    priority_levels: 2                 # 1 is the highest level
    default_priority_level: 2          # level of requests sent with priority 0
    queue_policy:
      timeout_action: REJECT           # REJECT: drop a request whose deadline passed queued; DELAY: run it
      default_timeout_microseconds: 0  # deadline budget when neither the request nor slo_ms gives one
      allow_timeout_override: true     # honour the request's ``timeout`` parameter / header
      max_queue_size: 0                # 0: unbounded
    instance_group: {count: 1, threads: 2, max_concurrency: 1}
    labels: {logits: labels.txt}       # class names of an output, one per line (for classification)
    slo_ms: 50                         # default deadline budget of a request
    serve_late: false                  # true: run requests that cannot meet their deadline instead of 503
    scheduler: {name: triton, params: {}}
    scaler: {name: dnnscaler, params: {}}   # optional; applied every ``scaler.interval`` seconds
    autoscaling: {min_replicas: 1, max_replicas: 4, upscale_delay_s: 0, downscale_delay_s: 30}

``preferred_batch_size``, ``max_queue_delay_microseconds`` and ``queue_policy.timeout_action`` are
the settings of Triton's batcher (``scheduler: triton``, the default); other schedulers take theirs
as ``params`` (``ray``, ``fixed``) or derive them (``slo``: from the profile), and the model's
configuration document shows them only where Triton's batcher runs. ``autoscaling`` bounds a
``scaler`` (refused without one), and ``instance_group.count`` must lie within its bounds.

Deadline of a request (first that applies): the ``timeout`` request parameter in microseconds (as
``tritonclient`` sends it) or the ``X-SLO-Timeout-Ms`` HTTP header / gRPC metadata
``x-slo-timeout-ms``, when ``allow_timeout_override``; else ``slo_ms``; else
``default_timeout_microseconds``; else none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sloserve.core.config import ConfigError, StrictModel, load_model_file, validate
from sloserve.core.profiles import ModelProfile
from sloserve.policies.base import PolicyContext

TRITON_CONFIG = "config.pbtxt"
"""Triton's model configuration file name."""

CONFIG_NAMES = ("config.yaml", "config.yml", "config.json", TRITON_CONFIG)
"""File names a model directory's configuration may have (first found wins; Triton's
``config.pbtxt`` is read by :mod:`sloserve.runtime.triton_repo`)."""

MAX_BATCH_SIZE = 4096
MAX_INSTANCES = 64
"""Most instances of one model (``instance_group.count``)."""
MAX_THREADS = 256
"""Most intra-op threads of one instance."""

DEFAULT_SCHEDULER = "triton"
"""Scheduler a model gets when its config names none (the one place this default lives)..."""
SLO_SCHEDULER = "slo"
"""... unless the config has a ``profile`` and ``slo_ms``: then the SLO-aware batcher."""


def default_scheduler(fields: Mapping[str, Any]) -> str:
    """The scheduler a config that names none gets: the SLO-aware one with a ``profile`` and
    ``slo_ms``, else Triton's."""
    return SLO_SCHEDULER if fields.get("profile") and fields.get("slo_ms") else DEFAULT_SCHEDULER


class QueuePolicy(StrictModel):
    """Triton's ``default_queue_policy``: what happens to requests that wait too long."""

    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    """REJECT ends a request whose deadline passed while queued (503); DELAY runs it anyway."""
    default_timeout_microseconds: int = Field(default=0, ge=0)
    """Deadline budget when the request and ``slo_ms`` give none (0: no deadline)."""
    allow_timeout_override: bool = True
    """Whether a request's own ``timeout`` parameter (or deadline header) is honoured."""
    max_queue_size: int = Field(default=0, ge=0)
    """Requests beyond this many waiting are refused with 503 ``queue_full`` (0: unbounded)."""

    @field_validator("timeout_action", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class InstanceGroup(StrictModel):
    """How many instances run the model and with how many threads each."""

    count: int = Field(default=1, ge=0, le=MAX_INSTANCES)
    """Instances at start-up (each an ONNX Runtime session with its own threads)."""
    threads: int = Field(default=1, ge=1, le=MAX_THREADS)
    """Intra-op threads per instance (the "cores" a scaler changes in place)."""
    max_concurrency: int = Field(default=1, ge=1, le=64)
    """Batches one instance may run at once."""


class PolicyRef(StrictModel):
    """A policy by registry name (or ``module:factory`` import path) with its parameters."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class Autoscaling(StrictModel):
    """Guards around the scaler's instance count (Ray Serve's names and meaning; see
    :class:`~sloserve.policies.scaling_guards.BoundedScaler`)."""

    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=64, ge=1, le=64)
    upscale_delay_s: float = Field(default=0.0, ge=0)
    """The scaler must ask for more instances this long before the count goes up."""
    downscale_delay_s: float = Field(default=0.0, ge=0)
    """The scaler must ask for fewer instances this long before the count goes down."""

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class ModelConfig(StrictModel):
    """One model's configuration; see the module docstring for the meaning of each field."""

    name: str | None = None
    """Model name; defaults to the directory name (and must equal it when given)."""
    version: str = "1"
    """The version this directory serves (one version per model)."""
    backend: str = "onnxruntime"
    """Execution backend by name (``onnxruntime``) or ``module:factory``."""
    model_file: str = "model.onnx"
    """Model file, relative to the model directory."""
    profile: str | None = None
    """Latency profile file (sloserve-profile/v1), relative to the model directory."""
    max_batch_size: int = Field(default=8, ge=0, le=MAX_BATCH_SIZE)
    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    priority_levels: int = Field(default=1, ge=1, le=16)
    default_priority_level: int = Field(default=0, ge=0)
    """0 means the lowest level (``priority_levels``)."""
    queue_policy: QueuePolicy = Field(default_factory=QueuePolicy)
    instance_group: InstanceGroup = Field(default_factory=InstanceGroup)
    slo_ms: float | None = Field(default=None, gt=0)
    serve_late: bool = False
    scheduler: PolicyRef = Field(default_factory=lambda: PolicyRef(name=DEFAULT_SCHEDULER))
    scaler: PolicyRef | None = None
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    allow_padding: bool = False
    """Zero-pad variable input axes so differently shaped requests share a batch (only for models
    that ignore padded positions, e.g. with an attention mask); otherwise such requests run in
    separate batches of equal shapes."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Class label files by output name, relative to the model directory, one label per line
    (Triton's ``label_filename``): a classification of that output names its classes (see
    :mod:`sloserve.runtime.classification`)."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Free-form backend parameters (passed to the backend factory)."""

    @model_validator(mode="before")
    @classmethod
    def _default_scheduler(cls, data: Any) -> Any:
        if isinstance(data, dict) and "scheduler" not in data and default_scheduler(data) == SLO_SCHEDULER:
            return {**data, "scheduler": {"name": SLO_SCHEDULER}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        batch_cap = max(1, self.max_batch_size)
        bad = [p for p in self.preferred_batch_size if p < 1 or p > batch_cap]
        if bad:
            raise ValueError(f"preferred_batch_size {bad} must lie in 1..max_batch_size={batch_cap}")
        if self.default_priority_level > self.priority_levels:
            raise ValueError(
                f"default_priority_level ({self.default_priority_level}) > priority_levels "
                f"({self.priority_levels})"
            )
        if "autoscaling" in self.model_fields_set and self.scaler is None:
            raise ValueError("autoscaling: bounds a scaler's instance count, but the config names no scaler")
        bounds, count = self.autoscaling, self.instance_group.count
        if self.scaler is not None and not bounds.min_replicas <= count <= bounds.max_replicas:
            raise ValueError(
                f"instance_group.count: {count} lies outside autoscaling's "
                f"{bounds.min_replicas}..{bounds.max_replicas} replicas"
            )
        return self

    @property
    def batch_cap(self) -> int:
        """Largest batch the scheduler may form (1 for models without a batch dimension)."""
        return max(1, self.max_batch_size)

    @property
    def default_priority(self) -> int:
        """The level requests sent with priority 0 get."""
        return self.default_priority_level or self.priority_levels

    def policy_context(self, model: str, profile: ModelProfile | None, slo: float | None) -> PolicyContext:
        """What a policy made for ``model`` under this config may know: its batch cap, priority
        levels and queue cap from here, its ``profile`` and ``slo`` (seconds) from the caller."""
        return PolicyContext(
            model=model,
            max_batch=self.batch_cap,
            profile=profile,
            slo=slo,
            default_priority=self.default_priority,
            priority_levels=self.priority_levels,
            max_queue_size=self.queue_policy.max_queue_size,
        )

    def scheduler_params(self) -> dict[str, Any]:
        """Parameters for the scheduler factory: Triton's batching names, then the user's own."""
        params: dict[str, Any] = {}
        if self.scheduler.name == "triton":
            params = {
                "preferred_batch_size": list(self.preferred_batch_size),
                "max_queue_delay_microseconds": self.max_queue_delay_microseconds,
                "timeout_action": self.queue_policy.timeout_action.lower(),
            }
        params.update(self.scheduler.params)
        return params

    def deadline_budget(self, requested_s: float | None) -> float | None:
        """Seconds a request may take: ``requested_s`` if overriding is allowed, else the defaults.
        As in Triton, a request's timeout only shortens the queue policy's default timeout."""
        if requested_s is not None and requested_s > 0 and self.queue_policy.allow_timeout_override:
            default_s = self.queue_policy.default_timeout_microseconds * 1e-6
            return min(requested_s, default_s) if default_s > 0 else requested_s
        if self.slo_ms is not None:
            return self.slo_ms * 1e-3
        if self.queue_policy.default_timeout_microseconds:
            return self.queue_policy.default_timeout_microseconds * 1e-6
        return None


def find_config(model_dir: Path) -> Path | None:
    """The configuration file of ``model_dir``, or None when it has none."""
    for name in CONFIG_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def load_model_config(model_dir: str | Path) -> ModelConfig:
    """Read and validate the configuration of one model directory (defaults when it has no file).

    Raises :class:`ConfigError` naming the file and the field.
    """
    directory = Path(model_dir)
    path = find_config(directory)
    try:
        if path is None:
            config = ModelConfig()
        elif path.name == TRITON_CONFIG:
            from sloserve.runtime.triton_repo import read_triton_config  # protobuf, only when needed

            config = validate(ModelConfig, read_triton_config(path), str(path))
        else:
            config = load_model_file(ModelConfig, path)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read") from None
    source = str(path or directory)
    if config.name is not None and config.name != directory.name:
        raise ConfigError(
            f"{source}: name: {config.name!r} differs from the directory name {directory.name!r}"
        )
    files = {"model_file": config.model_file, "profile": config.profile}
    files |= {f"labels: {output}": filename for output, filename in config.labels.items()}
    for field, filename in files.items():
        if filename is not None and not _inside(directory, filename):
            raise ConfigError(f"{source}: {field}: {filename!r} is outside the model directory {directory}")
    if config.profile is not None and not (directory / config.profile).is_file():
        raise ConfigError(f"{source}: profile: file {config.profile!r} not found in {directory}")
    for output, filename in config.labels.items():
        path_ = directory / filename
        if not path_.is_file():
            raise ConfigError(f"{source}: labels: {output}: file {filename!r} not found in {directory}")
        if path_.stat().st_size > MAX_LABELS_BYTES:
            raise ConfigError(
                f"{source}: labels: {output}: {filename!r} is over {MAX_LABELS_BYTES >> 20} MiB"
            )
    return config


MAX_LABELS_BYTES = 16 << 20
"""Largest labels file read (a million labels of 16 bytes)."""


def _inside(directory: Path, filename: str) -> bool:
    """Whether ``filename`` is a path inside the model directory as written (relative, no ``..``
    out of it): a config says where its model's own files are, not where any file of the machine
    is. (A symbolic link placed in the directory is the repository owner's choice, and followed.)"""
    norm = os.path.normpath(filename)
    return not os.path.isabs(norm) and norm != ".." and not norm.startswith("../")
