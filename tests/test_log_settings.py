"""Triton's logging extension: the log settings read and changed while the server runs, over HTTP
and gRPC with Triton's own clients; bad settings refused naming them, with nothing changed."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator

import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from server_fakes import FakeBackends, write_model
from sloserve.runtime import log_settings
from sloserve.runtime.log_settings import LogSettings
from sloserve.runtime.logs import configure_logging
from sloserve.runtime.service import BackgroundServer, ServeOptions

DEFAULT = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "json",
}


class _Records(logging.Handler):
    """Keeps the records that pass the extension's filter, as ``configure_logging``'s handler would
    write them."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(log_settings.ADMIT)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.levelname)


@pytest.fixture
def records() -> Iterator[_Records]:
    """The ``sloserve`` logger with a recording handler; its level, handlers and the settings are
    put back after the test."""
    logger = logging.getLogger(log_settings.LOGGER)
    level, handlers, propagate = logger.level, logger.handlers[:], logger.propagate
    handler = _Records()
    logger.handlers[:] = [handler]
    logger.propagate = False
    log_settings.apply(LogSettings())
    try:
        yield handler
    finally:
        log_settings.apply(LogSettings())
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    write_model(root, "m", {"backend": "fake", "max_batch_size": 1})
    options = ServeOptions(
        root, http_port=0, grpc_port=0, metrics_port=None, backends={"fake": FakeBackends()}
    )
    with BackgroundServer(options) as s:
        yield s


def _log_each_level() -> None:
    log = logging.getLogger("sloserve.runtime")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")


def test_switches_decide_what_is_written(records: _Records) -> None:
    _log_each_level()
    assert records.seen == ["INFO", "WARNING", "ERROR"]
    log_settings.update({"log_info": False, "log_error": False, "log_verbose_level": 2})
    records.seen.clear()
    _log_each_level()
    assert records.seen == ["DEBUG", "WARNING"]  # each level on its own switch, as in Triton
    log_settings.update({"log_warning": False, "log_verbose_level": 0})
    assert logging.getLogger("sloserve").level > logging.CRITICAL  # nothing admitted: none made


def test_log_level_option_means_that_level_and_above(records: _Records) -> None:
    assert LogSettings.from_level("debug").log_verbose_level == 1
    assert LogSettings.from_level("info") == LogSettings()
    error = LogSettings.from_level("error")
    assert (error.log_info, error.log_warning, error.log_error) == (False, False, True)
    logger = logging.getLogger(log_settings.LOGGER)
    configure_logging("warning")  # as ``sloserve serve --log-level warning``
    assert log_settings.settings_document() == {**DEFAULT, "log_info": False}
    assert logger.level == logging.WARNING and log_settings.ADMIT in logger.handlers[0].filters


def test_http_read_and_change(server: BackgroundServer, records: _Records) -> None:
    client = th.InferenceServerClient(server.http_url)
    try:
        assert "logging" in client.get_server_metadata()["extensions"]
        assert client.get_log_settings() == DEFAULT
        assert client.update_log_settings({"log_info": False}) == {**DEFAULT, "log_info": False}
        _log_each_level()
        assert records.seen == ["WARNING", "ERROR"]
        assert client.get_log_settings()["log_info"] is False
    finally:
        client.close()


def test_grpc_read_and_change(server: BackgroundServer, records: _Records) -> None:
    client = tg.InferenceServerClient(server.grpc_url)
    try:
        assert client.get_log_settings(as_json=True)["settings"]["log_format"] == {"string_param": "json"}
        got = client.update_log_settings({"log_verbose_level": 3, "log_error": False}, as_json=True)
        assert got["settings"]["log_verbose_level"] == {"uint32_param": 3}
        assert got["settings"]["log_error"] == {"bool_param": False}
        _log_each_level()
        assert records.seen == ["DEBUG", "INFO", "WARNING"]
        with pytest.raises(InferenceServerException) as err:
            client.update_log_settings({"log_file": "/tmp/elsewhere.log"})
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "'log_file'" in err.value.message()
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"log_info": false, "log_file": "/etc/cron.d/x"}', "'log_file' can only be ''"),
        (b'{"log_format": "ISO8601"}', "'log_format' can only be 'json'"),
        (b'{"log_info": "no"}', "'log_info' must be a boolean, got 'no'"),
        (
            b'{"log_verbose_level": true}',
            "'log_verbose_level' must be an integer from 0 to 4294967295, got True",
        ),
        (b'{"log_verbose_level": -1}', "must be an integer from 0 to 4294967295, got -1"),
        (b'{"log_verbose_level": 1.5}', "got 1.5"),
        (b'{"log_verbose_level": 4294967296}', "got 4294967296"),  # gRPC could not answer it
        (b'{"log_colour": "red"}', "unknown log setting 'log_colour'"),
        (b'{"log_info": "x", "log_info": false}', "duplicate key 'log_info'"),  # the last won
        pytest.param(b'{"log_info": "' + b"a" * 100_000 + b'"}', "got 'aaaa", id="100 kB value"),
        (b"[1]", "must be a JSON object"),
        (b"{", "log settings"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(
    server: BackgroundServer, records: _Records, body: bytes, said: str
) -> None:
    conn = http.client.HTTPConnection(server.http_url, timeout=10)
    try:
        conn.request("POST", "/v2/logging", body)
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        assert resp.status == 400 and said in doc["error"], doc["error"][:300]
        assert len(doc["error"]) < 300  # a 100 kB value is not echoed whole
    finally:
        conn.close()
    assert log_settings.settings_document() == DEFAULT  # the good half of a bad request was not applied


def test_other_methods_get_405_with_allow(server: BackgroundServer) -> None:
    conn = http.client.HTTPConnection(server.http_url, timeout=10)
    try:
        conn.request("DELETE", "/v2/logging")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 405 and resp.getheader("Allow") == "GET, HEAD, POST"
    finally:
        conn.close()
