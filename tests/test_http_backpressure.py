"""The HTTP/1.1 stack under a client that does not read, and at shutdown under keep-alive traffic.

Backpressure (found by a soak test: a client pipelining requests and never reading its answers made
the server buffer them without bound, 1.7 GB for 1 MiB tensors): while the transport's write buffer
is above its high-water mark the connection stops reading and starts no further request; once the
client reads, every answer arrives, in order. A connection lost (or a server stopped) while writing
is paused leaves nothing waiting.

Shutdown (found by a soak test: SIGTERM under keep-alive load reset connections whose request had
just been sent): answers during the drain carry ``Connection: close``, and a connection idle when
the listener closes still answers the request on its way, then closes without a reset.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from server_fakes import FakeBackends, wait_for, write_model
from sloserve.runtime.http_api import HttpResponse
from sloserve.runtime.http_server import HttpServer
from sloserve.runtime.service import BackgroundServer, ServeOptions

ANSWER_BYTES = 64 * 1024
"""Size of each answer to a GET (big enough that a few fill the socket buffers)."""

WRITE_BUFFER_BOUND = 1 << 20
"""Most bytes a connection may hold unsent: the transport's high-water mark (64 KiB by default)
plus the one answer written past it, with room to spare; unbounded before the fix."""

CALLS: list[str] = []
"""The URLs the handler was called for, in order (cleared by each scenario)."""


async def _tagged(method: str, url: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
    """Answers a GET with its URL padded to :data:`ANSWER_BYTES`, a POST with its URL and body."""
    CALLS.append(url)
    tag = url.encode() + b"\n"
    return HttpResponse(200, tag + body if body else tag.ljust(ANSWER_BYTES, b"."), "text/plain")


class _Wire:
    """A blocking client socket that reads HTTP/1.1 answers one at a time."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # a small window: the server's buffers fill sooner
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        self.buf += data
        return bool(data)

    def answer(self) -> tuple[int, dict[str, str], bytes] | None:
        """The next answer (status, headers, body); None at a clean end of stream before one."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                assert not self.buf, f"the stream ended inside an answer: {bytes(self.buf[:200])!r}"
                return None
        head, _, _ = bytes(self.buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        end = len(head) + 4 + int(headers.get("content-length", "0"))
        while len(self.buf) < end:
            assert self._fill(), "the stream ended inside an answer"
        body = bytes(self.buf[len(head) + 4 : end])
        del self.buf[:end]
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        self.sock.close()


def _run(scenario: Callable[[HttpServer, int], Awaitable[None]]) -> None:
    """``scenario(server, port)`` against a fresh server running :func:`_tagged`."""

    async def served() -> None:
        CALLS.clear()
        server = HttpServer(_tagged, max_body_bytes=1 << 20)
        port = await server.start("127.0.0.1", 0)
        try:
            await scenario(server, port)
        finally:
            await server.stop()

    asyncio.run(served())


async def _settled(total: int) -> int:
    """Wait until the handler has been called ``total`` times, or its count has stopped growing
    (unchanged for a second of the loop's own turns: the server has stopped taking requests)."""
    loop = asyncio.get_running_loop()
    last, since, deadline = -1, loop.time(), loop.time() + 60
    while len(CALLS) < total and loop.time() < deadline:
        if len(CALLS) != last:
            last, since = len(CALLS), loop.time()
        elif loop.time() - since > 1.0:
            break
        await asyncio.sleep(0.05)
    return len(CALLS)


def _write_buffered(server: HttpServer) -> int:
    """Bytes the server's one connection holds unsent."""
    (conn,) = server.connections
    assert conn.transport is not None
    return conn.transport.get_write_buffer_size()


def _gets(n: int) -> list[bytes]:
    return [f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(n)]


def _posts(n: int, size: int) -> Iterator[bytes]:
    for i in range(n):
        body = bytes([i % 251]) * size
        yield f"POST /{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode() + body


@pytest.mark.parametrize(
    ("kind", "total"),
    [("small requests, big answers", 1000), ("big requests echoed", 200)],
)
def test_a_client_that_does_not_read_stops_the_server_reading(kind: str, total: int) -> None:
    """Pipelined requests, none of the answers read: the server takes requests only while the
    client's answers fit the socket buffers and the transport's high-water mark, so what it holds
    unsent stays bounded; once the client reads, it gets every answer, in order."""
    size = 256 * 1024

    async def scenario(server: HttpServer, port: int) -> None:
        wire = _Wire(port, rcvbuf=4096)
        requests: Iterator[bytes] = iter(_gets(total)) if kind.startswith("small") else _posts(total, size)

        def send() -> None:
            for request in requests:
                wire.sock.sendall(request)

        sender = asyncio.ensure_future(asyncio.to_thread(send))
        try:
            taken = await _settled(total)
            buffered = _write_buffered(server)
            assert buffered <= WRITE_BUFFER_BOUND, f"{buffered} bytes held unsent after {taken} answers"
            assert taken < total, "every request was taken by a client reading nothing"

            def receive() -> list[tuple[int, bytes]]:
                out = []
                for _ in range(total):
                    answer = wire.answer()
                    assert answer is not None
                    out.append((answer[0], answer[2]))
                return out

            answers = await asyncio.wait_for(asyncio.to_thread(receive), timeout=120)
            await asyncio.wait_for(sender, timeout=60)
        finally:
            wire.close()
        assert [status for status, _ in answers] == [200] * total
        assert [body.split(b"\n", 1)[0] for _, body in answers] == [f"/{i}".encode() for i in range(total)]
        if kind.startswith("big"):
            assert all(body[-size:] == bytes([i % 251]) * size for i, (_, body) in enumerate(answers))
        assert [f"/{i}" for i in range(total)] == CALLS

    _run(scenario)


def test_a_connection_that_ends_while_paused_leaves_nothing_waiting() -> None:
    """Two clients stop reading; one hangs up, then the server stops: both connections go, and
    no worker is left awaiting a write buffer that will never drain."""

    async def scenario(server: HttpServer, port: int) -> None:
        wires = [_Wire(port, rcvbuf=4096) for _ in range(2)]
        for wire in wires:
            await asyncio.to_thread(wire.sock.sendall, b"".join(_gets(500)))
        await _settled(1000)
        conns = list(server.connections)
        assert len(conns) == 2 and all(c.write_paused and c.worker is not None for c in conns)
        wires[0].close()  # unread answers: a reset
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(server.connections) > 1 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        assert len(server.connections) == 1
        await asyncio.wait_for(server.stop(), timeout=30)  # the other one: aborted at the end
        assert not server.connections
        await asyncio.sleep(0.05)
        assert all(c.worker is None for c in conns)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, others
        wires[1].close()

    _run(scenario)


# -- shutdown under keep-alive traffic, over the real service --

INFER = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})


def _infer(model: str) -> bytes:
    body = INFER.encode()
    head = f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def gated_server(tmp_path: Path) -> Iterator[tuple[BackgroundServer, FakeBackends]]:
    """A server with ``gated`` (held by its gate) and ``free`` fake models; HTTP only. Idle
    connections get 10 s at stop to send what may be on its way (a test sends within it)."""
    fakes = FakeBackends()
    write_model(tmp_path, "gated", {"backend": "fake", "max_batch_size": 1})
    write_model(tmp_path, "free", {"backend": "fake", "max_batch_size": 1})
    options = ServeOptions(tmp_path, http_port=0, grpc_port=None, metrics_port=None, backends={"fake": fakes})
    server = BackgroundServer(options).start()
    server.service.http.stop_grace = 10.0
    try:
        yield server, fakes
    finally:
        fakes.control("gated").gate.set()
        server.stop()


def _refused(port: int) -> bool:
    """Whether a connection to ``port`` is refused (the listener has closed)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_answers_during_the_drain_close_and_an_idle_connection_answers_what_comes(
    gated_server: tuple[BackgroundServer, FakeBackends],
) -> None:
    """A keep-alive connection that sends during the drain gets its 503 with ``Connection:
    close``, then a clean end of stream; one idle when the listener closes still gets an answer to
    the request it sends then (it was closed under it, unread, and reset), then a clean end."""
    server, fakes = gated_server
    port = server.service.http_port
    during, idle, held = (_Wire(port) for _ in range(3))
    for wire in (during, idle):
        wire.sock.sendall(LIVE)
        answer = wire.answer()
        assert answer is not None and answer[0] == 200 and "connection" not in answer[1]
    gate = fakes.control("gated")
    gate.gate.clear()
    held.sock.sendall(_infer("gated"))
    assert gate.started()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    try:
        wait_for(lambda: not server.service.core.ready)  # draining, held by the gated request
        during.sock.sendall(_infer("free"))
        answer = during.answer()
        assert answer is not None and answer[0] == 503 and b"shutting down" in answer[2]
        assert answer[1].get("connection") == "close"
        assert during.answer() is None  # a clean end, not a reset
        gate.gate.set()  # the drain ends: the held request is answered, and the listener closes
        answer = held.answer()
        assert answer is not None and answer[0] == 200 and answer[1].get("connection") == "close"
        assert held.answer() is None
        wait_for(lambda: _refused(port), timeout=30)
        idle.sock.sendall(_infer("free"))
        answer = idle.answer()
        assert answer is not None and answer[0] == 503 and answer[1].get("connection") == "close"
        assert idle.answer() is None
    finally:
        gate.gate.set()
        stopper.join(60)
        for wire in (during, idle, held):
            wire.close()
    assert not stopper.is_alive()
    assert not server.service.http.connections


def test_every_request_sent_under_keep_alive_load_at_shutdown_is_answered(
    gated_server: tuple[BackgroundServer, FakeBackends],
) -> None:
    """Eight keep-alive connections send requests back to back while the server drains and stops:
    every request sent gets an answer (200, or 503 refusing it), the last on each connection
    says ``Connection: close``, and the stream then ends cleanly: no request meets a reset."""
    server, fakes = gated_server
    port = server.service.http_port
    stop = threading.Event()
    lost: list[str] = []
    finals: list[tuple[int, str]] = []
    counts: list[int] = []

    def client() -> None:
        wire = _Wire(port)
        sent = kept_open = 0
        try:
            while True:
                wire.sock.sendall(_infer("free"))
                sent += 1
                try:
                    answer = wire.answer()
                except (ConnectionError, AssertionError) as exc:
                    lost.append(f"request {sent}: {exc!r}")
                    return
                if answer is None:
                    lost.append(f"request {sent}: the stream ended unanswered")
                    return
                status, headers, _ = answer
                assert status in (200, 503), status
                if headers.get("connection") == "close":
                    finals.append((status, "clean end" if wire.answer() is None else "more"))
                    return
                kept_open += stop.is_set()  # one answer may have been on its way as the drain began
                if kept_open > 2 or sent >= 100_000:
                    lost.append("the server never said Connection: close")
                    return
        finally:
            counts.append(sent)
            wire.close()

    gate = fakes.control("gated")
    gate.gate.clear()
    held = _Wire(port)
    held.sock.sendall(_infer("gated"))
    assert gate.started()
    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    stopper = threading.Thread(target=server.stop)
    try:
        wait_for(lambda: server.service.core.repository.models["free"].loop.stats.success_count >= 40)
        stopper.start()
        wait_for(lambda: not server.service.core.ready)
        stop.set()
        for thread in clients:
            thread.join(60)
    finally:
        gate.gate.set()
        stop.set()
        stopper.join(60)
        held.close()
    assert not lost, lost
    assert len(finals) == 8 and all(end == "clean end" for _, end in finals), finals
