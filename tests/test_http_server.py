"""The HTTP/1.1 stack's connection timeouts, driven by its periodic sweep: an idle keep-alive
connection is closed, a client that never finishes its request gets 408, and a request the
handler is still working on is never timed out under it (a request begun behind it gets its full
time once the handler is done)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from sloserve.runtime.http_api import HttpResponse
from sloserve.runtime.http_server import HttpServer

REQUEST = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


async def _handler(method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
    if url == "/slow":
        await asyncio.sleep(0.8)  # longer than both timeouts below
    return HttpResponse(200, url.encode(), "text/plain")


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def _scenario() -> dict[str, object]:
    server = HttpServer(_handler, max_body_bytes=1024, request_timeout=0.3, keepalive_timeout=0.3)
    port = await server.start("127.0.0.1", 0)
    out: dict[str, object] = {"sweep_interval": server.sweep_interval}
    try:
        # idle after one answered request: closed once the keep-alive timeout has passed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        out["first"] = await _read_response(reader)
        started = time.monotonic()
        out["idle_eof"] = await asyncio.wait_for(reader.read(), timeout=5)
        out["idle_closed_after"] = time.monotonic() - started
        writer.close()

        # a request that never completes: 408, then the connection closes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        out["partial"] = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()

        # a handler slower than both timeouts: answered, and the connection still serves after
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        out["slow"] = await asyncio.wait_for(_read_response(reader), timeout=5)
        writer.write(REQUEST)
        out["after_slow"] = await asyncio.wait_for(_read_response(reader), timeout=5)
        writer.close()

        # a slow request, then the start of another that never completes: the first is answered,
        # the second gets 408 once the handler is done and the client's own time has passed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\n")
        out["pipelined_slow"] = await asyncio.wait_for(_read_response(reader), timeout=5)
        out["pipelined_partial"] = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
    finally:
        await server.stop()
    return out


def test_timeouts_fire_from_the_sweep_and_spare_busy_connections() -> None:
    out = asyncio.run(_scenario())
    assert out["sweep_interval"] == 0.3 / 4
    assert isinstance(out["first"], bytes) and out["first"].startswith(b"HTTP/1.1 200")
    assert out["idle_eof"] == b""  # the server closed the idle connection
    idle = out["idle_closed_after"]
    assert isinstance(idle, float) and 0.2 < idle < 3.0
    assert isinstance(out["partial"], bytes)
    assert out["partial"].startswith(b"HTTP/1.1 408") and b"not received within" in out["partial"]
    assert isinstance(out["slow"], bytes) and out["slow"].startswith(b"HTTP/1.1 200")
    assert out["slow"].endswith(b"/slow")
    assert isinstance(out["after_slow"], bytes) and out["after_slow"].endswith(b"/ping")
    assert isinstance(out["pipelined_slow"], bytes) and out["pipelined_slow"].endswith(b"/slow")
    partial = out["pipelined_partial"]
    assert isinstance(partial, bytes) and partial.startswith(b"HTTP/1.1 408")
