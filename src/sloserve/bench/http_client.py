"""The load generator's HTTP/1.1 client: keep-alive connections on asyncio, answers parsed by httptools.

A load generator's latency is charged to the server it measures, so its client must add as little
as it can. Against the null server on the other core of the 2-core development machine (150 KB
mobilenet_v2 requests, one at a time, a fixed rate; ``python benchmarks/bench_client.py``) aiohttp's
client added 0.35–0.45 ms at the median and 0.7–1.1 ms at the 99th percentile over a raw socket
sending the same bytes: a tenth of a 10 ms SLO. This client does the least HTTP needs: the request
goes out in one ``writelines`` (head, JSON header, tensors: the tensors are not copied into one
body), and httptools — the parser the server uses — reads the answer (``Content-Length``, chunked,
or delimited by the connection's close).

:class:`HttpClient` holds up to ``limit`` connections to one host and reuses a connection once its
answer has been read whole and the server kept it open; a connection the server closed while idle
is dropped, not reused. Transport failures (refused, reset, closed before the answer, a malformed
answer) raise :class:`HttpClientError`; the caller decides what they mean.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import httptools


class HttpClientError(ConnectionError):
    """The request got no HTTP answer: the connection failed, or the answer was not HTTP."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """One HTTP response."""

    status: int
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[HttpAnswer] | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.reusable = False
        """Whether the last answer was read whole and the server keeps the connection open."""
        self.open = True

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio and uvloop both set TCP_NODELAY on TCP connections: a request is not held back
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"malformed HTTP answer: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        if self.answer is not None and self.parser.get_status_code() and not self._framed():
            self.on_message_complete()  # an answer delimited by the connection's close
        self._fail(f"connection closed before the answer{f': {exc}' if exc else ''}")

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self.headers = {}
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            return
        self.reusable = self.open and self.parser.should_keep_alive()
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_result(HttpAnswer(status, self.headers, b"".join(self.body)))

    # -- the client's side --

    def send(self, parts: Sequence[bytes]) -> asyncio.Future[HttpAnswer]:
        """Write one request; the future gets its answer."""
        assert self.transport is not None and self.answer is None
        self.answer = asyncio.get_running_loop().create_future()
        self.reusable = False
        self.transport.writelines(parts)
        return self.answer

    def close(self) -> None:
        self.open = self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def _framed(self) -> bool:
        """Whether the answer says where its body ends (else the connection's close ends it)."""
        return "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")

    def _fail(self, message: str) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(HttpClientError(message))


class HttpClient:
    """Requests to one ``host:port`` over at most ``limit`` keep-alive connections (see the module
    docstring). Use from one event loop; :meth:`close` when done."""

    def __init__(self, host: str, port: int, *, limit: int = 256) -> None:
        self.host = host
        self.port = port
        self._host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        target: str,
        body: Sequence[bytes] = (),
        headers: Iterable[tuple[str, str]] = (),
        *,
        timeout: float | None = None,
    ) -> HttpAnswer:
        """Send one request (``body``: its parts, written one after another) and read its answer;
        :class:`HttpClientError` if none comes (``timeout``: at most that many seconds)."""
        length = sum(len(part) for part in body)
        head = "".join(
            [
                f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\nContent-Length: {length}\r\n",
                *(f"{name}: {value}\r\n" for name, value in headers),
                "\r\n",
            ]
        ).encode("latin-1")
        async with self._slots:
            conn = await self._connection()
            try:
                async with asyncio.timeout(timeout):
                    answer = await conn.send([head, *body])
            except TimeoutError:
                conn.close()
                raise HttpClientError(f"no answer within {timeout:g} s") from None
            except BaseException:  # failed or cancelled: what is left on the connection is unknown
                conn.close()
                raise
            if conn.reusable:
                self._idle.append(conn)
            else:
                conn.close()
            return answer

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.open:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise HttpClientError(f"cannot connect to {self._host_header}: {exc}") from None
        return conn

    async def close(self) -> None:
        """Close every idle connection (requests still running close theirs as they end)."""
        while self._idle:
            self._idle.pop().close()
        await asyncio.sleep(0)  # let the transports run their close callbacks
