"""Clients for one Open Inference Protocol endpoint, HTTP or gRPC, used by the load generator.

A target knows one model: it reads the model's metadata once, builds its requests from a
:class:`~sloserve.bench.payload.Payload` (rows per request, the sizes of variable dimensions, and
random, zero or a file's values), and sends them in turn, each with a per-request deadline as the
``timeout`` parameter (microseconds, as Triton's clients send it). It reports each request's
outcome, never raising for a refusal or a transport error: the load generator counts those as misses.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from sloserve.bench.http_client import HttpAnswer, HttpClient, HttpClientError
from sloserve.bench.payload import ONE_ROW, Payload, TensorSpec, make_requests


class TargetError(ValueError):
    """The endpoint cannot be used: unreachable, no such model, or a refused shared-memory
    registration. Raised by :meth:`Target.start`, before any request is sent (as is a
    :class:`~sloserve.bench.payload.PayloadError` for a payload the model cannot take)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one request."""

    ok: bool
    """True when the server answered with outputs."""
    status: int
    """HTTP status, or the gRPC status code's value (0 = OK); -1 for a transport error."""
    reason: str
    """Empty on success; else the server's error message or the transport error."""


class Target(Protocol):
    """An endpoint serving one model."""

    async def start(self) -> None:
        """Called once before sending: connects and fetches metadata; :class:`TargetError` when
        the endpoint cannot be used."""
        ...

    async def send(self, timeout_us: int | None, priority: int = 0) -> SendResult:
        """Sends one inference request; never raises for refusals or transport errors."""
        ...

    async def close(self) -> None:
        """Called once at the end."""
        ...


def specs_from_metadata(meta: Any) -> list[TensorSpec]:
    """Input specs from a v2 model-metadata JSON document (:class:`TargetError` if it has none
    usable)."""
    inputs = meta.get("inputs") if isinstance(meta, dict) else None
    outputs = meta.get("outputs", []) if isinstance(meta, dict) else None
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise TargetError("the model's metadata is not an object with 'inputs' and 'outputs' lists")
    if not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise TargetError("the model's metadata has an output without a name")
    specs = []
    for i in inputs:
        ok = isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("datatype"), str)
        shape = i.get("shape") if ok else None
        if not ok or not isinstance(shape, list) or not all(type(d) is int for d in shape):
            raise TargetError(
                f"the model's metadata has an input that is not {{name, datatype, shape}}: {i!r}"
            )
        specs.append(TensorSpec(i["name"], i["datatype"], tuple(shape)))
    return specs


def _answer_of(payload: bytes, header_length: str | None) -> SendResult:
    """A 200 is an answer only when its body is an inference response (a JSON object with
    ``outputs``, its binary tensors after it): a server can say 200 over garbage."""
    try:
        n = int(header_length) if header_length is not None else len(payload)
        doc = json.loads(payload[:n])
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("outputs"), list) and "error" not in doc:
        return SendResult(True, 200, "")
    return SendResult(False, 200, f"a 200 whose body is no inference response: {payload[:80]!r}")


class HttpTarget:
    """Open Inference Protocol over HTTP/REST with the binary tensor extension
    (:class:`~sloserve.bench.http_client.HttpClient`).

    With ``shared_memory`` the inputs are not sent: the payload is written once into a POSIX
    shared-memory object, registered with the server as a system shared-memory region, and every
    request names that region (Triton's system shared-memory extension, for a client on the same
    host); the outputs still come back in the response. The region is unregistered and the object
    removed at :meth:`close`.
    """

    CONTROL_TIMEOUT = 30.0
    """Seconds the metadata and shared-memory requests may take (inference requests have no limit
    of their own: the load generator ends what is unanswered at the end of its run)."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        payload: Payload = ONE_ROW,
        connections: int = 256,
        seed: int = 0,
        shared_memory: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self.model = model
        self.payload = payload
        self.connections = connections
        self.seed = seed
        self._client: HttpClient | None = None
        self._prefix = ""
        self._infer_path = ""
        self._requests: list[tuple[dict[str, Any], bytes]] = []
        """Each distinct request's JSON header and the tensors after it, sent in turn."""
        self._turn = 0
        self.shared_memory = shared_memory
        self._shm: SharedMemory | None = None

    async def start(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname:
            raise TargetError(f"{self.url}: only http://host:port endpoints are supported")
        try:
            port = parts.port or 80
        except ValueError as exc:
            raise TargetError(f"{self.url}: {exc}") from None
        self._client = HttpClient(parts.hostname, port, limit=self.connections)
        self._prefix = parts.path.rstrip("/")
        self._infer_path = f"{self._prefix}/v2/models/{self.model}/infer"
        where = f"{self.url}: model {self.model!r} metadata"
        try:
            answer = await self._control("GET", f"/v2/models/{self.model}")
        except HttpClientError as exc:
            raise TargetError(f"{where}: {exc}") from None
        if answer.status != 200:
            raise TargetError(f"{where}: HTTP {answer.status}: {answer.body.decode(errors='replace')}")
        try:
            meta = json.loads(answer.body)
        except ValueError as exc:
            raise TargetError(f"{where}: {exc}") from None
        requests = make_requests(specs_from_metadata(meta), self.payload, self.seed)
        tensors = [arr for request in requests for _, arr in request]
        if self.shared_memory:  # every distinct request's tensors in one region, one after another
            region = b"".join(arr.tobytes() for arr in tensors)
            params = await self._register_region(region, [arr.nbytes for arr in tensors])
        else:
            params = [{"binary_data_size": arr.nbytes} for arr in tensors]
        outputs = [{"name": o["name"], "parameters": {"binary_data": True}} for o in meta.get("outputs", [])]
        first = 0  # the first request's tensors come first in ``params``, then the second's, ...
        for request in requests:
            mine, first = params[first : first + len(request)], first + len(request)
            header = {
                "inputs": [
                    {"name": s.name, "shape": list(s.shape), "datatype": s.datatype, "parameters": p}
                    for (s, _), p in zip(request, mine, strict=True)
                ],
                "outputs": outputs,
            }
            raw = b"" if self.shared_memory else b"".join(arr.tobytes() for _, arr in request)
            self._requests.append((header, raw))

    async def _control(self, method: str, path: str, doc: Any = None) -> HttpAnswer:
        """A request of the set-up or clean-up (JSON ``doc`` as its body when given)."""
        assert self._client is not None
        body = [json.dumps(doc).encode()] if doc is not None else []
        headers = [("Content-Type", "application/json")] if doc is not None else []
        return await self._client.request(
            method, self._prefix + path, body, headers, timeout=self.CONTROL_TIMEOUT
        )

    async def _register_region(self, raw: bytes, sizes: list[int]) -> list[dict[str, Any]]:
        """Put ``raw`` in a new shared-memory object, register it; each input's parameters. The
        object is removed by :meth:`close` even when the registration fails."""
        self._shm = SharedMemory(create=True, size=max(1, len(raw)))
        view = self._shm.buf
        assert view is not None
        view[: len(raw)] = raw
        region = self._shm.name.lstrip("/")
        body = {"key": "/" + region, "offset": 0, "byte_size": max(1, len(raw))}  # as the object: >= 1 byte
        try:
            answer = await self._control("POST", f"/v2/systemsharedmemory/region/{region}/register", body)
        except HttpClientError as exc:
            raise TargetError(f"{self.url}: registering shared memory: {exc}") from None
        if answer.status != 200:
            raise TargetError(
                f"{self.url}: registering shared memory: HTTP {answer.status}: "
                f"{answer.body.decode(errors='replace')}"
            )
        offsets = np.cumsum([0, *sizes[:-1]])
        return [
            {"shared_memory_region": region, "shared_memory_byte_size": n, "shared_memory_offset": int(o)}
            for n, o in zip(sizes, offsets, strict=True)
        ]

    def _encode(self, timeout_us: int | None, priority: int) -> tuple[bytes, bytes]:
        """The next request's JSON header and the tensors that follow it (none with shared memory)."""
        fixed, raw = self._requests[self._turn % len(self._requests)]
        self._turn += 1
        header = dict(fixed)
        params: dict[str, int] = {}
        if timeout_us is not None:
            params["timeout"] = int(timeout_us)
        if priority:
            params["priority"] = int(priority)
        if params:
            header["parameters"] = params
        return json.dumps(header, separators=(",", ":")).encode(), raw

    async def send(self, timeout_us: int | None, priority: int = 0) -> SendResult:
        assert self._client is not None, "start() first"
        head, raw = self._encode(timeout_us, priority)
        headers = (
            [("Content-Type", "application/json")]
            if self.shared_memory
            else [
                ("Inference-Header-Content-Length", str(len(head))),
                ("Content-Type", "application/octet-stream"),
            ]
        )
        try:
            answer = await self._client.request("POST", self._infer_path, [head, raw], headers)
        except Exception as exc:  # transport errors are outcomes, not crashes
            return SendResult(False, -1, f"{type(exc).__name__}: {exc}")
        return outcome_of(answer.status, answer.body, answer.headers.get("inference-header-content-length"))

    async def close(self) -> None:
        if self._shm is not None:
            region = self._shm.name.lstrip("/")
            with contextlib.suppress(Exception):  # the server may be gone; the object goes anyway
                await self._control("POST", f"/v2/systemsharedmemory/region/{region}/unregister")
            self._shm.close()
            self._shm.unlink()
            self._shm = None
        if self._client is not None:
            await self._client.close()


def outcome_of(status: int, payload: bytes, header_length: str | None) -> SendResult:
    """What an HTTP answer to an infer request means: an answer (a 200 carrying an inference
    response; ``header_length``: its Inference-Header-Content-Length) or a refusal with the
    server's reason."""
    if status == 200:
        return _answer_of(payload, header_length)
    return SendResult(False, status, _error_text(payload))


def _error_text(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("error", payload[:200].decode(errors="replace")))
    except (ValueError, AttributeError):
        return payload[:200].decode(errors="replace")


class GrpcTarget:
    """Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), raw input contents."""

    def __init__(self, url: str, model: str, *, payload: Payload = ONE_ROW, seed: int = 0) -> None:
        self.url = url.split("://")[-1]
        self.model = model
        self.payload = payload
        self.seed = seed
        self._channel: Any = None
        self._stub: Any = None
        self._requests: list[Any] = []
        """Each distinct request, sent in turn."""
        self._turn = 0

    async def start(self) -> None:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        self._channel = grpc.aio.insecure_channel(
            self.url, options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        )
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        try:
            meta = await self._stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=self.model))
        except grpc.aio.AioRpcError as exc:
            raise TargetError(
                f"{self.url}: model {self.model!r} metadata: {exc.code().name}: {exc.details()}"
            ) from None
        specs = [TensorSpec(i.name, i.datatype, tuple(i.shape)) for i in meta.inputs]
        for request in make_requests(specs, self.payload, self.seed):
            req = service_pb2.ModelInferRequest(model_name=self.model)
            for spec, arr in request:
                t = req.inputs.add()
                t.name, t.datatype = spec.name, spec.datatype
                t.shape.extend(spec.shape)
                req.raw_input_contents.append(arr.tobytes())
            for o in meta.outputs:
                req.outputs.add().name = o.name
            self._requests.append(req)

    async def send(self, timeout_us: int | None, priority: int = 0) -> SendResult:
        import grpc
        from tritonclient.grpc import service_pb2

        req = service_pb2.ModelInferRequest()
        req.CopyFrom(self._requests[self._turn % len(self._requests)])
        self._turn += 1
        if timeout_us is not None:
            req.parameters["timeout"].int64_param = int(timeout_us)
        if priority:
            req.parameters["priority"].int64_param = int(priority)
        try:
            await self._stub.ModelInfer(req)
            return SendResult(True, 0, "")
        except grpc.aio.AioRpcError as exc:
            return SendResult(False, exc.code().value[0], exc.details() or exc.code().name)
        except Exception as exc:
            return SendResult(False, -1, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
