"""Stacking per-request tensors into one batch and splitting the outputs back.

Every request's tensors carry their own batch dimension (axis 0, usually 1, as Triton clients send
them); a batch concatenates them along axis 0. Requests whose tensors differ in another axis are
**padded** with zeros at the end of that axis to the largest size in the batch, provided that

1. the axis is variable (``-1``) in the model's input metadata — a fixed axis must match exactly;
2. every model output has only fixed axes besides the batch axis, so that each request's slice of
   the output does not depend on how much it was padded; and
3. the caller allows padding (``allow_padding``; the model's config decides: zero-padding is only
   correct for models that ignore the padded positions, like the demo BERT with its attention mask).

Otherwise :class:`BatchInputError` says which input, request and axis is the problem.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sloserve.runtime.backend import BackendError, TensorSpec


class BatchInputError(ValueError):
    """Request tensors that cannot go into one batch (wrong name, dtype or shape, unpaddable)."""


@dataclass(frozen=True, slots=True)
class StackedBatch:
    """One batch ready for :meth:`ExecutionBackend.run`, and how to split its outputs."""

    inputs: dict[str, np.ndarray]
    """Input name → stacked (and possibly padded) tensor."""
    sizes: tuple[int, ...]
    """Rows (axis-0 size) each request contributed, in order."""
    padded: bool
    """Whether any request was zero-padded."""

    @property
    def rows(self) -> int:
        """Total batch size (sum of :attr:`sizes`)."""
        return sum(self.sizes)


def padding_possible(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Whether the model has a variable input axis to pad and only fixed output axes (rules 1-2)."""
    return any(s.variable_axes() for s in inputs) and not any(o.variable_axes() for o in outputs)


def _check_request(i: int, name: str, arr: np.ndarray, spec: TensorSpec) -> None:
    if arr.dtype != spec.dtype:
        raise BatchInputError(
            f"input {name!r} of request {i}: datatype {arr.dtype} does not match the model's {spec.datatype}"
        )
    if arr.ndim != len(spec.shape):
        raise BatchInputError(
            f"input {name!r} of request {i}: shape {list(arr.shape)} has {arr.ndim} dimensions, "
            f"the model expects {len(spec.shape)} ({list(spec.shape)})"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=True)):
        if want >= 0 and want != got:
            raise BatchInputError(
                f"input {name!r} of request {i}: shape {list(arr.shape)} does not match the model's "
                f"{list(spec.shape)} at axis {axis}"
            )


def stack_requests(
    requests: Sequence[Mapping[str, np.ndarray]],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec] = (),
    *,
    allow_padding: bool = False,
) -> StackedBatch:
    """Concatenate the requests' tensors along axis 0, zero-padding variable axes where allowed."""
    if not requests:
        raise BatchInputError("cannot stack an empty batch")
    names = {s.name for s in inputs}
    for i, req in enumerate(requests):
        missing = sorted(names - req.keys())
        if missing:
            raise BatchInputError(f"request {i}: missing input(s) {missing}")
        extra = sorted(req.keys() - names)
        if extra:
            raise BatchInputError(f"request {i}: unknown input(s) {extra}; the model takes {sorted(names)}")
    sizes: tuple[int, ...] | None = None
    padded = False
    stacked: dict[str, np.ndarray] = {}
    for spec in inputs:
        arrays = [np.asarray(req[spec.name]) for req in requests]
        for i, arr in enumerate(arrays):
            _check_request(i, spec.name, arr, spec)
        rows = tuple(int(a.shape[0]) for a in arrays)
        if sizes is None:
            sizes = rows
        elif rows != sizes:
            raise BatchInputError(
                f"input {spec.name!r}: rows per request {list(rows)} differ from other inputs' {list(sizes)}"
            )
        target = tuple(max(a.shape[axis] for a in arrays) for axis in range(len(spec.shape)))
        ragged = [i for i, a in enumerate(arrays) if a.shape[1:] != target[1:]]
        if ragged:
            axes = sorted(
                {ax for i in ragged for ax in range(1, len(target)) if arrays[i].shape[ax] != target[ax]}
            )
            if not allow_padding:
                other = next(a.shape for a in arrays if a.shape[1:] != arrays[0].shape[1:])
                raise BatchInputError(
                    f"input {spec.name!r}: requests differ in size along axis {axes} "
                    f"(e.g. {list(arrays[0].shape)} and {list(other)}) and this model "
                    "does not allow padding: send equally shaped tensors"
                )
            variable_outputs = [o.name for o in outputs if o.variable_axes()]
            if variable_outputs:
                raise BatchInputError(
                    f"input {spec.name!r}: requests differ in size along axis {axes}, and padding is not "
                    f"possible because output(s) {variable_outputs} have variable dimensions"
                )
            arrays = [_pad_to(a, target) for a in arrays]
            padded = True
        stacked[spec.name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    assert sizes is not None
    return StackedBatch(stacked, sizes, padded)


def _pad_to(arr: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    if arr.shape[1:] == target[1:]:
        return arr
    widths = [(0, 0)] + [(0, t - s) for s, t in zip(arr.shape[1:], target[1:], strict=True)]
    if arr.dtype == np.object_:
        return np.pad(arr, widths, mode="constant", constant_values=b"")
    return np.pad(arr, widths, mode="constant")


def split_outputs(outputs: Mapping[str, np.ndarray], sizes: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Slice each output along axis 0 back into the requests' parts (views, no copies)."""
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise BackendError(
                f"output {name!r} has shape {list(arr.shape)}; expected {total} rows, one per batch row"
            )
    if len(sizes) == 1:
        return [dict(outputs)]
    bounds = np.cumsum([0, *sizes])
    return [
        {name: arr[int(lo) : int(hi)] for name, arr in outputs.items()}
        for lo, hi in itertools.pairwise(bounds)
    ]


def example_inputs(
    inputs: Sequence[TensorSpec], batch: int, *, variable_dim: int = 64, seed: int = 0
) -> dict[str, np.ndarray]:
    """A batch of synthetic inputs for warm-up and profiling.

    Variable axes other than the batch take ``variable_dim``; floats are standard normal (seeded),
    integers are ones (valid token ids, attention masks and indices), booleans are true.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = (batch, *(variable_dim if d < 0 else d for d in spec.shape[1:]))
        dtype = spec.dtype
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iub":
            out[spec.name] = np.ones(shape, dtype=dtype)
        else:
            out[spec.name] = np.full(shape, b"x", dtype=object)
    return out
