"""The gRPC front end: ``inference.GRPCInferenceService`` on ``grpc.aio``, with the stubs
``tritonclient`` ships (``tritonclient.grpc.service_pb2[_grpc]``).

Methods: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (typed
``contents`` or ``raw_input_contents``; answers with ``raw_output_contents``), ModelStreamInfer
(Triton's bidirectional stream of the same requests: each is scheduled as it is read, with its
deadline counted from then, and answered when it ends, in the order they end; a refusal is a
response with ``error_message`` and the request's ``id``, and the stream goes on; at most
:data:`STREAM_WINDOW` of a stream's requests are read and not yet answered, so a client that does
not read its answers is held back by gRPC's flow control), ModelConfig,
ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload, and Triton's system
shared-memory extension: SystemSharedMemoryStatus, SystemSharedMemoryRegister,
SystemSharedMemoryUnregister (the same registry as the HTTP routes; inputs and outputs name regions
with the ``shared_memory_*`` parameters, see :mod:`sloserve.runtime.shared_memory`). Documents are the
same JSON the HTTP front end returns, parsed into the protobufs. A deadline budget may also come as
metadata ``x-slo-timeout-ms``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sloserve.core.config import ConfigError
from sloserve.runtime import log_settings
from sloserve.runtime.backend import datatype_of
from sloserve.runtime.clock import RECEIVED, seconds_since_received
from sloserve.runtime.codec import (
    InferRequest,
    ProtocolError,
    RequestedOutput,
    check_datatype,
    check_shape,
    class_count,
    no_shared_memory,
    shm_ref,
    tensor_from_bytes,
    tensor_to_bytes,
)
from sloserve.runtime.repository import check_repository_parameters
from sloserve.runtime.server import TIMEOUT_HEADER, InferenceServer
from sloserve.runtime.shared_memory import SystemSharedMemory

log = logging.getLogger("sloserve.runtime")

_MAX_SEND_BYTES = 2**31 - 1
"""gRPC's largest message: what an answer may be (the request limit is ``--max-body-mb``)."""

STREAM_WINDOW = 32
"""Requests of one ModelStreamInfer stream read but whose answer has not yet been sent (as many as
an HTTP connection's pipeline holds before it stops reading). The stream's next request is read only
once an answer has been handed to gRPC: a client that stops reading its answers stalls the server's
sends (HTTP/2 flow control), then its own sends, instead of having answers pile up in the server."""


_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _param(value: Any) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind is not None else None


def _params(message: Any) -> dict[str, Any]:
    return {k: _param(v) for k, v in message.parameters.items()}


def decode_grpc_infer(request: Any, shm: SystemSharedMemory | None = None) -> InferRequest:
    """An :class:`InferRequest` from a ``ModelInferRequest`` (typed contents or raw contents).

    Inputs in shared memory (``shared_memory_*`` parameters naming a region of ``shm``) have no
    entry in ``raw_input_contents``; the other inputs' raw contents are in order.
    """
    params = _params(request)
    if not request.inputs:
        raise ProtocolError("the request has no inputs")
    refs = [shm_ref(_params(t), f"input {t.name!r}") for t in request.inputs]
    raw = request.raw_input_contents
    in_band = sum(ref is None for ref in refs)
    if raw and len(raw) != in_band:
        raise ProtocolError(f"{len(raw)} raw_input_contents for {in_band} inputs not in shared memory")
    inputs: dict[str, np.ndarray] = {}
    next_raw = 0
    for tensor, ref in zip(request.inputs, refs, strict=True):
        where = f"input {tensor.name!r}"
        if tensor.name in inputs:
            raise ProtocolError(f"{where} appears twice")
        shape = check_shape(tuple(int(d) for d in tensor.shape), where)
        dtype = check_datatype(tensor.datatype, where)
        if ref is not None:
            if tensor.HasField("contents"):
                raise ProtocolError(f"{where}: an input in shared memory must not have contents")
            if shm is None:
                raise no_shared_memory(where)
            inputs[tensor.name] = shm.read(ref, tensor.datatype, shape, where)
            continue
        given = [f.name for f, _ in tensor.contents.ListFields()]
        if raw:
            if given:
                raise ProtocolError(f"{where}: has both contents ({given[0]}) and raw_input_contents")
            inputs[tensor.name] = tensor_from_bytes(tensor.datatype, shape, raw[next_raw], where)
            next_raw += 1
            continue
        field = _CONTENTS.get(tensor.datatype)
        if field is None:
            raise ProtocolError(f"{where}: {tensor.datatype} data must come in raw_input_contents")
        stray = [name for name in given if name != field]
        if stray:
            raise ProtocolError(f"{where}: {stray[0]} given for a {tensor.datatype} input (it takes {field})")
        values = list(getattr(tensor.contents, field))
        count = math.prod(shape)
        if len(values) != count:
            raise ProtocolError(
                f"{where}: {len(values)} values in contents but shape {list(shape)} needs {count}"
            )
        if tensor.datatype == "BYTES":
            arr = np.empty(count, dtype=object)
            arr[:] = values
        else:
            try:  # int_contents carries INT8/INT16 too: a value out of the type's range is refused
                arr = np.asarray(values, dtype=dtype)
            except OverflowError as exc:
                raise ProtocolError(f"{where}: {tensor.datatype} contents: {exc}") from None
        inputs[tensor.name] = arr.reshape(shape)
    outputs: list[RequestedOutput] = []
    for o in request.outputs:
        where = f"output {o.name!r}"
        if any(out.name == o.name for out in outputs):
            raise ProtocolError(f"{where} is asked for twice")
        output_params = _params(o)  # the output's own: they never stand for the request's
        ref = shm_ref(output_params, where)
        if ref is not None:
            if shm is None:
                raise no_shared_memory(where)
            shm.check_output(ref, where)
        outputs.append(RequestedOutput(o.name, True, ref, class_count(output_params, ref, where)))
    return InferRequest(request.id or None, inputs, outputs or None, params, True)


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message a call (or a stream's response) ends with for ``exc``."""
    if isinstance(exc, ProtocolError):
        if exc.grpc_code:
            return grpc.StatusCode[exc.grpc_code], exc.message
        return _CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message
    if isinstance(exc, ConfigError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.error("internal error in a gRPC call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _timeout_header(context: Any) -> str | None:
    """The call's ``x-slo-timeout-ms`` metadata, if sent."""
    for key, value in context.invocation_metadata() or ():
        if key == TIMEOUT_HEADER:
            return str(value)
    return None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Implements the service over an :class:`InferenceServer`."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def _fail(self, context: Any, exc: Exception) -> None:
        """Ends a unary call with the status and message of ``exc`` (never returns)."""
        code, message = _status_of(exc)
        await context.abort(code, message)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.server.live)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.server.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.server.model_ready(request.name, request.version or None))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self.server.server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            doc = self.server.model_metadata(request.name, request.version or None)
        except Exception as exc:
            await self._fail(context, exc)
        return json_format.ParseDict(doc, pb.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            doc = self.server.model_config(request.name, request.version or None)
        except Exception as exc:
            await self._fail(context, exc)
        return json_format.ParseDict({"config": doc}, pb.ModelConfigResponse(), ignore_unknown_fields=True)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        try:
            doc = self.server.model_stats(request.name or None, request.version or None)
        except Exception as exc:
            await self._fail(context, exc)
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        try:
            index = self.server.repository.index(ready_only=request.ready)
        except Exception as exc:
            await self._fail(context, exc)
        models = [pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            check_repository_parameters(_params(request), "load")
            await self.server.repository.load(request.model_name)
        except Exception as exc:
            await self._fail(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            check_repository_parameters(_params(request), "unload")
            await self.server.repository.unload(request.model_name)
        except Exception as exc:
            await self._fail(context, exc)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            return await self._answer(request, _timeout_header(context))
        except Exception as exc:
            await self._fail(context, exc)

    async def ModelStreamInfer(self, requests: AsyncIterable[Any], context: Any) -> AsyncIterator[Any]:
        """Answers each request of the stream as it ends (see the module docstring); the stream ends
        once the client has closed its side and every request read has been answered. The next
        request is read only while fewer than :data:`STREAM_WINDOW` read have no answer sent."""
        header = _timeout_header(context)
        answers: asyncio.Queue[Any] = asyncio.Queue()  # holds at most STREAM_WINDOW answers
        window = asyncio.Semaphore(STREAM_WINDOW)  # taken to read a request, given back once sent
        running: set[asyncio.Task[None]] = set()

        async def one(request: Any, received: float) -> None:
            RECEIVED.set(received)  # in this task's own context: its budget counts from its reading
            try:
                answer = await self._answer(request, header)
                response = pb.ModelStreamInferResponse(infer_response=answer)
            except Exception as exc:
                _, message = _status_of(exc)
                refused = pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version, id=request.id
                )
                response = pb.ModelStreamInferResponse(error_message=message, infer_response=refused)
            answers.put_nowait(response)

        async def read() -> None:
            try:
                incoming = aiter(requests)
                while True:
                    await window.acquire()  # before reading: a full window leaves it with gRPC
                    try:
                        request = await anext(incoming)
                    except StopAsyncIteration:
                        break
                    task = asyncio.create_task(one(request, time.monotonic()))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.wait(set(running))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await answers.get()) is not None:
                yield response  # returns once gRPC has taken it (flow control permitting)
                window.release()
            await reader  # a failed read of the stream ends the call with its error
        finally:  # all answered, or the client went away: nothing is left to answer
            for task in (reader, *running):
                task.cancel()

    async def _answer(self, request: Any, header: str | None) -> Any:
        """Runs one ``ModelInferRequest``; raises what refuses it. Its deadline budget counts from
        when it was received (:data:`~sloserve.runtime.clock.RECEIVED`), decoding included."""
        name = request.model_name
        self.server.model(name, request.model_version or None)  # 404 before decoding for no model
        try:
            decoded = decode_grpc_infer(request, self.server.shared_memory)
        except ProtocolError:
            self.server.count_bad_request(name)
            raise
        try:
            model, outputs = await self.server.infer(
                name,
                request.model_version or None,
                decoded,
                header_timeout_ms=header,
                payload_bytes=request.ByteSize(),
                waited=seconds_since_received(),
            )
        except ProtocolError as exc:
            if exc.status == 400 and not exc.counted:
                self.server.count_bad_request(name)
            raise
        wanted = decoded.outputs or [RequestedOutput(s.name, True) for s in model.outputs]
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        # outputs in shared memory come last, without raw contents: tritonclient finds an output's
        # raw contents by its position among the outputs, so those with contents must come first
        for out in [o for o in wanted if o.shm is None] + [o for o in wanted if o.shm is not None]:
            arr = outputs[out.name]
            tensor = response.outputs.add(
                name=out.name, datatype=datatype_of(arr.dtype), shape=list(arr.shape)
            )
            if out.shm is None:
                response.raw_output_contents.append(tensor_to_bytes(arr))
                continue
            for key, value in out.shm.parameters().items():
                if isinstance(value, str):
                    tensor.parameters[key].string_param = value
                else:
                    tensor.parameters[key].int64_param = value
        return response

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        try:
            regions = self.server.shared_memory.status(request.name or None)
        except Exception as exc:
            await self._fail(context, exc)
        response = pb.SystemSharedMemoryStatusResponse()
        for region in regions:
            response.regions[region["name"]].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(**region)
            )
        return response

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        try:
            self.server.shared_memory.register(
                request.name, request.key, int(request.offset), int(request.byte_size)
            )
        except Exception as exc:
            await self._fail(context, exc)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        try:
            self.server.shared_memory.unregister(request.name or None)
        except Exception as exc:
            await self._fail(context, exc)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def LogSettings(self, request: Any, context: Any) -> Any:
        changes = {}
        for name, value in request.settings.items():
            kind = value.WhichOneof("parameter_choice")
            if kind is not None:  # a setting named without a value is left as it is
                changes[name] = getattr(value, kind)
        try:
            doc = log_settings.update(changes)
        except Exception as exc:
            await self._fail(context, exc)
        response = pb.LogSettingsResponse()
        for name, setting in doc.items():
            kind = {bool: "bool_param", int: "uint32_param", str: "string_param"}[type(setting)]
            setattr(response.settings[name], kind, setting)
        return response


_STOP_QUIET_S = 0.1
"""At stop: how long no new call may have been handed to a handler before gRPC is shut down."""
_STOP_HOLD_S = 0.5
"""At stop: the longest the wait for that quiet may take (at most half the grace period)."""


class ArrivalStamp(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """Notes when a call reached the server, before its message is read and decoded (in the call's
    own task, so its handler sees it): its deadline budget counts from then, as over HTTP from the
    first byte.

    Also what :meth:`GrpcServer.stop` needs: when the last call was handed over (:attr:`last`), and,
    while the server stops (:attr:`holding`), holds each call that arrives until :attr:`released`
    is set, once gRPC has sent its GOAWAY."""

    def __init__(self) -> None:
        self.last = -math.inf
        self.holding = False
        self.released = asyncio.Event()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        RECEIVED.set(now := time.monotonic())
        self.last = now
        if self.holding:  # the server is stopping: its refusal ("shutting down") waits for GOAWAY
            await self.released.wait()
        return await continuation(handler_call_details)


class GrpcServer:
    """``grpc.aio`` server for the service on ``host:port``."""

    def __init__(self, server: InferenceServer, *, max_message_bytes: int) -> None:
        self.server = server
        self.max_message_bytes = max_message_bytes
        self._grpc: grpc.aio.Server | None = None
        self._arrivals = ArrivalStamp()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            # answers are not capped by the request limit (Triton's is INT32_MAX too): one larger
            # than that would have run, been counted answered and then failed in the send
            ("grpc.max_send_message_length", _MAX_SEND_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        self._grpc = grpc.aio.server(options=options, interceptors=[self._arrivals])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.server), self._grpc)
        try:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address
            bound = self._grpc.add_insecure_port(address)
        except RuntimeError:  # grpc's "Failed to bind": in use, or no such address
            bound = 0
        if bound == 0:
            raise OSError("the address is in use or not this machine's")
        await self._grpc.start()
        return int(bound)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening; calls in progress get ``grace`` seconds, then are cancelled.

        Called once the core is draining or stopped, so that every call a handler gets is refused
        with UNAVAILABLE "the server is shutting down". gRPC's C core ends a call it has not yet
        handed to a handler when it shuts down with CANCELLED and no reason (it "zombifies" its
        pending calls), so first the calls that reach the server are held until none has come for
        :data:`_STOP_QUIET_S` (at most :data:`_STOP_HOLD_S`): what the core had queued reaches a
        handler, and the clients, waiting on held calls, send no more. The held calls are let go
        once gRPC has sent its GOAWAY, so a client that tries again opens a new connection (refused)
        rather than landing a call on this one as it closes. A call that still lands between the
        quiet and the GOAWAY ends CANCELLED: grpc.aio offers no way to send GOAWAY before that."""
        if self._grpc is None:
            return
        arrivals = self._arrivals
        arrivals.holding = True
        start = time.monotonic()
        give_up = start + min(_STOP_HOLD_S, grace / 2)
        while (now := time.monotonic()) < give_up:
            quiet_from = max(arrivals.last, start) + _STOP_QUIET_S
            if now >= quiet_from:
                break
            await asyncio.sleep(min(quiet_from, give_up) - now)
        stopping = asyncio.ensure_future(self._grpc.stop(grace))
        await asyncio.sleep(0)  # its first step shuts the C core down, which sends the GOAWAY
        arrivals.released.set()
        await stopping
