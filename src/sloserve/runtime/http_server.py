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
  before it on the connection (in order, as pipelining wants); so does an HTTP/1.1 request without
  a ``Host`` header, or any with two (RFC 9112 §3.2), and one giving two different values to a
  header read as one value (:data:`SINGLE_VALUED`); a version other than HTTP/1.0 or 1.1 gets 505;
- a chunked body's trailer fields are read past and ignored (they may not change how the body is
  read), within the same limit as the head (431 beyond it);
- ``Upgrade`` (``curl --http2`` asks for ``h2c``) is ignored (RFC 9110 §7.8): the request is served
  over HTTP/1.1; CONNECT gets 501;
- ``Expect: 100-continue`` is answered once the request is the connection's oldest unanswered one
  and its body has not all come (never to an HTTP/1.0 client);
- an absolute-form target (``http://host/v2/...``) is served as its path and query;
- backpressure: while the transport's write buffer is above its high-water mark (a client that
  does not read its answers), the connection neither reads nor starts its next queued request
  (``pause_writing`` / ``resume_writing``, as uvicorn and aiohttp do); at most
  :data:`MAX_PIPELINE` requests wait behind the one being served (more only within one read);
- shutdown: from :meth:`HttpServer.drain` on, an answer carries ``Connection: close`` unless more
  requests are queued behind it; :meth:`HttpServer.stop` gives idle connections a short grace to
  send the request that may be on its way (answered, then closed), then closes them gracefully: a
  half-close, then what still arrives is read and discarded for a short while, never left unread
  (closing a socket with unread data resets the connection, and the reset can destroy answers the
  client has not read yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
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

SINGLE_VALUED = frozenset({"host", "content-encoding", "inference-header-content-length"})
"""Headers a request may give once (twice only with the same value; ``Host`` only once): the last
of two different values would otherwise win in silence."""

Handler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[HttpResponse]]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

MAX_PIPELINE = 32
"""Requests a connection holds queued behind the one being served before it stops reading."""
LINGER_SECONDS = 0.5
"""How long a connection closed by the server (at shutdown) reads and discards what still arrives
after its half-close, waiting for the client to close its side."""


_REASONS = {status.value: status.phrase for status in HTTPStatus}
"""Each status code's reason phrase (a dict: ``HTTPStatus(code)`` costs 0.4 us per response)."""


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class _HttpDate:
    """The ``Date`` header's value (RFC 9110 §6.6.1), formatted at most once a second: responses
    are written many times a second, and formatting a date costs more than reading the clock."""

    __slots__ = ("until", "value")

    def __init__(self) -> None:
        self.until = 0.0
        """``time.time()`` at which ``value`` goes stale (the start of the next second)."""
        self.value = ""

    def now(self) -> str:
        """Called for each response written: the current second's value."""
        now = time.time()
        if now >= self.until:
            second = int(now)
            self.value = formatdate(second, usegmt=True)
            self.until = second + 1.0
        return self.value


_HTTP_DATE = _HttpDate()


def origin_form(target: bytes) -> bytes:
    """The path and query of an absolute-form request target (``http://host:port/p?q`` gives
    ``/p?q``, RFC 9112 §3.2.2); ``target`` itself when it has no ``http(s)://`` scheme."""
    scheme, sep, _ = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return target
    path = url.path or b"/"
    return path + b"?" + url.query if url.query else path


def encode_response(response: HttpResponse, keep_alive: bool, with_body: bool = True) -> bytes:
    """The response's bytes on the wire (``with_body=False`` for a HEAD request: the head alone,
    its content-length the body's)."""
    lines = [
        f"HTTP/1.1 {response.status} {_reason(response.status)}",
        f"date: {_HTTP_DATE.now()}",
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
        self.read_advanced = False
        """Whether the read being parsed completed the message's head or carried body bytes."""
        self.stalled_reads = 0
        """Bytes of the reads since the message's head completed that carried none of its body: a
        chunked body's framing and its trailer section, which httptools keeps to itself."""
        self.continue_due = False
        """The message being received asked for ``100 Continue`` and has not had it."""
        self.upgrade_request: tuple[str, bool] | None = None
        """Method and keep-alive of a request that asked for an Upgrade (or a CONNECT), between its
        head and the parser giving up the stream."""
        self.upgrade_body_left = 0
        """Bytes of such a request's body still to come: read here, not by the parser."""
        self.expires = math.inf
        """Loop time at which the connection times out (the server's sweep checks it); inf: never."""
        self.last_word: bytes | None = None
        """An error response to write once the requests before it are answered, then close."""
        self.read_closed = False
        """The client closed its side: answer what it sent, then close."""
        self.write_paused = False
        """The transport's write buffer is above its high-water mark: neither read nor serve."""
        self.writable: asyncio.Future[None] | None = None
        """What the worker awaits while writing is paused (resolved by resume_writing, or when the
        connection is lost)."""
        self.linger: asyncio.TimerHandle | None = None
        """Ends a graceful close (:meth:`close_gracefully`) the client did not end itself."""

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
        """The connection is gone (the client reset it, or the server aborted it): nobody
        is left to answer, so the request being served is cancelled (one queued for a model leaves
        its queue, counted ``cancelled``) and those after it on the connection are dropped."""
        self.server.connections.discard(self)
        self.closing = True
        self.expires = math.inf
        self.queue.clear()
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        self._wake_writer()
        if self.worker is not None:
            self.worker.cancel()
        if self.server.on_connection_closed is not None:
            self.server.on_connection_closed(id(self))

    def pause_writing(self) -> None:
        """Called by the transport once its write buffer passes the high-water mark (the client
        reads its answers slower than they are written, or not at all): the connection stops
        reading, and its worker starts no further request, until :meth:`resume_writing`."""
        self.write_paused = True
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """Called by the transport once its write buffer has drained to the low-water mark: the
        worker goes on, and reading resumes unless the queue is full."""
        self.write_paused = False
        self._wake_writer()
        if self.transport is not None and not self.closing and len(self.queue) <= MAX_PIPELINE:
            self.transport.resume_reading()

    def _wake_writer(self) -> None:
        """Called when writing resumes or the connection is lost: frees the worker's wait."""
        waiter, self.writable = self.writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
        if self.upgrade_body_left:
            data = self._take_upgrade_body(data)
            if not data:
                return
        self.read_advanced = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._ignore_upgrade(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._fail(400, f"malformed HTTP request: {exc}")
            return
        if self.in_message and not self.closing:
            self._after_partial_read(len(data))

    def _after_partial_read(self, size: int) -> None:
        """Called after a read of ``size`` bytes that left a message incomplete: bounds its head
        and its chunked body's framing and trailers (httptools keeps a field to itself until it is
        whole, so the reads are counted), and sends ``100 Continue`` when it is due."""
        if not self.headers_done:
            # count the reads after the one the head began in (that one may also hold the end of
            # the message before it)
            if not self.head_began:
                self.head_reads += size
            self.head_began = False
            if self.head_reads > MAX_HEAD_BYTES:
                self._fail(431, f"request headers exceed the limit of {MAX_HEAD_BYTES} bytes")
            return
        if self.read_advanced:
            self.stalled_reads = 0
        else:
            self.stalled_reads += size
            if self.stalled_reads > MAX_HEAD_BYTES:
                self._fail(
                    431, f"request trailers (or chunk framing) exceed the limit of {MAX_HEAD_BYTES} bytes"
                )
                return
        self._continue_if_due()

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self.started = time.monotonic()
        self.in_message = True
        self.headers_done = False
        self.head_bytes = self.head_reads = self.stalled_reads = 0
        self.head_began = True
        self.continue_due = False
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
        if self.closing or self.headers_done:
            return  # a trailer field: ignored, it may not change how the body was read
        self.head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431, f"request headers exceed the limit of {MAX_HEAD_BYTES} bytes")
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").rstrip(" \t")  # httptools strips the whitespace before a value
        if key in SINGLE_VALUED and key in self.headers and (key == "host" or self.headers[key] != text):
            field = name.decode("latin-1")
            self._fail(400, f"the request has more than one {field} header: {self.headers[key]!r}, {text!r}")
            return
        self.headers[key] = text
        if key == "transfer-encoding" and text.lower() != "chunked":
            # httptools de-chunks; any other transfer coding would reach the handler still coded
            self._fail(501, f"Transfer-Encoding {text!r} is not supported (only chunked)")
            return
        if key == "content-length":
            try:
                size = int(value)
            except ValueError:
                size = 0
            if size > self.server.max_body_bytes:
                self._too_large(size)

    def on_headers_complete(self) -> None:
        self.headers_done = self.read_advanced = True
        if self.closing:
            return
        version = self.parser.get_http_version()
        if version == "1.1":
            if "host" not in self.headers:
                self._fail(400, "an HTTP/1.1 request needs a Host header")
                return
            self.continue_due = self.headers.get("expect", "").lower() == "100-continue"
        elif version != "1.0":
            self._fail(505, f"HTTP/{version} is not supported; use HTTP/1.1")

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.read_advanced = True
        self.body_size += len(body)
        if self.body_size > self.server.max_body_bytes:
            self._too_large(self.body_size)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        method = self.parser.get_method().decode("latin-1")
        if self.parser.should_upgrade():  # httptools skipped the body: see _ignore_upgrade
            self.upgrade_request = (method, self.parser.should_keep_alive())
            return
        self._enqueue(method, self.parser.should_keep_alive())

    # -- upgrades, ignored --

    def _ignore_upgrade(self, rest: bytes) -> None:
        """Called when the parser gives up the stream at the head of a request asking for an
        Upgrade (or a CONNECT), ``rest`` the bytes after that head. The Upgrade is ignored (RFC
        9110 §7.8: ``curl --http2`` asks for h2c): the request's body (its Content-Length) is read
        here, then a fresh parser takes the stream on. A chunked body with Upgrade, and CONNECT,
        are refused."""
        self.parser = httptools.HttpRequestParser(self)
        request, self.upgrade_request = self.upgrade_request, None
        if self.closing or request is None:
            return
        method, keep_alive = request
        if method == "CONNECT":
            self._fail(501, "CONNECT is not supported")
            return
        if "transfer-encoding" in self.headers:
            self._fail(400, "a chunked request body with Upgrade is not supported; send it without Upgrade")
            return
        self.upgrade_body_left = int(self.headers.get("content-length", "0"))
        if not self.upgrade_body_left:
            self._enqueue(method, keep_alive)
        else:
            self.upgrade_request = request
            rest = self._take_upgrade_body(rest)
        if rest and not self.closing:
            self.data_received(rest)
        elif self.in_message and not self.closing:
            self._continue_if_due()

    def _take_upgrade_body(self, data: bytes) -> bytes:
        """Called with each read while an Upgrade request's body comes (the parser gave the stream
        up at its head): takes the body's bytes and queues the request once they are all in;
        returns the bytes after the body."""
        body, rest = data[: self.upgrade_body_left], data[self.upgrade_body_left :]
        self.upgrade_body_left -= len(body)
        self.on_body(body)
        if not self.upgrade_body_left and not self.closing and self.upgrade_request is not None:
            method, keep_alive = self.upgrade_request
            self.upgrade_request = None
            self._enqueue(method, keep_alive)
        return rest

    # -- serving --

    def _enqueue(self, method: str, keep_alive: bool) -> None:
        """Called once a request is whole: queues it for the worker, starting one if none runs."""
        self.in_message = self.continue_due = False
        self._arm(None)
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        url = self.url if self.url[:1] == b"/" else origin_form(self.url)
        self.queue.append((method, url.decode("latin-1"), self.headers, body, keep_alive, self.started))
        self.body = []
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._serve())
        if len(self.queue) > MAX_PIPELINE and self.transport is not None:
            self.transport.pause_reading()

    def _continue_if_due(self) -> None:
        """Called once a read leaves a request's body incomplete, and when the worker has answered
        all before it: writes ``100 Continue`` if the request asked for it and is now the oldest
        unanswered one on the connection (not before: it would land before their answers)."""
        if self.continue_due and self.worker is None and self.transport is not None:
            self.continue_due = False
            self.transport.write(_CONTINUE)

    async def _serve(self) -> None:
        """The connection's worker, started when a request is queued and none runs: serves the
        queue in order, waiting while the transport's write buffer is full (backpressure)."""
        handler = self.server.handler
        CONNECTION.set(id(self))  # this task's context: which connection a request came on
        try:
            while self.queue:  # also once closing after a refused request: those before it are answered
                if self.write_paused:  # the client is not reading: take nothing more until it does
                    await self._writable()
                    if self.transport is None or self.transport.is_closing():
                        return
                    continue
                method, url, headers, body, keep_alive, started = self.queue.popleft()
                RECEIVED.set(started)  # the handler's budget counts from the first byte
                response = await handler(method, url, headers, body)
                if self.transport is None or self.transport.is_closing():
                    return
                if keep_alive and self.server.stopping:  # close after the last request taken
                    keep_alive = bool(self.queue) or self.in_message or self.last_word is not None
                self.transport.write(encode_response(response, keep_alive, with_body=method != "HEAD"))
                if not keep_alive:
                    if self.server.stopping:
                        self.close_gracefully()
                    else:
                        self.closing = True
                        self.transport.close()
                    return
                if len(self.queue) <= MAX_PIPELINE and not self.closing and not self.write_paused:
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
                self._continue_if_due()

    async def _writable(self) -> None:
        """Called by the worker while writing is paused: returns once it resumes (or the
        connection is lost; a cancelled worker is cancelled here too)."""
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()
        await self.writable

    def close_gracefully(self) -> None:
        """Called to close a connection the client may still be sending on (the server is
        stopping): half-closes it (the client reads to the end of the stream after the answers
        written), then reads and discards whatever still arrives until the client closes its side
        or :data:`LINGER_SECONDS` pass. Closing with data unread would reset the connection, and a
        reset can destroy answers the client has not read yet."""
        self.closing = True
        self.expires = math.inf
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()  # data_received discards while closing; eof_received closes
        self.linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._linger_over)

    def _linger_over(self) -> None:
        """Called :data:`LINGER_SECONDS` after a graceful close the client has not ended: closes."""
        self.linger = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def idle(self) -> bool:
        """Whether the connection has nothing to answer: no request being served, queued or begun."""
        return self.worker is None and not self.in_message and not self.closing

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
        on_connection_closed: Callable[[int], None] | None = None,
    ) -> None:
        """``on_connection_closed`` is called with a connection's id (what :data:`CONNECTION`
        holds while its requests are served) once it has closed."""
        self.handler = handler
        self.on_connection_closed = on_connection_closed
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
        self.stop_grace = 0.3
        """Seconds :meth:`stop` leaves idle connections to send a request that may be on its way."""

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

    def _shrink_backlog(self) -> None:
        """Called by :meth:`stop` just before the listener closes. Closing a listening socket
        resets the connections still in its accept queue, whose clients may have sent a request
        already; with a backlog of 0 the kernel queues (almost) no new connection (a client's SYN
        is dropped, and its retry finds the port closed: refused, nothing sent) while the loop
        accepts those queued."""
        assert self._server is not None
        for sock in self._server.sockets:
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as listener:
                listener.listen(0)

    def drain(self) -> None:
        """Called when the service begins to drain (before its models finish their queues): from
        now on each answer carries ``Connection: close`` unless more requests are queued behind it
        on its connection, so clients move off before the listener closes."""
        self.stopping = True

    async def stop(self, grace: float | None = None, timeout: float = 3.0) -> None:
        """Stop listening. Connections still serving close after their last answer; idle ones get
        ``grace`` seconds (default :attr:`stop_grace`) to send the request that may be on its way
        (answered with ``Connection: close``), then are closed gracefully (half-close, then what
        arrives is read and discarded); whatever is left after ``timeout`` seconds is aborted."""
        self.drain()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        loop = asyncio.get_running_loop()
        if self._server is not None:
            self._shrink_backlog()
            await asyncio.sleep(0.01)  # the loop accepts the connections already queued
            self._server.close()
        start = loop.time()
        grace_end = start + (self.stop_grace if grace is None else grace)
        while self.connections and loop.time() < grace_end:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.idle():
                conn.close_gracefully()
        while self.connections and loop.time() < start + timeout:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
