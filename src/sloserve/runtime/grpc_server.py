"""The gRPC front end: ``inference.GRPCInferenceService`` on ``grpc.aio``, with the stubs
``tritonclient`` ships (``tritonclient.grpc.service_pb2[_grpc]``).

Methods: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer (typed
``contents`` or ``raw_input_contents``; answers with ``raw_output_contents``), ModelConfig,
ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload. Documents are the
same JSON the HTTP front end returns, parsed into the protobufs. A deadline budget may also come as
metadata ``x-slo-timeout-ms``.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sloserve.core.config import ConfigError
from sloserve.runtime.backend import datatype_of
from sloserve.runtime.codec import (
    InferRequest,
    ProtocolError,
    RequestedOutput,
    check_datatype,
    tensor_from_bytes,
    tensor_to_bytes,
)
from sloserve.runtime.server import TIMEOUT_HEADER, InferenceServer

log = logging.getLogger("sloserve.runtime")

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
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


def decode_grpc_infer(request: Any) -> InferRequest:
    """An :class:`InferRequest` from a ``ModelInferRequest`` (typed contents or raw contents)."""
    params = {k: _param(v) for k, v in request.parameters.items()}
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    if not request.inputs:
        raise ProtocolError("the request has no inputs")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        where = f"input {tensor.name!r}"
        if tensor.name in inputs:
            raise ProtocolError(f"{where} appears twice")
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            raise ProtocolError(f"{where}: shape {list(shape)} has a negative dimension")
        dtype = check_datatype(tensor.datatype, where)
        if raw:
            inputs[tensor.name] = tensor_from_bytes(tensor.datatype, shape, raw[i], where)
            continue
        field = _CONTENTS.get(tensor.datatype)
        if field is None:
            raise ProtocolError(f"{where}: {tensor.datatype} data must come in raw_input_contents")
        values = list(getattr(tensor.contents, field))
        count = int(np.prod(shape)) if shape else 1
        if len(values) != count:
            raise ProtocolError(
                f"{where}: {len(values)} values in contents but shape {list(shape)} needs {count}"
            )
        if tensor.datatype == "BYTES":
            arr = np.empty(count, dtype=object)
            arr[:] = values
        else:
            arr = np.asarray(values, dtype=dtype)
        inputs[tensor.name] = arr.reshape(shape)
    outputs = [RequestedOutput(o.name, True) for o in request.outputs] or None
    return InferRequest(request.id or None, inputs, outputs, params, True)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Implements the service over an :class:`InferenceServer`."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def _fail(self, context: Any, exc: Exception) -> None:
        if isinstance(exc, ProtocolError):
            await context.abort(_CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
        if isinstance(exc, ConfigError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.exception("internal error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

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
            index = self.server.repository.index()
        except Exception as exc:
            await self._fail(context, exc)
        models = [pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index]
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            await self.server.repository.load(request.model_name)
        except Exception as exc:
            await self._fail(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            await self.server.repository.unload(request.model_name)
        except Exception as exc:
            await self._fail(context, exc)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        name = request.model_name
        try:
            try:
                decoded = decode_grpc_infer(request)
            except ProtocolError:
                self.server.count_bad_request(name)
                raise
            header = None
            for key, value in context.invocation_metadata() or ():
                if key == TIMEOUT_HEADER:
                    header = value
            try:
                model, outputs = await self.server.infer(
                    name,
                    request.model_version or None,
                    decoded,
                    header_timeout_ms=header,
                    payload_bytes=request.ByteSize(),
                )
            except ProtocolError as exc:
                if exc.status == 400:
                    self.server.count_bad_request(name)
                raise
        except Exception as exc:
            await self._fail(context, exc)
        names = [o.name for o in decoded.outputs] if decoded.outputs else [s.name for s in model.outputs]
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for out_name in names:
            arr = outputs[out_name]
            response.outputs.add(name=out_name, datatype=datatype_of(arr.dtype), shape=list(arr.shape))
            response.raw_output_contents.append(tensor_to_bytes(arr))
        return response


class GrpcServer:
    """``grpc.aio`` server for the service on ``host:port``."""

    def __init__(self, server: InferenceServer, *, max_message_bytes: int) -> None:
        self.server = server
        self.max_message_bytes = max_message_bytes
        self._grpc: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._grpc = grpc.aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.server), self._grpc)
        bound = self._grpc.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        await self._grpc.start()
        return int(bound)

    async def stop(self, grace: float = 5.0) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace)
