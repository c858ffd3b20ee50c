"""HTTP/1.1 over raw asyncio + httptools (on uvloop), carrying :class:`~sloserve.runtime.http_api.HttpApi`.

Why this stack: measured with ``python benchmarks/http_stack.py`` (same routes, same server
core, identity model FP32[1,16] binary, each stack in its own process on uvloop; a lean raw-socket
client sends 3000 sequential requests alternating with a null server, then a closed loop of 2
processes x 32 connections for 5 s; 2-core machine shared with other work, load average ~6,
2026-11-23)::

    stack                 p50 ms   added p50 ms   p99 ms   peak req/s
    raw asyncio+httptools  0.157          0.095    1.425       11460
    aiohttp                0.170          0.128    0.266        8312
    uvicorn + starlette    0.213          0.169    1.720        4490

(``--quick`` run earlier the same evening: raw 0.103 ms / 6808 req/s, aiohttp 0.160 / 5177,
uvicorn + starlette 0.156 / 3597: same order.)

The raw protocol adds the least latency and reaches the highest rate (1.4-2.6x the others), and
it gives direct control over what the issue asks for at the connection level:

- ``TCP_NODELAY`` on every connection;
- keep-alive and in-order pipelining (one handler at a time per connection);
- a body-size limit: 413 as soon as ``Content-Length`` (or the body received) exceeds it;
- limits on the request head: 414 for a request target over :data:`MAX_URL_BYTES`, 431 for
  headers over :data:`MAX_HEAD_BYTES` (a header still arriving is refused once the reads since its
  message began pass the limit: httptools keeps a header's value to itself until it is whole);
- slow clients: a request whose headers and body do not arrive within ``request_timeout`` seconds
  gets 408 and its connection is closed; idle keep-alive connections close after
  ``keepalive_timeout``; both are checked by one sweep of the connections a few times per
  timeout (at most once a second), not by a timer set and cancelled per request: creating and
  cancelling three loop timers was 8% of the event loop's time serving 550 mobilenet_v2 req/s;
- malformed HTTP gets 400 and the connection is closed, after the answers to the requests that came
  before it on the connection (in order, as pipelining wants).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import httptools

from sloserve.runtime.clock import RECEIVED
from sloserve.runtime.decode_pool import CONNECTION
from sloserve.runtime.http_api import HttpResponse, error_response

log = logging.getLogger("sloserve.runtime")

MAX_URL_BYTES = 8 * 1024
"""Longest request target taken (414 beyond it)."""
MAX_HEAD_BYTES = 64 * 1024
"""Most bytes of headers taken in one request (431 beyond them)."""

Handler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[HttpResponse]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def encode_response(response: HttpResponse, keep_alive: bool, with_body: bool = True) -> bytes:
    """The response's bytes on the wire (``with_body=False`` for a HEAD request: the head alone,
    its content-length the body's)."""
    lines = [
        f"HTTP/1.1 {response.status} {_reason(response.status)}",
        f"content-type: {response.content_type}",
        f"content-length: {len(response.body)}",
    ]
    lines.extend(f"{k}: {v}" for k, v in response.headers)
    if not keep_alive:
        lines.append("connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body if with_body else head


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs them in order, writes responses."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.queue: deque[tuple[str, str, dict[str, str], bytes, bool, float]] = deque()
        self.started = 0.0
        """``time.monotonic()`` at the first byte of the message being parsed."""
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.in_message = False
        self.headers_done = False
        """Whether the message being received has all its headers (its body may still come)."""
        self.head_bytes = 0
        """Bytes of the headers parsed so far in the message being received."""
        self.head_reads = 0
        """Bytes read while the message's head was incomplete, after the read it began in."""
        self.head_began = False
        """Whether the message being received began in the read being parsed."""
        self.expires = math.inf
        """Loop time at which the connection times out (the server's sweep checks it); inf: never."""
        self.last_word: bytes | None = None
        """An error response to write once the requests before it are answered, then close."""
        self.read_closed = False
        """The client closed its side: answer what it sent, then close."""

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._arm(self.server.keepalive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.expires = math.inf

    def eof_received(self) -> bool | None:
        """The client closed its side of the connection (a half-close: ``nc -N``, some proxies, a
        client that shuts down writing once its request is sent). The requests it sent are still
        answered, in order, then the connection closes; a request cut off mid-way gets 400."""
        if self.closing:
            return None
        if self.in_message:
            self._fail(400, "the client closed its side of the connection before the request was complete")
            return True  # _fail closes once the answers before it are written
        if self.worker is None:
            return None  # nothing pending: asyncio closes the transport
        self.read_closed = True
        return True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._fail(400, f"malformed HTTP request: {exc}")
            return
        if self.in_message and not self.headers_done and not self.closing:
            # a head still incomplete: count the reads after the one it began in (that one may
            # also hold the end of the message before it)
            if not self.head_began:
                self.head_reads += len(data)
            self.head_began = False
            if self.head_reads > MAX_HEAD_BYTES:
                self._fail(431, f"request headers exceed the limit of {MAX_HEAD_BYTES} bytes")

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self.started = time.monotonic()
        self.in_message = True
        self.headers_done = False
        self.head_bytes = self.head_reads = 0
        self.head_began = True
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0
        self._arm(self.server.request_timeout)

    def on_url(self, url: bytes) -> None:
        if self.closing:
            return
        self.url += url
        if len(self.url) > MAX_URL_BYTES:
            self._fail(414, f"request target exceeds the limit of {MAX_URL_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.closing:
            return
        self.head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431, f"request headers exceed the limit of {MAX_HEAD_BYTES} bytes")
            return
        key = name.decode("latin-1").lower()
        self.headers[key] = value.decode("latin-1")
        if key == "transfer-encoding" and value.strip().lower() != b"chunked":
            # httptools de-chunks; any other transfer coding would reach the handler still coded
            self._fail(501, f"Transfer-Encoding {value.decode('latin-1')!r} is not supported (only chunked)")
            return
        if key == "content-length":
            try:
                size = int(value)
            except ValueError:
                size = 0
            if size > self.server.max_body_bytes:
                self._too_large(size)

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.closing:
            return
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.body_size += len(body)
        if self.body_size > self.server.max_body_bytes:
            self._too_large(self.body_size)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        self.in_message = False
        self._arm(None)
        method = self.parser.get_method().decode("latin-1")
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        keep_alive = self.parser.should_keep_alive()
        self.queue.append((method, self.url.decode("latin-1"), self.headers, body, keep_alive, self.started))
        self.body = []
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._serve())
        if len(self.queue) > 32 and self.transport is not None:
            self.transport.pause_reading()

    # -- serving --

    async def _serve(self) -> None:
        handler = self.server.handler
        CONNECTION.set(id(self))  # this task's context: which connection a request came on
        try:
            while self.queue:  # also once closing after a refused request: those before it are answered
                method, url, headers, body, keep_alive, started = self.queue.popleft()
                RECEIVED.set(started)  # the handler's budget counts from the first byte
                response = await handler(method, url, headers, body)
                if self.transport is None or self.transport.is_closing():
                    return
                keep_alive = keep_alive and not self.server.stopping
                self.transport.write(encode_response(response, keep_alive, with_body=method != "HEAD"))
                if not keep_alive:
                    self.closing = True
                    self.transport.close()
                    return
                if len(self.queue) <= 32 and not self.closing:
                    self.transport.resume_reading()
        finally:
            self.worker = None
            if self.last_word is not None:
                self._close_with(self.last_word)
            elif self.read_closed and not self.closing and self.transport is not None:
                self.closing = True
                self.transport.close()
            elif not self.closing and not self.queue:  # a request begun meanwhile gets its full time
                self._arm(self.server.request_timeout if self.in_message else self.server.keepalive_timeout)

    def _arm(self, timeout: float | None) -> None:
        """Set (or with None clear) the time this connection may stay as it is; a float, not a
        timer per request: the server's sweep finds expired connections."""
        if timeout is None or self.closing:
            self.expires = math.inf
        else:
            self.expires = self.server.loop_time() + timeout

    def timed_out(self) -> None:
        """Called by the server's sweep once ``expires`` has passed."""
        self.expires = math.inf
        if self.worker is not None:  # the handler's time is not the client's: re-armed when it ends
            return
        if self.in_message:
            self._fail(408, f"request not received within {self.server.request_timeout:g} s")
        elif self.transport is not None:
            self.closing = True
            self.transport.close()

    def _too_large(self, size: int) -> None:
        self._fail(
            413, f"request body of {size} bytes exceeds the limit of {self.server.max_body_bytes} bytes"
        )

    def _fail(self, status: int, message: str) -> None:
        """Answer with an error and close the connection (the stream cannot be trusted any more);
        requests received before it on this connection are answered first, in order."""
        self.closing = True
        if self.transport is None or self.transport.is_closing():
            return
        response = encode_response(error_response(message, status), keep_alive=False)
        if self.worker is None:
            self._close_with(response)
        else:  # the worker writes it after the answers before it
            self.last_word = response
            self.transport.pause_reading()

    def _close_with(self, response: bytes) -> None:
        self.last_word = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


class HttpServer:
    """An HTTP/1.1 server on ``host:port`` running ``handler`` for each request."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        request_timeout: float = 30.0,
        keepalive_timeout: float = 75.0,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.base_events.Server | None = None
        self.sweep_interval = min(1.0, request_timeout / 4, keepalive_timeout / 4)
        """Seconds between two checks of the connections' timeouts (a timeout fires up to this late)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self.loop_time: Callable[[], float] = time.monotonic

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with ``port=0``)."""
        loop = asyncio.get_running_loop()
        self.loop_time = loop.time
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )
        self._sweeper = loop.call_later(self.sweep_interval, self._sweep)
        sock: Any = self._server.sockets[0]
        return int(sock.getsockname()[1])

    def _sweep(self) -> None:
        """Called every ``sweep_interval``: times out the connections whose ``expires`` passed."""
        now = self.loop_time()
        for conn in [c for c in self.connections if c.expires <= now]:
            conn.timed_out()
        self._sweeper = asyncio.get_running_loop().call_later(self.sweep_interval, self._sweep)

    async def stop(self) -> None:
        """Stop listening; close idle connections; busy ones close after their current response."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.worker is None and conn.transport is not None:
                conn.closing = True
                conn.transport.close()
        for _ in range(50):
            if not self.connections:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
