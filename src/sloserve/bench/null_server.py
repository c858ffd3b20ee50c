"""A server that answers every Open Inference Protocol request at once, without running anything.

The load generator measures its own ceiling against it: the requests per second it can send and
get answered when the server costs nothing, so a result limited by the client is never mistaken
for the server's. HTTP is served by a bare asyncio protocol (a keep-alive HTTP/1.1 responder that
reads ``Content-Length`` bodies); gRPC by grpc.aio with the stubs tritonclient ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

DEFAULT_METADATA: dict[str, Any] = {
    "name": "null",
    "versions": ["1"],
    "platform": "null",
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}],
}
"""What the null server says about every model unless given a real model's metadata (whose inputs
the client then sends, so that its ceiling is measured with the real payload size)."""
_INFER = json.dumps({"model_name": "null", "outputs": []}).encode()


def _response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


class _NullHttp(asyncio.Protocol):
    """Answers GET with the metadata document and POST with an empty inference response."""

    def __init__(self, meta: bytes) -> None:
        self._meta = meta
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self._buf) < end + 4 + length:
                return
            del self._buf[: end + 4 + length]
            assert self._transport is not None
            self._transport.write(_response(self._meta if head.startswith("GET") else _INFER))


async def start_null_http(
    host: str = "127.0.0.1", port: int = 0, metadata: dict[str, Any] | None = None
) -> tuple[asyncio.AbstractServer, int]:
    """Start the null HTTP server; returns it and its port."""
    meta = json.dumps(metadata or DEFAULT_METADATA).encode()
    server = await asyncio.get_running_loop().create_server(lambda: _NullHttp(meta), host, port)
    return server, server.sockets[0].getsockname()[1]


async def start_null_grpc(
    host: str = "127.0.0.1", port: int = 0, metadata: dict[str, Any] | None = None
) -> tuple[Any, int]:
    """Start the null gRPC server; returns it and its port."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    doc = metadata or DEFAULT_METADATA

    class _Null(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            meta = service_pb2.ModelMetadataResponse(name=request.name, versions=["1"], platform="null")
            for kind in ("inputs", "outputs"):
                for spec in doc[kind]:
                    t = getattr(meta, kind).add()
                    t.name, t.datatype = spec["name"], spec["datatype"]
                    t.shape.extend(spec["shape"])
            return meta

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return service_pb2.ModelInferResponse(model_name=request.model_name)

    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Null(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def _serve_forever(http_port: int, grpc_port: int, metadata: dict[str, Any] | None) -> None:
    http, hp = await start_null_http(port=http_port, metadata=metadata)
    grpc_server, gp = await start_null_grpc(port=grpc_port, metadata=metadata)
    print(json.dumps({"http_port": hp, "grpc_port": gp}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        http.close()
        await grpc_server.stop(None)


def main() -> None:
    """``python -m sloserve.bench.null_server``: serve until killed; prints the ports as JSON."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument(
        "--metadata", type=json.loads, default=None, help="model metadata (JSON) to answer with"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.http_port, args.grpc_port, args.metadata))


if __name__ == "__main__":
    main()
