"""What the load generator's requests carry, built from a model's metadata: rows per request, the
sizes of variable dimensions, and random, zero or a file's values (:class:`Payload`).

:func:`sized_requests` checks a payload against the model's inputs before anything is sent (each
error a :class:`PayloadError` naming the input); :func:`make_requests` builds the distinct requests a
target sends in turn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sloserve.bench.input_data import RANDOM, GivenTensor, InputData
from sloserve.runtime.backend import DATATYPE_TO_NUMPY

NUMPY_OF = {name: dtype for name, dtype in DATATYPE_TO_NUMPY.items() if name != "BYTES"}
"""The datatypes the load generator fills, with their NumPy dtypes: the server's own mapping less
BYTES (which it does not generate)."""


class PayloadError(ValueError):
    """A payload the model cannot take (or the generator cannot build), found before any request
    is sent; the message names the input."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input as its metadata describes it (``-1`` for a variable dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


MAX_REQUEST_BYTES = 1 << 30
"""Largest request the generator builds (its inputs, every request the same)."""


@dataclass(frozen=True, slots=True)
class Payload:
    """What every request carries: ``rows`` along the batch dimension, and per input named in
    ``shapes`` the size of each dimension of one row (the batch dimension left out, as
    perf_analyzer's ``--shape`` takes it). A variable dimension not given is sent as 1.

    An input's first dimension is its batch dimension when the metadata gives it as ``-1``. ``data``
    says what values the requests carry (random, zeros, or a file's entries, which may give each
    entry's shapes themselves)."""

    rows: int = 1
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    data: InputData = RANDOM

    def shape_of(self, spec: TensorSpec) -> tuple[int, ...]:
        """The shape ``spec`` is sent with; :class:`PayloadError` when this payload does not fit it."""
        batched, row = _row_dims(spec)
        if self.rows != 1 and not batched:
            raise PayloadError(
                f"{self.rows} rows per request: input {spec.name!r} has no batch dimension "
                f"(its shape is {list(spec.shape)})"
            )
        given = self.shapes.get(spec.name)
        if given is None:
            dims = tuple(1 if d == -1 else d for d in row)
        else:
            where = f"the shape given for input {spec.name!r} {list(given)}"
            if len(given) != len(row):
                beside = " besides the batch dimension" if batched else ""
                raise PayloadError(
                    f"{where} has {len(given)} dimension(s); the input has {len(row)}{beside} "
                    f"(its shape is {list(spec.shape)})"
                )
            for i, (want, got) in enumerate(zip(row, given, strict=True)):
                if want != -1 and got != want:
                    raise PayloadError(
                        f"{where}: its dimension {i} is fixed at {want} "
                        f"(the input's shape is {list(spec.shape)})"
                    )
            dims = given
        return (self.rows, *dims) if batched else dims

    def defaulted(self, specs: list[TensorSpec]) -> list[str]:
        """Inputs of ``specs`` with a variable dimension (beyond the batch one) this payload sends
        as 1 because no shape was given for it."""
        return [
            s.name
            for s in specs
            if s.name not in self.shapes and -1 in _row_dims(s)[1] and not self.data.shaped_by_file(s.name)
        ]

    def unused_shapes(self) -> list[str]:
        """Inputs given a shape that no request uses: every entry of the file gives its own."""
        return [name for name in self.shapes if self.data.shaped_by_file(name)]

    def describe(self) -> dict[str, Any]:
        """The payload as a report states it (the shapes a request uses, not those the file overrides)."""
        unused = self.unused_shapes()
        return {
            "rows": self.rows,
            "shapes": {name: list(dims) for name, dims in self.shapes.items() if name not in unused},
            "input_data": self.data.describe(),
        }


def _row_dims(spec: TensorSpec) -> tuple[bool, tuple[int, ...]]:
    """Whether ``spec`` has a batch dimension (its first, given as -1), and the dimensions of a row."""
    batched = spec.shape[:1] == (-1,)
    return batched, spec.shape[1:] if batched else spec.shape


ONE_ROW = Payload()
"""The default payload: one row, every variable dimension 1."""


Request = list[tuple[TensorSpec, np.ndarray]]
"""One request's inputs: each input's spec (its shape the one sent) and its values."""


def sized_requests(specs: list[TensorSpec], payload: Payload) -> list[list[TensorSpec]]:
    """The inputs of each distinct request ``payload`` makes (one for random or zero values; for a
    file, one per step of its round-robin), in the shapes they are sent; :class:`PayloadError` for
    inputs the generator cannot build or a payload that does not fit the model, before anything is
    sent."""
    return [[spec for spec, _ in request] for request in _plan(specs, payload)]


def request_bytes(sized: list[TensorSpec]) -> int:
    """Bytes of tensor data in one request of inputs ``sized`` (one of :func:`sized_requests`)."""
    return sum(math.prod(s.shape) * NUMPY_OF[s.datatype].itemsize for s in sized)


def make_requests(specs: list[TensorSpec], payload: Payload, seed: int = 0) -> list[Request]:
    """The distinct requests ``payload`` makes for ``specs``, sent in turn: random values drawn in
    each input's own datatype (no float64 copy of a large payload on the way), zeros, or the rows of
    a file's entries."""
    rng = np.random.default_rng(seed)
    requests = []
    for request in _plan(specs, payload):
        filled: Request = []
        for spec, rows in request:
            dtype = NUMPY_OF[spec.datatype]
            if rows is not None:
                arr = np.concatenate(rows).reshape(spec.shape)
            elif payload.data.kind == "zero":
                arr = np.zeros(spec.shape, dtype=dtype)
            else:
                arr = _random(rng, dtype, spec.shape)
            filled.append((spec, arr))
        requests.append(filled)
    return requests


def _random(rng: np.random.Generator, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    if dtype == np.float16:  # the generator draws float32 and float64 only
        return rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape, dtype=np.bool_)
    return rng.integers(0, 100, shape, dtype=dtype)


_Planned = list[tuple[TensorSpec, list[np.ndarray] | None]]
"""One request as planned: each input's sized spec, and its rows' flat values from a file (None:
random or zero values, drawn when the request is made)."""


def _plan(specs: list[TensorSpec], payload: Payload) -> list[_Planned]:
    """The distinct requests of ``payload``: every check of :func:`sized_requests`."""
    if not specs:
        raise PayloadError("the model's metadata lists no inputs")
    unknown = sorted(set(payload.shapes) - {spec.name for spec in specs})
    if unknown:
        raise PayloadError(
            f"a shape is given for input(s) {unknown}; the model's inputs are {[s.name for s in specs]}"
        )
    for spec in specs:
        if spec.datatype not in NUMPY_OF:
            raise PayloadError(
                f"input {spec.name!r}: datatype {spec.datatype} is not supported by the load generator"
            )
        if any(d < -1 for d in spec.shape):
            raise PayloadError(f"input {spec.name!r}: shape {list(spec.shape)} has a dimension below -1")
    if payload.data.kind == "file":
        planned = _plan_from_file(specs, payload)
    else:
        planned = [[(TensorSpec(s.name, s.datatype, payload.shape_of(s)), None) for s in specs]]
    sizes = [request_bytes([spec for spec, _ in request]) for request in planned]
    if max(sizes) > MAX_REQUEST_BYTES:
        raise PayloadError(
            f"the model's inputs take {max(sizes)} bytes a request: over the generator's 1 GiB"
        )
    total = sum(sizes)
    if total > MAX_REQUEST_BYTES:
        raise PayloadError(
            f"the {len(planned)} distinct requests of {payload.data.source} take {total} bytes: "
            "over the generator's 1 GiB"
        )
    return planned


def _plan_from_file(specs: list[TensorSpec], payload: Payload) -> list[_Planned]:
    """Requests of ``payload.rows`` consecutive entries each, until the entries come round again."""
    data = payload.data
    names = [s.name for s in specs]
    rows: list[dict[str, tuple[tuple[int, ...], np.ndarray]]] = []
    for i, entry in enumerate(data.entries):
        where = f"{data.source}: data[{i}]"
        extra = sorted(set(entry) - set(names))
        if extra:
            raise PayloadError(
                f"{where} gives input(s) {extra} the model does not have; its inputs are {names}"
            )
        missing = [n for n in names if n not in entry]
        if missing:
            raise PayloadError(f"{where} has no values for input(s) {missing}")
        rows.append({s.name: _row_of(s, entry[s.name], payload, f"{where}.{s.name}") for s in specs})
    count = len(rows)
    distinct = count // math.gcd(count, payload.rows)
    planned = []
    for j in range(distinct):
        taken = [(j * payload.rows + r) % count for r in range(payload.rows)]
        first, *others = taken
        request: _Planned = []
        for spec in specs:
            row_shape = rows[first][spec.name][0]
            for k in others:
                if rows[k][spec.name][0] != row_shape:
                    raise PayloadError(
                        f"{data.source}: data[{first}] and data[{k}] give input {spec.name!r} the shapes "
                        f"{list(row_shape)} and {list(rows[k][spec.name][0])}: the {payload.rows} rows of "
                        "one request (-b) must share their shapes"
                    )
            shape = (payload.rows, *row_shape) if _row_dims(spec)[0] else row_shape
            values = [rows[k][spec.name][1] for k in taken]
            request.append((TensorSpec(spec.name, spec.datatype, shape), values))
        planned.append(request)
    return planned


def _row_of(
    spec: TensorSpec, given: GivenTensor, payload: Payload, where: str
) -> tuple[tuple[int, ...], np.ndarray]:
    """One entry's row of input ``spec``: its shape (the entry's own, else ``--shape``'s) and its
    values in the input's datatype, flat."""
    shapes = dict(payload.shapes)
    if given.shape is not None:
        shapes[spec.name] = given.shape
    try:
        shape = Payload(payload.rows, shapes).shape_of(spec)
    except PayloadError as exc:
        raise PayloadError(f"{where}: {exc}") from None
    row_shape = shape[1:] if _row_dims(spec)[0] else shape
    values = _in_datatype(given.values, spec.datatype, where)
    want = math.prod(row_shape)
    if values.size != want:
        hint = (
            f' (give the entry\'s "shape", or --shape {spec.name}:D1,...)'
            if given.shape is None and -1 in _row_dims(spec)[1]
            else ""
        )
        raise PayloadError(f"{where}: {values.size} value(s) for a row of shape {list(row_shape)}{hint}")
    return row_shape, values


def _in_datatype(values: np.ndarray | bytes, datatype: str, where: str) -> np.ndarray:
    """``values`` (as :class:`~sloserve.bench.input_data.GivenTensor` holds them) as ``datatype``;
    :class:`PayloadError` for values that type cannot hold."""
    dtype = NUMPY_OF[datatype]
    if isinstance(values, bytes):
        if len(values) % dtype.itemsize:
            raise PayloadError(f"{where}: {len(values)} bytes is not a whole number of {datatype} values")
        arr = np.frombuffer(values, dtype=dtype.newbyteorder("<")).astype(dtype)
        if dtype.kind == "b" and not np.isin(np.frombuffer(values, np.uint8), (0, 1)).all():
            raise PayloadError(f"{where}: BOOL bytes must be 0 or 1")
        return arr
    kind = values.dtype.kind  # b: all true/false, O: all integers, f: numbers
    if kind == "b" and dtype.kind != "b":
        raise PayloadError(f"{where}: true/false for a {datatype} input")
    if dtype.kind == "b":
        if kind == "f" or (kind == "O" and not all(v in (0, 1) for v in values)):
            raise PayloadError(f"{where}: {datatype} values must be true/false or 0/1")
        return values.astype(dtype)
    if dtype.kind in "iu":
        if kind == "f":
            raise PayloadError(f"{where}: {datatype} values must be integers")
        info = np.iinfo(dtype)  # type: ignore[type-var]  # the kind is checked: an integer dtype
        if values.size and (min(values) < info.min or max(values) > info.max):
            raise PayloadError(f"{where}: values outside {datatype}'s range {info.min}..{info.max}")
        return values.astype(dtype)
    try:
        exact = values.astype(np.float64)
    except OverflowError:  # a Python integer beyond any float
        raise PayloadError(f"{where}: values outside {datatype}'s range") from None
    with np.errstate(over="ignore"):  # an overflow is found below and said as an error
        cast = exact.astype(dtype)
    if not np.isfinite(cast[np.isfinite(exact)]).all():
        raise PayloadError(f"{where}: values outside {datatype}'s range")
    return cast
