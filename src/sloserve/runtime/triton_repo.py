"""Triton model repositories as they are: ``config.pbtxt`` and numbered version directories.

A model directory laid out for Triton serves unchanged::

    repo/resnet18/
      config.pbtxt        # Triton's model configuration (protobuf text format)
      1/model.onnx
      2/model.onnx        # the version served: the latest, Triton's default version policy

:func:`read_triton_config` turns the file into the fields of sloserve's own
:class:`~sloserve.runtime.model_config.ModelConfig`, which then validates it as any ``config.yaml``:

- ``max_batch_size``, ``dynamic_batching`` (preferred sizes, queue delay, priority levels, the
  default queue policy) and ``instance_group`` (the counts of CPU groups, added) keep Triton's
  meaning. Without ``dynamic_batching`` each request runs as it comes, as under Triton's default
  scheduler. ONNX Runtime's ``intra_op_thread_count`` parameter sets the instance's threads.
- sloserve's own fields come as ``parameters`` whose ``string_value`` is read as YAML:
  ``slo_ms``, ``serve_late``, ``scheduler`` / ``scaler`` (a name, or ``{name: ..., params: ...}``),
  ``autoscaling``, ``profile``, ``allow_padding``. Other parameters pass to the backend.
- What would change what a request gets and sloserve does not do is refused with the field named:
  a platform other than ONNX Runtime, GPU instance groups, sequence batching, ensembles, decoupled
  models, per-priority queue policies, more than one version. Settings that only tune Triton's own
  execution (``optimization``, ``model_warmup``, ``response_cache``, ...) are ignored with a
  warning in the log. ``input`` / ``output`` are not needed: the model file says what they are;
  an output's ``label_filename`` (in the model directory) names its classes for classification.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from sloserve.core.config import ConfigError, parse_document
from sloserve.runtime.model_config import DEFAULT_SCHEDULER, TRITON_CONFIG, default_scheduler

log = logging.getLogger("sloserve.runtime")

ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"

SLOSERVE_PARAMETERS = (
    "slo_ms",
    "serve_late",
    "scheduler",
    "scaler",
    "autoscaling",
    "profile",
    "allow_padding",
)
"""``parameters`` keys read as sloserve's own config fields (their ``string_value`` as YAML)."""

THREADS_PARAMETER = "intra_op_thread_count"
"""Triton's ONNX Runtime backend parameter that sloserve reads as ``instance_group.threads``."""

REFUSED = {
    "sequence_batching": "stateful sequence batching is not supported by sloserve",
    "ensemble_scheduling": "ensembles are not supported; a sloserve pipeline (pipeline.yaml) chains models",
}
"""Top-level fields that change what a request gets, which sloserve does not do."""

ONE_VERSION = "sloserve serves one version per model"

UNDERSTOOD = {
    "name",
    "platform",
    "backend",
    "version_policy",
    "max_batch_size",
    "input",
    "output",
    "instance_group",
    "dynamic_batching",
    "parameters",
    "default_model_filename",
    "model_transaction_policy",
}


class _Refused(Exception):
    """A field sloserve cannot honour: ``field`` and why (the file is added by the caller)."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")


def read_triton_config(path: Path) -> dict[str, Any]:
    """The ``ModelConfig`` fields of Triton's ``config.pbtxt`` at ``path`` (see the module docstring).

    Called when a model directory has no config of sloserve's own; :class:`ConfigError` names the
    file and the field (or the line of a syntax error).
    """
    try:
        config = text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
        return _fields(config, path.parent)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except _Refused as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _fields(config: Any, directory: Path) -> dict[str, Any]:
    present = {f.name for f, _ in config.ListFields()}
    for field in sorted(present & set(REFUSED)):
        raise _Refused(field, REFUSED[field])
    if config.model_transaction_policy.decoupled:
        raise _Refused("model_transaction_policy.decoupled", "decoupled models are not supported")
    ignored = sorted(present - UNDERSTOOD)  # (a refused one has raised above)
    if ignored:
        where = {"config": str(directory / TRITON_CONFIG), "fields": ignored}
        log.warning("Triton execution settings ignored (no effect here)", extra=where)
    if config.platform and config.platform != ONNX_PLATFORM:
        raise _Refused("platform", f"{config.platform!r}: sloserve runs ONNX models ({ONNX_PLATFORM!r})")
    if config.backend and config.backend != ONNX_BACKEND:
        raise _Refused("backend", f"{config.backend!r}: sloserve runs ONNX models ({ONNX_BACKEND!r})")
    filename = config.default_model_filename or "model.onnx"
    version = _version(config.version_policy, directory, filename)
    fields: dict[str, Any] = {
        "version": version,
        "model_file": f"{version}/{filename}",
        "max_batch_size": config.max_batch_size,
        "instance_group": _instances(config),
    }
    if config.name:
        fields["name"] = config.name
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for i, tensor in enumerate(tensors):
            if tensor.HasField("reshape"):  # the model would get (or answer) tensors of other shapes
                raise _Refused(f"{kind}[{i}].reshape", "reshaping tensors is not supported by sloserve")
    if config.input or config.output:
        _check_tensors(config, directory / version / filename)
    labels = {o.name: o.label_filename for o in config.output if o.label_filename}
    if labels:
        fields["labels"] = labels
    own = _parameters(config)
    if config.HasField("dynamic_batching"):
        fields |= _dynamic_batching(config.dynamic_batching)
    elif "scheduler" not in own and default_scheduler(own) == DEFAULT_SCHEDULER:
        # Triton's default scheduler: each request runs as it comes, however many rows it has
        fields["scheduler"] = {"name": DEFAULT_SCHEDULER, "params": {"max_batch_size": 1}}
    return fields | own


_ONNX_TYPES = {
    "FLOAT": "TYPE_FP32",
    "DOUBLE": "TYPE_FP64",
    "FLOAT16": "TYPE_FP16",
    "BFLOAT16": "TYPE_BF16",
    "BOOL": "TYPE_BOOL",
    "STRING": "TYPE_STRING",
    **{f"{s}INT{b}": f"TYPE_{s}INT{b}" for s in ("", "U") for b in (8, 16, 32, 64)},
}
"""ONNX element type name → Triton's ``data_type`` name."""


def _check_tensors(config: Any, model_file: Path) -> None:
    """The inputs and outputs the config declares against the model's own, as Triton checks them
    at load: each name must be the model's, its ``data_type`` the model's, its ``dims`` the model's
    (without the batch dimension when ``max_batch_size`` > 0, which the model must leave variable);
    a -1 on either side matches any size."""
    import onnx

    try:
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception:  # not a model: loading it says why
        return
    weights = {t.name for t in graph.initializer}

    def described(values: Any) -> dict[str, tuple[str, list[int]]]:
        out = {}
        for v in values:
            if v.name in weights:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out[v.name] = (_ONNX_TYPES.get(onnx.TensorProto.DataType.Name(t.elem_type), "?"), dims)
        return out

    batching = config.max_batch_size > 0
    for kind, declared, actual in (
        ("input", config.input, described(graph.input)),
        ("output", config.output, described(graph.output)),
    ):
        for i, tensor in enumerate(declared):
            if tensor.name not in actual:
                why = f"{tensor.name!r}: the model has no {kind} of that name (it has {sorted(actual)})"
                raise _Refused(f"{kind}[{i}].name", why)
            dtype, dims = actual[tensor.name]
            wanted = mc.DataType.Name(tensor.data_type)
            if tensor.data_type and dtype not in ("?", wanted):
                raise _Refused(f"{kind}[{i}].data_type", f"{wanted}: the model's {tensor.name!r} is {dtype}")
            if batching:
                if not dims or dims[0] != -1:
                    why = f"{config.max_batch_size}: the model's {kind} {tensor.name!r} has shape {dims}, no "
                    raise _Refused("max_batch_size", why + "variable batch dimension to batch along")
                dims = dims[1:]
            given = list(tensor.dims)
            if len(given) != len(dims) or any(
                a != b and -1 not in (a, b) for a, b in zip(given, dims, strict=False)
            ):
                shown = "without its batch dimension " if batching else ""
                why = f"{given}: the model's {tensor.name!r} is {dims} {shown}".rstrip()
                raise _Refused(f"{kind}[{i}].dims", why)


def _version(policy: Any, directory: Path, filename: str) -> str:
    """The one version served: the latest numbered directory holding the model file, unless the
    version policy names another."""
    versions = sorted(
        (int(d.name) for d in directory.iterdir() if d.name.isdigit() and (d / filename).is_file()),
        reverse=True,
    )
    if not versions:
        example = directory / "1" / filename
        raise _Refused("version", f"no version directory holds {filename!r} (e.g. {example})")
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        wanted = list(policy.specific.versions)
        if len(wanted) != 1:
            raise _Refused("version_policy.specific.versions", f"{wanted}: {ONE_VERSION}")
        if wanted[0] not in versions:
            raise _Refused("version_policy.specific.versions", f"version {wanted[0]} has no {filename!r}")
        return str(wanted[0])
    if kind == "all" and len(versions) > 1:
        raise _Refused("version_policy.all", f"versions {sorted(versions)}: {ONE_VERSION}")
    if kind == "latest" and min(policy.latest.num_versions, len(versions)) > 1:  # as "all": one is fine
        raise _Refused("version_policy.latest.num_versions", f"versions {sorted(versions)}: {ONE_VERSION}")
    return str(versions[0])


def _instances(config: Any) -> dict[str, Any]:
    count = 0
    for i, group in enumerate(config.instance_group):
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        if kind not in ("KIND_AUTO", "KIND_CPU"):
            raise _Refused(f"instance_group[{i}].kind", f"{kind}: sloserve runs models on the CPU (KIND_CPU)")
        count += group.count or 1  # Triton reads an unset (0) count as 1
    fields: dict[str, Any] = {"count": count if config.instance_group else 1}
    threads = config.parameters.get(THREADS_PARAMETER)
    if threads is not None:
        text = threads.string_value
        if not (text.isascii() and text.isdigit() and len(text) <= 9):  # int() takes " 2 ", "1_0", "٣"
            raise _Refused(f"parameters.{THREADS_PARAMETER}", f"{text!r} is not a whole number")
        fields["threads"] = int(text)
    return fields


def _dynamic_batching(batching: Any) -> dict[str, Any]:
    if batching.priority_queue_policy:
        raise _Refused("dynamic_batching.priority_queue_policy", "per-level queue policies are not supported")
    fields: dict[str, Any] = {
        "preferred_batch_size": list(batching.preferred_batch_size),
        "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
    }
    if batching.priority_levels:
        fields["priority_levels"] = batching.priority_levels
        fields["default_priority_level"] = batching.default_priority_level
    if batching.HasField("default_queue_policy"):
        policy = batching.default_queue_policy
        fields["queue_policy"] = {
            "timeout_action": mc.ModelQueuePolicy.TimeoutAction.Name(policy.timeout_action),
            "default_timeout_microseconds": policy.default_timeout_microseconds,
            "allow_timeout_override": policy.allow_timeout_override,
            "max_queue_size": policy.max_queue_size,
        }
    return fields


def _parameters(config: Any) -> dict[str, Any]:
    """sloserve's own fields from ``parameters``, and the rest as the backend's ``parameters``."""
    own: dict[str, Any] = {}
    backend: dict[str, Any] = {}
    for key, value in sorted(config.parameters.items()):
        if key not in SLOSERVE_PARAMETERS:
            if key != THREADS_PARAMETER:
                backend[key] = value.string_value
            continue
        try:
            parsed = parse_document(value.string_value, json_syntax=False)
        except (ValueError, yaml.YAMLError) as exc:
            raise _Refused(f"parameters.{key}", f"not YAML: {exc}") from None
        own[key] = {"name": parsed} if key in ("scheduler", "scaler") and isinstance(parsed, str) else parsed
    if backend:
        own["parameters"] = backend
    return own
