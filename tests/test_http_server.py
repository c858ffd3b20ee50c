"""The HTTP/1.1 stack's connection timeouts, driven by its periodic sweep: an idle keep-alive
connection is closed, a client that never finishes its request gets 408, and a request the
handler is still working on is never timed out under it (a request begun behind it gets its full
time once the handler is done). And its limits on the request head: 414 for a long request target,
431 for long headers, even one header that never ends; heads within them are served."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

from sloserve.runtime.http_api import HttpResponse
from sloserve.runtime.http_server import MAX_HEAD_BYTES, MAX_URL_BYTES, HttpServer

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


async def _send_until_refused(port: int, parts: list[bytes]) -> bytes:
    """Send ``parts`` one write each, as far as the server lets; then what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
    except ConnectionError:
        pass  # the server answered and closed before the client was done
    try:
        return await asyncio.wait_for(reader.read(), timeout=5)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def _head_limits() -> dict[str, bytes]:
    server = HttpServer(_handler, max_body_bytes=1 << 20)
    port = await server.start("127.0.0.1", 0)
    big_value = b"a" * 8192
    try:
        return {
            "long_target": await _send_until_refused(
                port, [b"GET /" + b"x" * MAX_URL_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n"]
            ),
            "long_headers": await _send_until_refused(
                port,
                [b"GET /h HTTP/1.1\r\n"]
                + [b"X-%d: %s\r\n" % (i, big_value) for i in range(MAX_HEAD_BYTES // len(big_value) + 1)]
                + [b"\r\n"],
            ),
            # one header value that never ends, 4 MiB of it: refused while it is still arriving
            "endless_header": await _send_until_refused(
                port, [b"GET /h HTTP/1.1\r\nX-Endless: "] + [b"b" * 65536] * 64
            ),
            # within the limits, in many writes, and pipelined behind a body: served
            "within": await _send_until_refused(
                port,
                [b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"z" * 99990]
                + [b"z" * 10 + b"GET /second HTTP/1.1\r\nHost: x\r\n"]
                + [b"X-%d: %s\r\n" % (i, big_value) for i in range(MAX_HEAD_BYTES // len(big_value) - 1)]
                + [b"Connection: close\r\n\r\n"],
            ),
        }
    finally:
        await server.stop()


def test_request_heads_beyond_the_limits_are_refused() -> None:
    out = asyncio.run(_head_limits())
    assert out["long_target"].startswith(b"HTTP/1.1 414") and b"request target exceeds" in out["long_target"]
    assert out["long_headers"].startswith(b"HTTP/1.1 431") and b"headers exceed" in out["long_headers"]
    endless = out["endless_header"]
    assert endless.startswith(b"HTTP/1.1 431") or endless == b"", endless[:100]  # reset before read
    within = out["within"]
    assert within.startswith(b"HTTP/1.1 200") and within.endswith(b"/second"), within[:200]
    assert within.count(b"HTTP/1.1 200") == 2


async def _pipelined_then_refused() -> dict[str, bytes]:
    server = HttpServer(_handler, max_body_bytes=1024)
    port = await server.start("127.0.0.1", 0)
    out = {}
    try:
        for name, tail in [
            ("garbage", b"GARBAGE\r\n\r\n"),
            ("oversize", b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n"),
            ("long_target", b"GET /" + b"x" * (MAX_URL_BYTES + 1) + b" HTTP/1.1\r\n\r\n"),
        ]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + REQUEST + tail)
            out[name] = await asyncio.wait_for(reader.read(), timeout=5)
            writer.close()
    finally:
        await server.stop()
    return out


def test_a_refused_request_is_answered_after_those_before_it_on_the_connection() -> None:
    """Found by fuzzing: a malformed request behind good ones on one connection got its error
    written at once and the connection closed, and the good ones' answers were never sent."""
    out = asyncio.run(_pipelined_then_refused())
    for name, status in [("garbage", b"400"), ("oversize", b"413"), ("long_target", b"414")]:
        data = out[name]
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
        assert statuses == [b"200", b"200", status], (name, data[:300])
        assert data.index(b"/slow") < data.index(b"/ping")  # in the order they were sent


async def _half_closed() -> dict[str, bytes]:
    server = HttpServer(_handler, max_body_bytes=1024)
    port = await server.start("127.0.0.1", 0)
    out: dict[str, bytes] = {}
    try:
        for name, sent in [
            ("one", b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            ("two", b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + REQUEST),
            ("cut_off", b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"),
        ]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sent)
            writer.write_eof()  # the client shuts down its side, and reads on
            out[name] = await asyncio.wait_for(reader.read(), timeout=5)  # to the server's close
            writer.close()
    finally:
        await server.stop()
    return out


def test_a_client_that_closes_its_side_still_gets_its_answers() -> None:
    """Found by review: a client that shuts down writing once its request is sent (``nc -N``, some
    proxies) had its request run and counted, and got no answer (asyncio closed the transport at
    the half-close). Now what it sent is answered, in order, then the connection closes; a request
    cut off by the half-close gets 400."""
    out = asyncio.run(_half_closed())
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out["one"]) == [b"200"] and out["one"].endswith(b"/slow")
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out["two"]) == [b"200", b"200"]
    assert out["two"].index(b"/slow") < out["two"].index(b"/ping")
    assert out["cut_off"].startswith(b"HTTP/1.1 400 ")
    assert b"before the request was complete" in out["cut_off"]
