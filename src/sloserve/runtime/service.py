"""Putting the server together: core + HTTP + gRPC + metrics endpoints, start-up and drain.

:func:`serve` runs until SIGTERM/SIGINT, then drains (health turns not-ready at once, queued
requests finish, then the listeners close); during start-up it stops after the model being loaded,
without loading the rest. :class:`BackgroundServer` runs the same thing on a thread with its own
event loop, for tests and benchmarks (give ports 0 for ephemeral ones; the defaults are 8000–8002).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sloserve.core.config import ConfigError
from sloserve.runtime.codec import ProtocolError
from sloserve.runtime.decode_pool import Balance, DecodePool
from sloserve.runtime.http_api import HttpApi, HttpResponse, check_method, error_response, refusal_response
from sloserve.runtime.http_server import HttpServer
from sloserve.runtime.repository import BackendFactory, ModelRepository
from sloserve.runtime.server import DEFAULT_MAX_BODY_BYTES, InferenceServer

if TYPE_CHECKING:
    from sloserve.runtime.grpc_server import GrpcServer

log = logging.getLogger("sloserve.runtime")


@dataclass(slots=True)
class ServeOptions:
    """Everything ``sloserve serve`` can set."""

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001
    """None: no gRPC front end."""
    metrics_port: int | None = 8002
    """None: no metrics endpoint."""
    models: list[str] | None = None
    """Models to load at start (None: every model in the repository)."""
    backends: Mapping[str, BackendFactory] = field(default_factory=dict)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_timeout: float = 30.0
    """Seconds a client has to send a whole request (408 after)."""
    drain_timeout: float = 30.0
    """Seconds queued requests get to finish at shutdown before they are refused."""
    decode_workers: int = 0
    """Decode infer bodies on this many worker threads (0: on the event loop)."""
    decode_balance: Balance = "load"
    """How requests pick a decode worker: ``load`` (CoFB flow scheduling) or ``connection``."""
    plan: Path | None = None
    """A plan file to deploy once the models are loaded (see :mod:`sloserve.runtime.plan_deploy`)."""
    exit_on_error: bool = True
    """A model that fails to load at start-up stops the start (Triton's ``--exit-on-error``);
    False: serve the models that loaded, the failed ones listed as UNAVAILABLE."""
    freeze_gc: bool = False
    """Take the objects alive once the models are loaded out of the cyclic garbage collector's scans
    (:func:`~sloserve.runtime.server.freeze_long_lived`). For a process that is only the server
    (``sloserve serve`` sets it), not for one that embeds it."""


class Service:
    """The running server (all front ends); start and stop on the event loop."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.core = InferenceServer(
            options.repository,
            models=options.models,
            backends=options.backends,
            max_body_bytes=options.max_body_bytes,
            freeze_gc=options.freeze_gc,
            exit_on_error=options.exit_on_error,
        )
        if options.plan is not None:  # plan hook: refused here (before listening) if not runnable
            from sloserve.runtime.plan_deploy import apply_plan, read_plan

            plan, source = read_plan(options.plan), str(options.plan)

            def deploy(repo: ModelRepository) -> None:
                apply_plan(repo, plan, source)

            self.core.before_ready = deploy
        self.decode_pool = (
            DecodePool(options.decode_workers, options.decode_balance) if options.decode_workers else None
        )
        self.http = HttpServer(
            HttpApi(self.core, self.decode_pool).handle,
            max_body_bytes=options.max_body_bytes,
            request_timeout=options.request_timeout,
            on_connection_closed=self.decode_pool.connection_closed if self.decode_pool else None,
        )
        self.grpc: GrpcServer | None = None
        self.metrics_http: HttpServer | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    async def start(self) -> None:
        """Listen first (health answers "not ready" during start-up), then load the models."""
        o = self.options
        self.http_port = await _listen("HTTP", o.host, o.http_port, self.http.start)
        if o.grpc_port is not None:
            from sloserve.runtime.grpc_server import GrpcServer

            self.grpc = GrpcServer(self.core, max_message_bytes=o.max_body_bytes)
            self.grpc_port = await _listen("gRPC", o.host, o.grpc_port, self.grpc.start)
        if o.metrics_port is not None:
            from sloserve.runtime.metrics import metrics_registry, render

            registry = metrics_registry(self.core)

            async def metrics(
                method: str, path: str, headers: Mapping[str, str], body: bytes
            ) -> HttpResponse:
                if path.split("?", 1)[0] != "/metrics":
                    return error_response("only /metrics is served here", 404)
                try:
                    check_method(method, "GET")
                except ProtocolError as exc:
                    return refusal_response(exc)
                return HttpResponse(200, render(registry), "text/plain; version=0.0.4; charset=utf-8")

            self.metrics_http = HttpServer(metrics, max_body_bytes=1 << 16)
            self.metrics_port = await _listen("metrics", o.host, o.metrics_port, self.metrics_http.start)
        log.info(
            "listening",
            extra={
                "host": o.host,
                "http": self.http_port,
                "grpc": self.grpc_port,
                "metrics": self.metrics_port,
            },
        )
        await self.core.start()

    async def stop(self) -> None:
        """Called once, at SIGTERM / SIGINT (or a failed start): drain (refuse new work, finish
        queued requests), then close the listeners. HTTP answers carry ``Connection: close`` from
        the start of the drain, so keep-alive clients leave while the listener still answers."""
        self.http.drain()
        if self.metrics_http is not None:
            self.metrics_http.drain()
        await self.core.shutdown(self.options.drain_timeout)
        await self.http.stop()
        if self.decode_pool is not None:
            self.decode_pool.close()
        if self.grpc is not None:
            await self.grpc.stop(1.0)
        if self.metrics_http is not None:
            await self.metrics_http.stop()


async def _listen(what: str, host: str, port: int, start: Callable[[str, int], Awaitable[int]]) -> int:
    """``start(host, port)``; an address that cannot be had is a :class:`ConfigError` saying which."""
    try:
        return await start(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is in the server extra
        return asyncio.new_event_loop()


def serve(options: ServeOptions) -> int:
    """Run the server until SIGTERM / SIGINT, then drain and return 0."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    service = Service(options)
    stop = asyncio.Event()

    async def main() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        starting = asyncio.ensure_future(service.start())
        try:
            await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                log.info("signal received during start-up: loading no further model")
                service.core.abandon_start()
            await starting
        except BaseException:  # e.g. a plan refused once the models are loaded: stop what started
            stopping.cancel()
            await service.stop()
            raise
        await stopping
        log.info("signal received: draining")
        await service.stop()

    try:
        loop.run_until_complete(main())
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # stopped: a second signal must not kill the exit
            signal.signal(sig, signal.SIG_IGN)
        loop.close()
    return 0


class BackgroundServer:
    """The service on a background thread with its own event loop (tests, benchmarks)."""

    def __init__(self, options: ServeOptions, *, use_uvloop: bool = True) -> None:
        self.options = options
        self.loop = _new_loop() if use_uvloop else asyncio.new_event_loop()
        self.service = Service(options)
        self._thread = threading.Thread(target=self.loop.run_forever, name="sloserve-server", daemon=True)

    def start(self, timeout: float = 120.0) -> BackgroundServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(timeout)
        return self

    def call(self, coro: object, timeout: float = 60.0) -> object:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    @property
    def _host(self) -> str:
        """The host as a URL names it (an IPv6 address in brackets)."""
        host = self.options.host
        return f"[{host}]" if ":" in host else host

    @property
    def http_url(self) -> str:
        return f"{self._host}:{self.service.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._host}:{self.service.grpc_port}"

    def stop(self, timeout: float = 60.0) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
