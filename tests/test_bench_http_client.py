"""The load generator's HTTP client against small raw servers: framing, reuse, failures, limits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from sloserve.bench.http_client import HttpClient, HttpClientError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


class Server:
    """A raw HTTP server on 127.0.0.1 counting its connections; ``answer`` writes each answer."""

    def __init__(self, answer: Callable[[str, dict[str, str], bytes], bytes | None]) -> None:
        self.answer = answer
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.close_after_answer = False
        self.delay = 0.0
        """Seconds each answer takes."""

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                request = await _read_request(reader)
                self.seen.append(request)
                await asyncio.sleep(self.delay)
                data = self.answer(*request)
                if data is None:  # close without answering
                    break
                writer.write(data)
                await writer.drain()
                if self.close_after_answer or b"connection: close" in data.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


def ok(body: bytes = b"hello", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_requests_reuse_one_keep_alive_connection_and_arrive_whole() -> None:
    async def main() -> None:
        async with Server(lambda line, headers, body: ok(body[::-1])) as server:
            client = HttpClient("127.0.0.1", server.port)
            for i in range(20):
                answer = await client.request(
                    "POST", "/v2/x", [b"head-", str(i).encode(), b"-tail"], [("X-Test", "yes")]
                )
                assert answer.status == 200 and answer.body == f"head-{i}-tail".encode()[::-1]
                assert answer.headers["content-length"] == str(len(answer.body))
            await client.close()
        assert server.connections == 1
        line, headers, body = server.seen[-1]
        assert line == "POST /v2/x HTTP/1.1" and body == b"head-19-tail"
        assert headers["host"] == f"127.0.0.1:{server.port}" and headers["x-test"] == "yes"

    run(main())


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 11\r\n\r\nhello world",
        b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\nhello world",
    ],
    ids=["chunked", "interim-answer-first", "delimited-by-close"],
)
def test_answers_framed_every_way_http_allows_are_read_whole(raw: bytes) -> None:
    async def main() -> None:
        async with Server(lambda *request: raw) as server:
            client = HttpClient("127.0.0.1", server.port)
            for _ in range(2):  # the second on the same connection, or a new one after a close
                answer = await client.request("GET", "/")
                assert (answer.status, answer.body) == (503, b"hello world")
            await client.close()
        assert server.connections == (2 if b"close" in raw else 1)

    run(main())


def test_a_connection_the_server_drops_fails_its_request_and_the_next_gets_a_new_one() -> None:
    calls = 0

    def answer(*request: object) -> bytes | None:
        nonlocal calls
        calls += 1
        return None if calls == 2 else ok()

    async def main() -> None:
        async with Server(answer) as server:
            client = HttpClient("127.0.0.1", server.port)
            assert (await client.request("GET", "/")).status == 200
            with pytest.raises(HttpClientError, match="closed before the answer"):
                await client.request("GET", "/")
            assert (await client.request("GET", "/")).status == 200
            await client.close()
        assert server.connections == 2

    run(main())


def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def main() -> None:
        async with Server(lambda *request: ok()) as server:
            server.close_after_answer = True  # keep-alive said, then closed while idle
            client = HttpClient("127.0.0.1", server.port)
            for _ in range(3):
                assert (await client.request("GET", "/")).status == 200
                await asyncio.sleep(0.05)  # the close arrives before the next request
            await client.close()
        assert server.connections == 3

    run(main())


def test_a_refused_connection_a_garbled_answer_and_a_silent_server_are_client_errors() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(HttpClientError, match="cannot connect"):
            await HttpClient("127.0.0.1", port).request("GET", "/")
        async with Server(lambda *request: b"SPDY/9 what\r\n\r\n") as server:
            with pytest.raises(HttpClientError, match="malformed HTTP answer"):
                await HttpClient("127.0.0.1", server.port).request("GET", "/")

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await _read_request(reader)
                await reader.read()  # until the client gives up and closes
            finally:
                writer.close()

        quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
        client = HttpClient("127.0.0.1", quiet.sockets[0].getsockname()[1])
        with pytest.raises(HttpClientError, match=r"no answer within 0\.2 s"):
            await client.request("GET", "/", timeout=0.2)
        await asyncio.sleep(0.05)  # the server sees the close
        quiet.close()

    run(main())


def test_no_more_connections_than_the_limit_however_many_requests_wait() -> None:
    async def main() -> None:
        async with Server(lambda *request: ok()) as server:
            server.delay = 0.01
            client = HttpClient("127.0.0.1", server.port, limit=3)
            answers = await asyncio.gather(*(client.request("GET", "/") for _ in range(12)))
            assert [a.status for a in answers] == [200] * 12
            await client.close()
            await asyncio.sleep(0.05)  # the server sees the closes
        assert server.connections == server.most_open == 3

    run(main())
