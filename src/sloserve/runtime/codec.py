"""Tensors on the wire ↔ numpy: the Open Inference Protocol's JSON form, its binary tensor
extension, the parameters of Triton's system shared-memory extension (:class:`ShmRef`; the regions
themselves are :mod:`sloserve.runtime.shared_memory`'s), and the checks of a request's inputs
against a model's metadata.

Every problem raises :class:`ProtocolError` with the HTTP status and a message that says what was
wrong and where (the front ends turn it into ``{"error": ...}`` or a gRPC status).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sloserve.core.config import unique_keys
from sloserve.runtime.backend import DATATYPE_TO_NUMPY, TensorSpec, datatype_of

if TYPE_CHECKING:
    from sloserve.runtime.shared_memory import Region, SystemSharedMemory


class ProtocolError(Exception):
    """A request the server cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(
        self, message: str, status: int = 400, *, counted: bool = False, allow: str = "", grpc_code: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow
        """For a 405: the method the route takes (its ``Allow`` header)."""
        self.grpc_code = grpc_code
        """The gRPC status code's name where it is not the one ``status`` maps to (a region name
        registered twice: 400, but ``ALREADY_EXISTS``, as in Triton); empty otherwise."""
        self.counted = counted
        """Whether the model's statistics count it already (a refusal by its loop), so that a
        front end does not count it again as a bad request."""


def clipped(text: str, limit: int = 32) -> str:
    """``text`` cut to ``limit`` characters and an ellipsis: what a refusal quotes of a client's
    value, which may be megabytes long."""
    return text if len(text) <= limit else text[:limit] + "…"


# -- system shared memory (Triton's extension; see sloserve.runtime.shared_memory) -------------

REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"


@dataclass(frozen=True, slots=True)
class ShmRef:
    """A tensor in shared memory: ``byte_size`` bytes at ``offset`` of the registered ``region``."""

    region: str
    byte_size: int
    offset: int = 0
    mapped: Region | None = field(default=None, compare=False, repr=False)
    """The region registered under ``region`` when the request was decoded (set by the registry as
    it checks the tensor): the request reads or writes that one even if the name is unregistered or
    registered again meanwhile, and keeps its mapping alive until the request is gone."""

    def hold(self, region: Region) -> None:
        """Keep ``region`` as the one this tensor is in (once, by the registry)."""
        object.__setattr__(self, "mapped", region)

    def parameters(self) -> dict[str, Any]:
        """The parameters as a client sends them (the offset only when it is not zero)."""
        params: dict[str, Any] = {REGION: self.region, BYTE_SIZE: self.byte_size}
        if self.offset:
            params[OFFSET] = self.offset
        return params


def shm_ref(params: Mapping[str, Any], where: str) -> ShmRef | None:
    """The shared-memory reference in a tensor's parameters (None when it has none)."""
    region = params.get(REGION)
    size = params.get(BYTE_SIZE)
    if region is None and size is None:
        if OFFSET in params:
            raise ProtocolError(f"{where}: {OFFSET} given without {REGION} and {BYTE_SIZE}")
        return None
    if region is None or size is None:
        raise ProtocolError(f"{where}: {REGION} and {BYTE_SIZE} must be given together")
    if not isinstance(region, str) or not region:
        raise ProtocolError(f"{where}: {REGION} must be a non-empty string, got {region!r}")
    offset = params.get(OFFSET, 0)
    for name, value in ((BYTE_SIZE, size), (OFFSET, offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProtocolError(f"{where}: {name} must be a non-negative integer, got {value!r}")
    return ShmRef(region, size, offset)


def no_shared_memory(where: str) -> ProtocolError:
    return ProtocolError(f"{where}: shared memory is not available on this server")


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asked for: as binary data or JSON, or written into shared memory."""

    name: str
    binary: bool
    shm: ShmRef | None = None
    """Where to write it (its data is then left out of the response)."""
    class_count: int = 0
    """Answer it as its top classes (Triton's classification extension,
    :mod:`sloserve.runtime.classification`); 0: the tensor itself."""


CLASSIFICATION = "classification"
"""The output parameter asking for the output's top classes."""


def class_count(params: Mapping[str, Any], shm: ShmRef | None, where: str) -> int:
    """The ``classification`` parameter of an output (0 when absent or null)."""
    count = params.get(CLASSIFICATION)
    if count is None:
        return 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ProtocolError(f"{where}: {CLASSIFICATION} must be a non-negative integer, got {count!r}")
    if count and shm is not None:
        raise ProtocolError(f"{where}: a classification cannot be written to shared memory")
    return count


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request, independent of the front end it came through."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput] | None
    """None: every output, in the model's order."""
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False
    """``binary_data_output``: the default for outputs not listed with their own ``binary_data``."""


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


MAX_SPAN = 2**48
"""Most elements a shape may span, zero dimensions counted as one (far beyond any body; numpy's
own limit, about 2**63 bytes, would otherwise surface as an internal error)."""


def check_shape(shape: Any, where: str) -> tuple[int, ...]:
    """``shape`` as a tuple, after checking it is a list of non-negative integers spanning at most
    :data:`MAX_SPAN` elements."""
    if not isinstance(shape, list | tuple) or not all(type(d) is int and d >= 0 for d in shape):  # no bools
        raise ProtocolError(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    span = 1
    for d in shape:
        if d > 1:
            span *= d
    if span > MAX_SPAN:
        raise ProtocolError(f"{where}: shape {list(shape)} is too large (over 2**48 elements)")
    return tuple(shape)


def check_datatype(datatype: Any, where: str) -> np.dtype[Any]:
    if not isinstance(datatype, str) or datatype not in DATATYPE_TO_NUMPY:
        raise ProtocolError(
            f"{where}: unknown datatype {datatype!r}; expected one of {', '.join(sorted(DATATYPE_TO_NUMPY))}"
        )
    return DATATYPE_TO_NUMPY[datatype]


def tensor_from_bytes(
    datatype: str, shape: tuple[int, ...], raw: bytes | memoryview, where: str
) -> np.ndarray:
    """A tensor from raw little-endian bytes (``BYTES``: each element 4-byte length-prefixed)."""
    dtype = check_datatype(datatype, where)
    count = element_count(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        view = memoryview(raw)
        pos = 0
        while pos < len(view):
            if pos + 4 > len(view):
                raise ProtocolError(f"{where}: truncated BYTES element length at byte {pos}")
            (n,) = struct.unpack_from("<I", view, pos)
            pos += 4
            if pos + n > len(view):
                raise ProtocolError(f"{where}: BYTES element of {n} bytes runs past the data at byte {pos}")
            items.append(bytes(view[pos : pos + n]))
            pos += n
        if len(items) != count:
            raise ProtocolError(f"{where}: {len(items)} BYTES elements for shape {list(shape)} ({count})")
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise ProtocolError(
            f"{where}: {len(raw)} bytes of data for shape {list(shape)} {datatype} ({expected} expected)"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def tensor_to_bytes(arr: np.ndarray) -> bytes:
    """Raw little-endian bytes of a tensor (``BYTES``: 4-byte length prefix per element)."""
    if arr.dtype.kind in ("O", "S", "U"):
        parts = []
        for item in arr.reshape(-1):
            b = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).tobytes()


def tensor_from_json(datatype: str, shape: tuple[int, ...], data: Any, where: str) -> np.ndarray:
    """A tensor from the JSON ``data`` field (flat or nested, row-major)."""
    dtype = check_datatype(datatype, where)
    if datatype == "BYTES":
        flat = _flatten(data, where)
        arr = np.empty(len(flat), dtype=object)
        try:
            arr[:] = [x.encode() if isinstance(x, str) else _bad_bytes(x, where) for x in flat]
        except UnicodeEncodeError:  # JSON's "\ud800": a lone surrogate, no UTF-8 for it
            raise ProtocolError(f"{where}: 'data' holds a string that is not valid Unicode") from None
    else:
        try:
            with np.errstate(over="raise"):  # 1e300 into FP32: refused, not silently infinite
                arr = np.asarray(data, dtype=dtype)
        except FloatingPointError:
            raise ProtocolError(f"{where}: 'data' holds a value outside the range of {datatype}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"{where}: 'data' does not hold {datatype} values: {exc}") from None
        # NumPy would take true as 1 and cut 1.5 to 1 for an integer type: refuse both
        allowed, words = _JSON_LEAVES[dtype.kind]
        if not _leaf_types(data) <= allowed:
            raise ProtocolError(f"{where}: 'data' of a {datatype} tensor must hold {words}")
        arr = arr.reshape(-1)
    if arr.size != element_count(shape):
        raise ProtocolError(
            f"{where}: 'data' has {arr.size} elements but shape {list(shape)} needs {element_count(shape)}"
        )
    return arr.reshape(shape)


def _bad_bytes(value: Any, where: str) -> bytes:
    raise ProtocolError(f"{where}: BYTES data must be strings, got {type(value).__name__}")


_JSON_LEAVES: dict[str, tuple[set[type], str]] = {
    "b": ({bool}, "true/false"),
    "i": ({int}, "integers"),
    "u": ({int}, "integers"),
    "f": ({int, float}, "numbers"),
}
"""The JSON value types a tensor's ``data`` may hold, by NumPy dtype kind (bool is not an int here)."""


def _leaf_types(data: Any) -> set[type]:
    """The exact types of the leaves of the nested list ``data`` (JSON decodes to exact types)."""
    if not isinstance(data, list):
        return {type(data)}
    types = set(map(type, data))
    if list in types:
        types.discard(list)
        for item in data:
            if isinstance(item, list):
                types |= _leaf_types(item)
    return types


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"{where}: 'data' must be a list")
    return flatten_lists(data)


def flatten_lists(data: list[Any]) -> list[Any]:
    """The leaves of nested JSON lists, in order (row-major for a tensor's ``data``); iterative, as
    JSON may nest deeper than Python recurses."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def tensor_to_json_data(arr: np.ndarray) -> list[Any]:
    """Flat row-major JSON data of a tensor (``BYTES`` decoded as UTF-8 where possible)."""
    if arr.dtype.kind in ("O", "S"):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)]
    return list(arr.reshape(-1).tolist())


# -- HTTP bodies -------------------------------------------------------------------------------


def _param_bool(params: Mapping[str, Any], name: str, where: str, default: bool = False) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: parameter {name!r} must be true or false, got {value!r}")
    return value


def json_document(raw: bytes | bytearray, what: str, *, once_each: bool = False) -> Any:
    """``raw`` parsed as JSON; :class:`ProtocolError` naming ``what`` when it is not (nesting deep
    enough to exhaust Python's recursion included). ``once_each``: an object that names a key twice
    is refused too (for the control routes; an infer body is not checked, to keep its decoding cheap)."""
    try:
        return json.loads(raw, object_pairs_hook=unique_keys if once_each else None)
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer of over 4300 digits
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"{what} is not valid JSON: nested too deeply") from None


_INPUT_FIELDS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_FIELDS = frozenset({"name", "parameters"})


def _known_fields(item: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    if not known.issuperset(item):
        unknown = sorted(set(item) - known)
        raise ProtocolError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")


def _object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object field (absent or null: empty); 400 naming ``what`` for anything else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {value!r}")
    return value


def decode_http_infer(
    body: bytes, header_length: int | None, shm: SystemSharedMemory | None = None
) -> InferRequest:
    """Decode an infer body: JSON, or a JSON header of ``header_length`` bytes then binary tensors.

    Inputs and outputs may name regions of ``shm`` (Triton's system shared-memory extension), each
    checked here against the region registered under its name, which the request then holds: an
    input is read from it by :meth:`SystemSharedMemory.read` (the server's registry: once the model's
    checks pass), an output written into it by :meth:`SystemSharedMemory.write_outputs` when the
    model has run it, before it counts as answered.
    """
    tail: bytes | memoryview
    if header_length is None or header_length == len(body):
        header_bytes, tail = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length {header_length} is outside the body of {len(body)} bytes"
            )
        # a view, not a copy: the tensors are read straight out of the received body
        whole = memoryview(body)
        header_bytes, tail = bytes(whole[:header_length]), whole[header_length:]
    doc = json_document(header_bytes, "request body")
    if not isinstance(doc, dict):
        raise ProtocolError("request body must be a JSON object")
    unknown = set(doc) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise ProtocolError(f"unknown field(s) in request: {sorted(unknown)}")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError(f"'id' must be a string, got {rid!r}")
    params = _object(doc.get("parameters"), "'parameters'")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list")
    inputs: dict[str, np.ndarray] = {}
    view = memoryview(tail)
    offset = 0
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise ProtocolError(f"{where} must be a JSON object")
        _known_fields(item, _INPUT_FIELDS, where)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"{where}: 'name' must be a non-empty string")
        where = f"input {name!r}"
        if name in inputs:
            raise ProtocolError(f"{where} appears twice")
        shape = check_shape(item.get("shape"), where)
        datatype = item.get("datatype")
        check_datatype(datatype, where)
        assert isinstance(datatype, str)
        iparams = _object(item.get("parameters"), f"{where}: 'parameters'")
        size = iparams.get("binary_data_size")
        ref = shm_ref(iparams, where)
        if ref is not None:
            if size is not None or "data" in item:
                raise ProtocolError(f"{where}: an input in shared memory must not have 'data' or binary data")
            if shm is None:
                raise no_shared_memory(where)
            inputs[name] = shm.read(ref, datatype, shape, where)
        elif size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer")
            if offset + size > len(view):
                raise ProtocolError(
                    f"{where}: binary_data_size {size} runs past the binary data "
                    f"({len(view) - offset} bytes left)"
                )
            inputs[name] = tensor_from_bytes(datatype, shape, view[offset : offset + size], where)
            offset += size
        else:
            if "data" not in item:
                raise ProtocolError(f"{where}: neither 'data' nor parameters.binary_data_size given")
            inputs[name] = tensor_from_json(datatype, shape, item["data"], where)
    if offset != len(view):
        raise ProtocolError(f"{len(view) - offset} bytes of binary data left over after the inputs")
    binary_default = _param_bool(params, "binary_data_output", "parameters")
    outputs: list[RequestedOutput] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise ProtocolError("'outputs' must be a list")
        outputs = []
        for i, item in enumerate(raw_outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ProtocolError(f"outputs[{i}] must be an object with a 'name'")
            _known_fields(item, _OUTPUT_FIELDS, f"outputs[{i}]")
            oparams = _object(item.get("parameters"), f"outputs[{i}]: 'parameters'")
            where = f"output {item['name']!r}"
            if any(o.name == item["name"] for o in outputs):
                raise ProtocolError(f"{where} is asked for twice")
            binary = _param_bool(oparams, "binary_data", where, binary_default)
            ref = shm_ref(oparams, where)
            if ref is not None:
                if shm is None:
                    raise no_shared_memory(where)
                shm.check_output(ref, where)
            outputs.append(RequestedOutput(item["name"], binary, ref, class_count(oparams, ref, where)))
    return InferRequest(rid, inputs, outputs, params, binary_default)


def encode_http_infer(
    model: str,
    version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
    order: Sequence[str],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when binary tensors follow it (else None)."""
    wanted = request.outputs or [RequestedOutput(name, request.binary_output) for name in order]
    entries = []
    blobs = []
    for out in wanted:
        arr = outputs[out.name]
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": datatype_of(arr.dtype),
            "shape": list(arr.shape),
        }
        if out.shm is not None:  # written into shared memory already: no data here
            entry["parameters"] = out.shm.parameters()
        elif out.binary:
            blob = tensor_to_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor_to_json_data(arr)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


# -- checks against the model ------------------------------------------------------------------


def check_inputs(
    inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], max_batch_size: int
) -> dict[str, np.ndarray]:
    """The inputs in the model's order, after checking names, datatypes and shapes.

    For a batching model (``max_batch_size > 0``) every input carries the batch dimension first;
    all inputs have the same number of rows, at most ``max_batch_size``.
    """
    known = {s.name for s in specs}
    missing = [s.name for s in specs if s.name not in inputs]
    unknown = [n for n in inputs if n not in known]
    if missing or unknown:
        said = [
            f"{what} input(s) {names}"
            for what, names in (("missing", missing), ("unknown", unknown))
            if names
        ]
        raise ProtocolError(f"{'; '.join(said)}; the model takes {[s.name for s in specs]}")
    out = {}
    for spec in specs:
        arr = inputs[spec.name]
        got = datatype_of(arr.dtype)
        if got != spec.datatype:
            raise ProtocolError(f"input {spec.name!r}: datatype {got}, but the model takes {spec.datatype}")
        shape = tuple(arr.shape)
        if not spec.accepts(shape):
            raise ProtocolError(
                f"input {spec.name!r}: shape {list(shape)} does not match the model's {list(spec.shape)}"
            )
        if max_batch_size > 0 and not 1 <= shape[0] <= max_batch_size:
            raise ProtocolError(
                f"input {spec.name!r}: batch dimension {shape[0]} is outside "
                f"1..max_batch_size={max_batch_size}"
            )
        out[spec.name] = arr
    if max_batch_size > 0:
        rows = {name: int(arr.shape[0]) for name, arr in out.items()}
        if len(set(rows.values())) > 1:
            raise ProtocolError(f"inputs have different batch dimensions: {rows}")
    _check_shared_dimensions(out, specs)
    return out


def _check_shared_dimensions(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Inputs whose dimensions the model names alike (``sequence`` of ``input_ids`` and
    ``attention_mask``) must have them of one size: ONNX Runtime would fail on them, or, batched
    with padding, run them as if they agreed."""
    seen: dict[str, tuple[str, int]] = {}
    for spec in specs:
        for axis, symbol in enumerate(spec.symbols):
            if symbol is None:
                continue
            size = int(inputs[spec.name].shape[axis])
            first = seen.setdefault(symbol, (spec.name, size))
            if first[1] != size:
                raise ProtocolError(
                    f"inputs {first[0]!r} and {spec.name!r} differ in the model's dimension {symbol!r}: "
                    f"{first[1]} and {size}"
                )
