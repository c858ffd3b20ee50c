"""The execution backend interface: what an instance worker calls to run one batch.

One backend object is one model *instance* (for ONNX Runtime: one ``InferenceSession`` with its own
intra-op thread pool). The worker thread that owns the instance calls :meth:`ExecutionBackend.run`
with a stacked batch (see :mod:`sloserve.runtime.stacking`) and blocks until it returns; the
control loop may call :meth:`ExecutionBackend.set_threads` at any time from any thread.

Tensor metadata uses the Open Inference Protocol (KServe v2) names: datatypes ``FP32``, ``INT64``, ...
and shapes with ``-1`` for variable dimensions (the first dimension is the batch dimension for every
model that batches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

DATATYPE_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
"""KServe v2 datatype name → numpy dtype (``BYTES`` tensors are object arrays of ``bytes``)."""

_NUMPY_TO_DATATYPE = {dt: name for name, dt in DATATYPE_TO_NUMPY.items()}


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype of a KServe v2 datatype name; ``ValueError`` for an unknown name."""
    try:
        return DATATYPE_TO_NUMPY[datatype]
    except KeyError:
        raise ValueError(
            f"unknown datatype {datatype!r}; expected one of {sorted(DATATYPE_TO_NUMPY)}"
        ) from None


def datatype_of(dtype: np.dtype[np.generic] | type) -> str:
    """The KServe v2 datatype name of a numpy dtype (``str``/``bytes`` arrays map to ``BYTES``)."""
    dt = np.dtype(dtype)
    if dt.kind in ("S", "U", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_DATATYPE[dt]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no KServe v2 datatype") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, datatype and shape of one model input or output, as model metadata reports it."""

    name: str
    datatype: str
    """KServe v2 datatype name, e.g. ``FP32``."""
    shape: tuple[int, ...]
    """Full shape including the batch dimension; ``-1`` marks a variable dimension."""
    symbols: tuple[str | None, ...] = field(default=(), compare=False)
    """The model's names of variable dimensions, by axis (None: unnamed or fixed; empty: none
    known). Inputs whose dimensions share a name must have them of one size."""

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The numpy dtype of this tensor."""
        return numpy_dtype(self.datatype)

    def variable_axes(self) -> tuple[int, ...]:
        """Axes (other than the batch axis 0) whose size may vary between requests."""
        return tuple(i for i, d in enumerate(self.shape) if d < 0 and i > 0)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete ``shape`` (including the batch dimension) matches this spec."""
        return len(shape) == len(self.shape) and all(
            d < 0 or d == s for d, s in zip(self.shape, shape, strict=True)
        )


def metadata_document(
    name: str, version: str, platform: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    """A model's Open Inference Protocol metadata document (``GET /v2/models/{name}``)."""

    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": tensors(inputs),
        "outputs": tensors(outputs),
    }


class BackendError(RuntimeError):
    """Running a batch failed inside the backend (bad tensor for the model, runtime failure)."""

    def __init__(self, message: str, *, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bad_input
        """Whether the backend refused the input values themselves (the client's error)."""


@runtime_checkable
class ExecutionBackend(Protocol):
    """One model instance that runs batches (e.g. :class:`~sloserve.runtime.onnx_backend.OnnxBackend`).

    Threading contract: :meth:`run` is called from the instance's worker thread (one batch at a
    time per instance is the intended use, though implementations must tolerate concurrent calls);
    :meth:`set_threads` and :meth:`close` may be called from any thread.
    """

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs, in the model's order."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs, in the model's order."""
        ...

    @property
    def threads(self) -> int:
        """Intra-op threads of the session that new :meth:`run` calls use."""
        ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one (already stacked) batch and block until done; raises :class:`BackendError`."""
        ...

    def set_threads(self, threads: int) -> Future[None]:
        """Change the instance's threads in place; the returned future resolves once new runs use them.

        Runs in flight finish on the old configuration; no run fails because of a resize.
        """
        ...

    def close(self) -> None:
        """Release the instance (runs in flight still finish)."""
        ...
