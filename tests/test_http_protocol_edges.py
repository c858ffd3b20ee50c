"""The HTTP/1.1 stack at the edges of the protocol, found by review: a chunked body's trailer
section (bounded like the head, never merged into the headers), ``Upgrade`` requests (served over
HTTP/1.1, ``curl --http2`` asks for h2c), ``100 Continue`` (in order behind the answers before it,
never to HTTP/1.0), the rules on ``Host`` and on headers given twice, an absolute-form target,
whitespace after a header's value, HTTP/2.0 on the request line, the ``Date`` header; and, over the
real routes, a ``Content-Encoding`` header on a request whose route reads no body."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import pytest

from sloserve.runtime.http_api import HttpResponse
from sloserve.runtime.http_server import MAX_HEAD_BYTES, HttpServer
from sloserve.runtime.service import BackgroundServer

T = TypeVar("T")

CALLS: list[str] = []
"""The URLs the handler was called for, in order (cleared by each scenario)."""


async def _echo(method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
    """Answers with what it was given, as JSON; ``/slow`` takes a while first."""
    CALLS.append(url)
    if url == "/slow":
        await asyncio.sleep(0.3)
    doc = {"method": method, "url": url, "headers": dict(headers), "body": body.decode("latin-1")}
    return HttpResponse(200, json.dumps(doc).encode())


def _run(scenario: Callable[[int], Awaitable[T]]) -> T:
    """``scenario(port)`` against a fresh server running :func:`_echo`."""

    async def served() -> T:
        CALLS.clear()
        server = HttpServer(_echo, max_body_bytes=1 << 20)
        port = await server.start("127.0.0.1", 0)
        try:
            return await scenario(port)
        finally:
            await server.stop()

    return asyncio.run(served())


async def _exchange(port: int, *writes: bytes) -> bytes:
    """Send ``writes``, shut down the client's side, and read to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for data in writes:
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


def _responses(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Each response in ``data`` as (status, head, body); ``100 Continue`` has no body."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        found = re.search(rb"(?im)^content-length: *(\d+)", head)
        size = int(found.group(1)) if found else 0
        out.append((status, head, data[:size]))
        data = data[size:]
    return out


def _echoed(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    return doc


# -- the trailer section --


def test_an_endless_trailer_is_refused_like_an_endless_header() -> None:
    """Found by review: after the last chunk, a trailer line that never ended was buffered without
    limit (1 MiB of it took 135 MB); the head's limit only held while the headers were coming."""

    async def scenario(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(reader.read(65536))  # the 431 comes in one write
        try:
            writer.write(
                b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n0\r\nX-A: "
            )
            for _ in range(4 * MAX_HEAD_BYTES // 8192):  # stops once answered: a reset would hide it
                if answer.done():
                    break
                writer.write(b"a" * 8192)
                await asyncio.sleep(0.002)
            return await asyncio.wait_for(answer, timeout=5)
        finally:
            writer.close()

    answer = _run(scenario)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"trailers (or chunk framing) exceed" in answer, answer
    assert CALLS == []


def test_trailer_fields_are_ignored() -> None:
    """Found by review: trailer fields were merged into the headers, so a trailer could change how
    the body was read (``Content-Encoding: gzip``, ``Inference-Header-Content-Length: 5``)."""
    sent = (
        b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"
        b"Content-Encoding: gzip\r\nInference-Header-Content-Length: 5\r\nX-Trailer: 1 \r\n\r\n"
    )
    [(status, _, body)] = _responses(_run(lambda port: _exchange(port, sent)))
    doc = _echoed(body)
    assert status == 200 and doc["body"] == "ab"
    assert doc["headers"] == {"host": "x", "transfer-encoding": "chunked"}


# -- Upgrade and CONNECT --

UPGRADE = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)
"""The headers ``curl --http2`` adds to a request to an ``http://`` URL."""


async def _upgrades(port: int) -> dict[str, bytes]:
    out = {
        # a body in two reads, then a request pipelined behind it
        "post": await _exchange(
            port,
            b"POST /up HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"Content-Length: 5\r\n\r\nhe",
            b"llo" + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        "gets": await _exchange(
            port, b"GET /up HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        "chunked": await _exchange(
            port,
            b"POST /chunked HTTP/1.1\r\nHost: x\r\n"
            + UPGRADE
            + b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        ),
        "connect": await _exchange(port, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"),
    }
    # Expect: 100-continue with Upgrade: the body is sent once the 100 came
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /expect HTTP/1.1\r\nHost: x\r\n"
            + UPGRADE
            + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        out["continue"] = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        writer.write(b"ok")
        writer.write_eof()
        out["expect"] = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    return out


def test_an_upgrade_request_is_served_over_http_1_1() -> None:
    """Found by review: with ``Connection: Upgrade`` (``curl --http2``) the request ran with an
    empty body, then a stray 400 followed as one more response. Upgrade is now ignored (RFC 9110
    §7.8); a chunked body with it, and CONNECT, get one refusal and are not run."""
    out = _run(_upgrades)
    post = _responses(out["post"])
    assert [status for status, _, _ in post] == [200, 200], out["post"]
    assert _echoed(post[0][2])["body"] == "hello" and _echoed(post[1][2])["url"] == "/after"
    gets = _responses(out["gets"])
    assert [(status, _echoed(body)["url"]) for status, _, body in gets] == [(200, "/up"), (200, "/after")]
    [(status, _, body)] = _responses(out["chunked"])
    assert status == 400 and b"chunked request body with Upgrade" in body
    [(status, _, body)] = _responses(out["connect"])
    assert status == 501 and b"CONNECT" in body
    assert out["continue"] == b"HTTP/1.1 100 Continue\r\n\r\n"
    [(status, _, body)] = _responses(out["expect"])
    assert status == 200 and _echoed(body)["body"] == "ok"
    assert CALLS == ["/up", "/after", "/up", "/after", "/expect"]


# -- 100 Continue --


async def _continues(port: int) -> dict[str, bytes]:
    out = {}
    expect = b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    # behind a request still being answered: the 100 waits for its answer
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + expect)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        out["first"] = head + await reader.readexactly(int(re.findall(rb"content-length: (\d+)", head)[0]))
        out["then"] = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        writer.write(b"ok")
        writer.write_eof()
        out["last"] = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    # the body came with the head: nothing to wait for, no 100
    out["whole"] = await _exchange(port, expect + b"ok")
    # HTTP/1.0: never a 100 (the body follows once the server has surely read the head)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(expect.replace(b"HTTP/1.1", b"HTTP/1.0"))
        await asyncio.sleep(0.1)
        writer.write(b"ok")
        out["http10"] = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    return out


def test_100_continue_comes_in_order_and_only_when_awaited() -> None:
    """Found by review: ``100 Continue`` was written as soon as the head was parsed, before the
    answers to the requests pipelined ahead of it, even when the body had come with the head, and
    to HTTP/1.0 clients."""
    out = _run(_continues)
    assert out["first"].startswith(b"HTTP/1.1 200 ") and out["first"].endswith(b'"body": ""}'), out["first"]
    assert out["then"] == b"HTTP/1.1 100 Continue\r\n\r\n"
    [(status, _, body)] = _responses(out["last"])
    assert status == 200 and _echoed(body)["body"] == "ok"
    assert [status for status, _, _ in _responses(out["whole"])] == [200]
    [(status, _, body)] = _responses(out["http10"])
    assert status == 200 and _echoed(body)["body"] == "ok"


# -- request heads --


@pytest.mark.parametrize(
    ("sent", "status", "said"),
    [
        (b"GET /h HTTP/1.1\r\n\r\n", 400, b"needs a Host header"),
        (b"GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, b"more than one Host header"),
        (b"GET /h HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, b"more than one Host header"),
        (b"GET /h HTTP/1.0\r\n\r\n", 200, b'"url": "/h"'),
        (
            b"GET /h HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 3\r\n"
            b"Inference-Header-Content-Length: 179\r\n\r\n",
            400,
            b"more than one Inference-Header-Content-Length header: '3', '179'",
        ),
        (
            b"GET /h HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\ncontent-encoding: deflate\r\n\r\n",
            400,
            b"more than one content-encoding header",
        ),
        (
            b"GET /h HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Encoding: gzip\r\n\r\n",
            200,
            b'"content-encoding": "gzip"',
        ),
        (b"GET /h HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 179 \t\r\n\r\n", 200, b'": "179"}'),
        (
            b"GET http://127.0.0.1:1/v2/health/live?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            200,
            b'"/v2/health/live?x=1"',
        ),
        (b"GET HTTP://x HTTP/1.1\r\nHost: x\r\n\r\n", 200, b'"url": "/"'),
        (b"GET /h HTTP/2.0\r\nHost: x\r\n\r\n", 505, b"HTTP/2.0 is not supported"),
    ],
)
def test_request_heads_are_read_as_http_1_1_says(sent: bytes, status: int, said: bytes) -> None:
    """Found by review: Host was not checked (RFC 9112 §3.2), the last of two different values
    won in silence, an absolute-form target matched no route, a trailing space made
    ``Inference-Header-Content-Length`` invalid, and HTTP/2.0 on the request line was served."""
    [(got, _, body)] = _responses(_run(lambda port: _exchange(port, sent)))
    assert got == status and said in body, body


def test_responses_carry_a_date() -> None:
    """Found by review: no ``Date`` header (RFC 9110 §6.6.1)."""
    sent = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = _responses(_run(lambda port: _exchange(port, sent)))
    assert len(answers) == 2
    for _, head, _ in answers:
        [date] = re.findall(rb"(?m)^date: (.+)\r$", head + b"\r")
        assert abs(parsedate_to_datetime(date.decode()).timestamp() - time.time()) < 60, date


# -- over the real routes --


def _ask(server: BackgroundServer, request: bytes) -> list[tuple[int, bytes, bytes]]:
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return _responses(answer)


def test_a_route_without_a_body_ignores_content_encoding(identity_server: BackgroundServer) -> None:
    """Found by review: the body was inflated before the route was looked up, so ``GET
    /v2/health/live`` with ``Content-Encoding: gzip`` and no body got 400."""
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n\r\n"
    assert [status for status, _, _ in _ask(identity_server, request)] == [200]


def test_curl_http2_infer_is_answered_over_http_1_1(identity_server: BackgroundServer) -> None:
    """What ``curl --http2 -d @body http://.../infer`` sends: one answer, with the outputs."""
    body = b'{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
    request = b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n" + UPGRADE
    request += b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)
    [(status, _, answer)] = _ask(identity_server, request + body)
    assert status == 200 and json.loads(answer)["outputs"][0]["data"] == [1.0, 2.0], answer
