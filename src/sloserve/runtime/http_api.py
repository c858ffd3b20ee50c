"""The Open Inference Protocol's HTTP/REST routes, independent of the HTTP stack carrying them.

:meth:`HttpApi.handle` takes a method, a path, lower-cased headers and the body, and returns an
:class:`HttpResponse`. :mod:`sloserve.runtime.http_server` carries it over raw asyncio + httptools;
``benchmarks/http_stack.py`` carries the same object over other stacks to compare them.

Routes: ``GET /v2``, ``/v2/health/live|ready``, ``/v2/models/{m}[/versions/{v}]`` (metadata),
``.../ready``, ``.../config``, ``.../stats``, ``GET /v2/models/stats``, ``POST .../infer``,
``POST /v2/repository/index``, ``POST /v2/repository/models/{m}/load|unload``, and Triton's system
shared-memory extension (:mod:`sloserve.runtime.shared_memory`): ``GET
/v2/systemsharedmemory[/region/{name}]/status``, ``POST /v2/systemsharedmemory/region/{name}/register``
(body ``{"key", "offset", "byte_size"}``), ``POST /v2/systemsharedmemory[/region/{name}]/unregister``,
and Triton's logging extension (:mod:`sloserve.runtime.log_settings`): ``GET|POST /v2/logging``.

A body sent with ``Content-Encoding: gzip`` or ``deflate`` (``tritonclient``'s
``request_compression_algorithm``) is decompressed once its route is found, by the routes that read
a body, to at most the server's body limit (413 beyond it); other codings are refused with 415.
Responses are not compressed (``Accept-Encoding`` allows the identity coding).
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from sloserve.core.config import ConfigError
from sloserve.runtime import log_settings
from sloserve.runtime.clock import seconds_since_received
from sloserve.runtime.codec import ProtocolError, clipped, decode_http_infer, encode_http_infer, json_document
from sloserve.runtime.decode_pool import DecodePool
from sloserve.runtime.repository import check_repository_parameters
from sloserve.runtime.server import TIMEOUT_HEADER, InferenceServer

log = logging.getLogger("sloserve.runtime")

HEADER_LENGTH = "inference-header-content-length"

_WINDOW_BITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib's ``wbits`` for each content coding taken (HTTP's ``deflate`` is the zlib format)."""


def content_coding(headers: Mapping[str, str]) -> str | None:
    """The request's ``Content-Encoding`` (None for none, or ``identity``)."""
    coding = headers.get("content-encoding", "").strip().lower()
    return None if coding in ("", "identity") else coding


def decoded_body(coding: str, body: bytes, limit: int) -> bytes:
    """``body`` decompressed from ``coding``; 415 for a coding not taken, 413 when it
    decompresses to more than ``limit`` bytes, 400 when it is not what its coding says."""
    bits = _WINDOW_BITS.get(coding)
    if bits is None:
        raise ProtocolError(f"Content-Encoding {coding!r} is not supported; use gzip or deflate", 415)
    parts: list[bytes] = []
    left, rest = limit, body
    while True:  # gzip allows several members, one after the other
        inflater = zlib.decompressobj(bits)
        try:
            part = inflater.decompress(rest, left + 1)
        except zlib.error as exc:
            raise ProtocolError(f"the body is not valid {coding} data: {exc}") from None
        if len(part) > left:
            raise ProtocolError(f"the body decompresses to more than the limit of {limit} bytes", 413)
        if not inflater.eof:
            raise ProtocolError(f"the body is not valid {coding} data: it is truncated")
        parts.append(part)
        left -= len(part)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if coding == "deflate":
            raise ProtocolError("the body is not valid deflate data: bytes follow its end")


@dataclass(slots=True)
class HttpResponse:
    """What a route returns; the stack adds ``content-length`` and connection headers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(doc: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, json.dumps(doc, separators=(",", ":")).encode())


def error_response(message: str, status: int) -> HttpResponse:
    return json_response({"error": message}, status)


def _empty(ok: bool) -> HttpResponse:
    return HttpResponse(200 if ok else 503, b"", "text/plain")


class HttpApi:
    """Routes requests to an :class:`InferenceServer`; see the module docstring."""

    def __init__(self, server: InferenceServer, decode_pool: DecodePool | None = None) -> None:
        self.server = server
        self.decode_pool = decode_pool
        """When set, infer bodies are decoded on its workers (CoFB's load-balanced decoding)."""

    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> HttpResponse:
        """Called once per HTTP request; never raises."""
        parts = [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")]
        model: str | None = None
        try:
            if parts[0] != "v2" or "" in parts:
                raise ProtocolError(f"no route for {method} {path}", 404)
            rest = parts[1:]
            if len(rest) >= 2 and rest[0] == "models" and rest[1] != "stats":
                model = rest[1]
            return await self._route(method, rest, headers, body)
        except ProtocolError as exc:
            if exc.status == 400 and model is not None and not exc.counted:
                self.server.count_bad_request(model)
            return refusal_response(exc)
        except ConfigError as exc:
            return error_response(str(exc), 400)
        except Exception as exc:
            log.exception("internal error on %s %s", method, path)
            return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)

    async def _content(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """Called by the routes that read the body, once the route is found: the body decoded from
        its ``Content-Encoding`` (a ``GET`` with the header and no body is routed as any other)."""
        coding = content_coding(headers)
        if coding is None:
            return body
        # inflating may take long (a 64 KB body can hold 64 MiB): off the loop
        return await asyncio.to_thread(decoded_body, coding, body, self.server.max_body_bytes)

    async def _route(
        self, method: str, rest: list[str], headers: Mapping[str, str], body: bytes
    ) -> HttpResponse:
        server = self.server
        if not rest:
            check_method(method, "GET")
            return json_response(server.server_metadata())
        head = rest[0]
        if head == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            check_method(method, "GET")
            return _empty(server.live if rest[1] == "live" else server.ready)
        if head == "models":
            if rest[1:] == ["stats"]:
                check_method(method, "GET")
                return json_response(server.model_stats())
            if len(rest) < 2:
                raise ProtocolError("no route: a model name is needed after /v2/models/", 404)
            name, tail = rest[1], rest[2:]
            version = None
            if len(tail) >= 2 and tail[0] == "versions":
                version, tail = tail[1], tail[2:]
            return await self._model_route(method, name, version, tail, headers, body)
        if head == "repository":
            if rest[1:] == ["index"]:
                check_method(method, "POST")
                doc = _repository_body(await self._content(headers, body), "index", {"ready": bool})
                ready = doc.get("ready", False)
                return json_response(server.repository.index(ready_only=ready))
            if len(rest) == 4 and rest[1] == "models" and rest[3] in ("load", "unload"):
                check_method(method, "POST")
                _repository_body(await self._content(headers, body), rest[3], {"parameters": dict})
                if rest[3] == "load":
                    await server.repository.load(rest[2])
                else:
                    await server.repository.unload(rest[2])
                return HttpResponse(200, b"")
        if head == "systemsharedmemory":
            return await self._shared_memory_route(method, rest[1:], headers, body)
        if rest == ["logging"]:
            check_method(method, "GET", "POST")
            if method == "POST":
                doc = json_document(await self._content(headers, body), "log settings", once_each=True)
                return json_response(log_settings.update(doc))
            return json_response(log_settings.settings_document())
        raise ProtocolError(f"no route for {method} /v2/{'/'.join(rest)}", 404)

    async def _shared_memory_route(
        self, method: str, rest: list[str], headers: Mapping[str, str], body: bytes
    ) -> HttpResponse:
        """``[region/{name}/]status|register|unregister`` under ``/v2/systemsharedmemory``."""
        registry = self.server.shared_memory
        name: str | None = None
        if len(rest) == 3 and rest[0] == "region":
            name, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else None
        if action == "status":
            check_method(method, "GET")
            return json_response(registry.status(name))
        if action == "unregister":
            check_method(method, "POST")
            registry.unregister(name)
            return HttpResponse(200, b"")
        if action == "register" and name is not None:
            check_method(method, "POST")
            doc = json_document(await self._content(headers, body), "register request body", once_each=True)
            if not isinstance(doc, dict) or not {"key", "byte_size"} <= doc.keys():
                raise ProtocolError(
                    "register request body must be a JSON object with 'key', 'offset' and 'byte_size'"
                )
            unknown = set(doc) - {"key", "offset", "byte_size"}
            if unknown:
                raise ProtocolError(f"unknown field(s) in register request: {sorted(unknown)}")
            registry.register(name, doc["key"], doc.get("offset", 0), doc["byte_size"])
            return HttpResponse(200, b"")
        raise ProtocolError(f"no route for {method} /v2/systemsharedmemory/{'/'.join(rest)}", 404)

    async def _model_route(
        self,
        method: str,
        name: str,
        version: str | None,
        tail: list[str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> HttpResponse:
        server = self.server
        if tail == ["infer"]:
            check_method(method, "POST")
            return await self._infer(name, version, headers, body)
        check_method(method, "GET")
        if not tail:
            return json_response(server.model_metadata(name, version))
        if tail == ["ready"]:
            return _empty(server.model_ready(name, version))
        if tail == ["config"]:
            return json_response(server.model_config(name, version))
        if tail == ["stats"]:
            return json_response(server.model_stats(name, version))
        raise ProtocolError(f"no route for {method} .../models/{name}/{'/'.join(tail)}", 404)

    async def _infer(
        self, name: str, version: str | None, headers: Mapping[str, str], body: bytes
    ) -> HttpResponse:
        self.server.model(name, version)  # 404 before decoding a body meant for no model
        body = await self._content(headers, body)
        raw_length = headers.get(HEADER_LENGTH)
        header_length = None
        if raw_length is not None:
            if not (raw_length.isascii() and raw_length.isdigit() and len(raw_length) <= 18):
                raise ProtocolError(
                    f"Inference-Header-Content-Length must be at most 18 digits, got {clipped(raw_length)!r}"
                )
            header_length = int(raw_length)
        shm = self.server.shared_memory
        if self.decode_pool is not None:
            request = await self.decode_pool.run(
                len(body), lambda: decode_http_infer(body, header_length, shm)
            )
        else:
            request = decode_http_infer(body, header_length, shm)
        model, outputs = await self.server.infer(
            name,
            version,
            request,
            header_timeout_ms=headers.get(TIMEOUT_HEADER),
            payload_bytes=len(body),
            waited=seconds_since_received(),
        )
        data, json_length = encode_http_infer(
            model.name, model.version, request, outputs, [s.name for s in model.outputs]
        )
        if json_length is None:
            return HttpResponse(200, data)
        return HttpResponse(
            200, data, "application/octet-stream", [("Inference-Header-Content-Length", str(json_length))]
        )


def _repository_body(body: bytes, what: str, fields: Mapping[str, type]) -> dict[str, Any]:
    """The JSON body of a repository ``what`` request (empty: ``{}``), its ``parameters`` checked
    (:func:`~sloserve.runtime.repository.check_repository_parameters`)."""
    doc = json_document(body, f"{what} request body", once_each=True) if body.strip() else {}
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} request body must be a JSON object")
    for name, value in doc.items():
        if name not in fields:
            raise ProtocolError(f"{what} request: unknown field {name!r}; expected some of {sorted(fields)}")
        if not isinstance(value, fields[name]):
            raise ProtocolError(f"{what} request: {name!r} must be {fields[name].__name__}, got {value!r}")
    check_repository_parameters(doc.get("parameters", {}), what)
    return doc


def refusal_response(exc: ProtocolError) -> HttpResponse:
    """The response for a refused request (with ``Allow`` for a 405)."""
    response = error_response(exc.message, exc.status)
    if exc.allow:
        response.headers.append(("Allow", exc.allow))
    return response


def check_method(got: str, *want: str) -> None:
    """405 (with ``Allow``) unless ``got`` is one of ``want`` (HEAD counts as GET: answered without
    a body)."""
    if got not in want and not (got == "HEAD" and "GET" in want):
        allow = ", ".join(m for w in want for m in ((w, "HEAD") if w == "GET" else (w,)))
        raise ProtocolError(f"method {got} not allowed here; use {' or '.join(want)}", 405, allow=allow)
