"""Health tells the truth during start-up and shutdown; shutdown drains requests in flight;
instances and threads change while a real ONNX model serves, without failing requests."""

from __future__ import annotations

import contextlib
import gc
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as th

from server_fakes import FakeBackend, FakeBackends, demo_model_without_slo, wait_for, write_model
from sloserve.runtime.demo.repository import build_demo_model
from sloserve.runtime.model_config import ModelConfig
from sloserve.runtime.service import BackgroundServer, ServeOptions


def _status(url: str, path: str) -> int:
    conn = http.client.HTTPConnection(url, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_health_during_startup_and_drain(tmp_path: Path) -> None:
    fakes = FakeBackends()
    loading = threading.Event()
    release = threading.Event()

    def slow_factory(model_dir: Path, config: ModelConfig, threads: int) -> FakeBackend:
        loading.set()
        release.wait(30)
        return fakes(model_dir, config, threads)

    write_model(tmp_path, "m", {"backend": "slow", "max_batch_size": 1})
    server = BackgroundServer(
        ServeOptions(
            tmp_path, http_port=0, grpc_port=None, metrics_port=None, backends={"slow": slow_factory}
        )
    )
    starter = threading.Thread(target=server.start)
    starter.start()
    try:
        assert loading.wait(30)
        url = f"127.0.0.1:{server.service.http_port}"
        assert _status(url, "/v2/health/live") == 200
        assert _status(url, "/v2/health/ready") == 503  # still loading models
        release.set()
        starter.join(30)
        assert _status(url, "/v2/health/ready") == 200
        control = fakes.control("m")
        control.gate.clear()
        client = th.InferenceServerClient(url)
        inp = th.InferInput("INPUT0", [1, 2], "FP32")
        inp.set_data_from_numpy(np.ones((1, 2), np.float32))
        in_flight = client.async_infer("m", [inp])
        assert control.started()
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        wait_for(lambda: not server.service.core.ready)
        assert _status(url, "/v2/health/ready") == 503  # draining
        control.gate.set()
        assert in_flight.get_result().as_numpy("OUTPUT0").shape == (1, 2)  # drained, not failed
        stopper.join(30)
        assert not stopper.is_alive()
    finally:
        release.set()
        server.stop()


def test_resize_while_serving_real_model(tmp_path: Path) -> None:
    demo_model_without_slo("identity", tmp_path)
    with BackgroundServer(ServeOptions(tmp_path, http_port=0, grpc_port=None, metrics_port=None)) as server:
        client = th.InferenceServerClient(server.http_url, concurrency=4)
        loop = server.service.core.repository.models["identity"].loop
        requests = []
        changes = [
            lambda: loop.set_instance_count(2),
            lambda: loop.set_instance_threads(0, 2),
            lambda: loop.set_instance_count(1),
            lambda: loop.set_instance_threads(0, 1),
        ]
        for i in range(40):
            inp = th.InferInput("INPUT0", [1, 3], "FP32")
            inp.set_data_from_numpy(np.full((1, 3), i, np.float32))
            requests.append(client.async_infer("identity", [inp]))
            if i % 10 == 5:
                server.loop.call_soon_threadsafe(changes[i // 10])
        for i, req in enumerate(requests):
            assert req.get_result().as_numpy("OUTPUT0")[0, 0] == i
        wait_for(lambda: len(loop.views) == 1 and loop.views[0].cores == 1)
        client.close()


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """``proc`` for the block; after it, killed if still running, waited for, its pipes closed."""
    with proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def test_cli_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    build_demo_model("identity", tmp_path)
    cmd = [sys.executable, "-m", "sloserve", "serve", str(tmp_path), "--http-port", "0", "--grpc-port", "0"]
    with _reaped(subprocess.Popen([*cmd, "--metrics-port", "-1"], stderr=subprocess.PIPE, text=True)) as proc:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            record = json.loads(line)  # structured logs: one JSON object per line
            if record["msg"] == "listening":
                port = record["http"]
            if record["msg"] == "server ready":
                # the server's own process takes its long-lived objects out of the GC's scans
                assert record["gc_frozen_objects"] > 10_000
                break
        assert port is not None
        client = th.InferenceServerClient(f"127.0.0.1:{port}")
        inp = th.InferInput("INPUT0", [1, 2], "FP32")
        inp.set_data_from_numpy(np.ones((1, 2), np.float32))
        assert client.infer("identity", [inp]).as_numpy("OUTPUT0").shape == (1, 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert any(json.loads(line)["msg"] == "server stopped" for line in proc.stderr)


_SLOW_START = """
import sys, time
from pathlib import Path
from typing import Any
from server_fakes import FakeBackends
from sloserve.runtime.service import ServeOptions, serve
fakes = FakeBackends()
def slow(model_dir, config, threads):
    print("loading", model_dir.name, flush=True)
    time.sleep(2.0)
    return fakes(model_dir, config, threads)
options = ServeOptions(Path(sys.argv[1]), http_port=0, grpc_port=None, metrics_port=None,
                       backends={"slow": slow})
sys.exit(serve(options))
"""


def test_sigterm_during_start_up_stops_after_the_model_loading_now(tmp_path: Path) -> None:
    """Told to stop while loading its models, the server finishes the model it is loading and loads
    no other (it used to load all eight, 16 s here, before it stopped)."""
    for i in range(8):
        write_model(tmp_path, f"m{i}", {"backend": "slow", "max_batch_size": 1})
    here = str(Path(__file__).parent)  # for server_fakes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", _SLOW_START, str(tmp_path)]
    with _reaped(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("loading m")
        told = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - told < 8.0  # the load under way (2 s), not the seven after it
        assert proc.stdout.read().count("loading") == 0


def test_freeze_gc_freezes_the_heap_once_ready(tmp_path: Path) -> None:
    """With ``freeze_gc`` the objects alive once the models are loaded are frozen (a full collection
    then skips them); an embedding process's heap is left alone by default."""
    write_model(tmp_path, "m", {"backend": "fake", "max_batch_size": 1})
    gc.unfreeze()
    try:
        for freeze in (False, True):
            options = ServeOptions(
                tmp_path,
                http_port=0,
                grpc_port=None,
                metrics_port=None,
                backends={"fake": FakeBackends()},
                freeze_gc=freeze,
            )
            server = BackgroundServer(options)
            server.start()
            try:
                if freeze:
                    assert gc.get_freeze_count() > 10_000
                else:
                    assert gc.get_freeze_count() == 0
                client = th.InferenceServerClient(f"127.0.0.1:{server.service.http_port}")
                inp = th.InferInput("INPUT0", [1, 2], "FP32")
                inp.set_data_from_numpy(np.ones((1, 2), np.float32))
                assert client.infer("m", [inp]).as_numpy("OUTPUT0").shape == (1, 2)
                client.close()
            finally:
                server.stop()
    finally:
        gc.unfreeze()


def test_an_address_that_cannot_be_had_is_refused_saying_which(tmp_path: Path) -> None:
    """A port in use (for each listener) or a host that is not this machine's: an error naming the
    listener and the address, exit status 2 from the command line, not a traceback."""
    import socket

    import pytest

    from sloserve.core.config import ConfigError

    build_demo_model("identity", tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = (("HTTP", (port, None, None)), ("gRPC", (0, port, None)), ("metrics", (0, None, port)))
        for what, ports in cases:
            options = ServeOptions(tmp_path, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
            server = BackgroundServer(options)
            with pytest.raises(ConfigError, match=rf"cannot listen for {what} on 127.0.0.1:{port}: "):
                server.start()
            server.stop()
    argv = ["serve", str(tmp_path), "--host", "256.1.1.1", "--grpc-port", "-1", "--metrics-port", "-1"]
    command = [sys.executable, "-m", "sloserve", *argv]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "cannot listen for HTTP on 256.1.1.1:8000: " in run.stderr


def test_a_model_that_fails_to_load_stops_the_start_unless_told_to_serve_the_rest(tmp_path: Path) -> None:
    """As Triton's ``--exit-on-error``: a broken config stops ``sloserve serve`` with status 2 and an
    error naming each model and the field at fault (it used to serve the others, the broken model
    only logged); ``--no-exit-on-error`` serves the models that loaded, the others UNAVAILABLE."""
    build_demo_model("identity", tmp_path)
    write_model(tmp_path, "broken", {"backend": "onnxruntime", "max_batch_size": 4, "slo_ms": -4})
    base = [sys.executable, "-m", "sloserve", "serve", str(tmp_path), "--http-port", "0", "--grpc-port", "-1"]
    base += ["--metrics-port", "-1"]
    run = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("sloserve: error: 1 model(s) failed to load, so the server stops")
    assert "broken: " in error and "slo_ms: Input should be greater than 0" in error
    assert "--no-exit-on-error" in error
    assert not any(json.loads(line).get("msg") == "server ready" for line in run.stderr.splitlines()[:-1])
    only = ["--model", "identity", "--model", "nope"]
    missing = subprocess.run([*base, *only], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nope: no model 'nope' in the repository" in missing.stderr
    with _reaped(subprocess.Popen([*base, "--no-exit-on-error"], stderr=subprocess.PIPE, text=True)) as proc:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            record = json.loads(line)
            port = record.get("http", port)
            if record["msg"] == "server ready":
                assert record["models"] == ["identity"]
                break
        client = th.InferenceServerClient(f"127.0.0.1:{port}")
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["identity"]["state"] == "READY"
        assert index["broken"]["state"] == "UNAVAILABLE" and "slo_ms" in index["broken"]["reason"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_grpcs_plain_text_messages_are_off_unless_asked_for(tmp_path: Path, monkeypatch: Any) -> None:
    """Found by review: out of file descriptors, gRPC's C core wrote plain-text lines ("File
    descriptor limit reached. Retrying.") into the JSON-lines log once a second. GRPC_VERBOSITY
    is read when grpc is imported, so ``serve`` sets it before starting the service."""
    import sloserve.runtime.service as service
    from sloserve.cli import main

    seen: list[str | None] = []
    monkeypatch.setattr(service, "serve", lambda options: seen.append(os.environ.get("GRPC_VERBOSITY")) or 0)
    argv = ["serve", str(tmp_path), "--log-level", "error"]
    for given in (None, "ERROR"):
        if given is None:
            monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
        else:
            monkeypatch.setenv("GRPC_VERBOSITY", given)
        assert main(argv) == 0
    assert seen == ["NONE", "ERROR"]  # off by default; the operator's own setting is kept
