"""Loads, reloads and unloads while requests are queued, and the shutdown after them: every request
ends once, the counts keep them, and the repository index says what is going on."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from server_fakes import FakeBackends, wait_for, write_model
from sloserve.runtime.server import ServerState
from sloserve.runtime.service import BackgroundServer, ServeOptions

FAKE = {"backend": "fake", "max_batch_size": 1}


@pytest.fixture()
def fakes() -> FakeBackends:
    return FakeBackends()


@pytest.fixture()
def server(tmp_path: Path, fakes: FakeBackends) -> Iterator[BackgroundServer]:
    write_model(tmp_path, "held", FAKE)
    write_model(tmp_path, "fx", {"backend": "fake", "max_batch_size": 8, "scheduler": {"name": "fixed"}})
    options = ServeOptions(
        tmp_path, http_port=0, grpc_port=None, metrics_port=0, backends={"fake": fakes}, drain_timeout=20
    )
    server = BackgroundServer(options).start()
    try:
        yield server
    finally:
        for control in fakes.controls.values():
            control.gate.set()
        server.stop()


@pytest.fixture()
def client(server: BackgroundServer) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(server.http_url, concurrency=8, network_timeout=30)
    yield c
    c.close()


def _send(client: th.InferenceServerClient, model: str, value: float) -> th.InferAsyncRequest:
    x = np.full((1, 4), value, np.float32)
    inp = th.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.async_infer(model, [inp])


def _pending(server: BackgroundServer) -> int:
    return server.service.core.pending_requests


def _held_requests(client: th.InferenceServerClient, server: BackgroundServer, fakes: FakeBackends) -> list:
    """Three requests to ``held``: the first running (held by the gate), two queued behind it."""
    fakes.control("held").gate.clear()
    sent = [_send(client, "held", float(i)) for i in range(3)]
    assert fakes.control("held").started()
    wait_for(lambda: _pending(server) == 3)
    return sent


def _index(client: th.InferenceServerClient) -> dict[str, dict[str, str]]:
    return {m["name"]: m for m in client.get_model_repository_index()}


def test_a_shutdown_waits_for_the_requests_of_a_version_replaced_before_it(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends
) -> None:
    """Found by review: the replaced version's queued requests were dropped unanswered at exit."""
    sent = _held_requests(client, server, fakes)
    client.load_model("held")  # a reload: the old version keeps its three requests
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    wait_for(lambda: server.service.core.state != ServerState.READY)
    time.sleep(0.5)
    assert server.service.core.state == ServerState.DRAINING  # it waits for them (it stopped at once)
    fakes.control("held").gate.set()
    answers = [s.get_result(timeout=20).as_numpy("OUTPUT0") for s in sent]
    stopping.join(timeout=30)
    assert [a[0, 0] for a in answers] == [0.0, 1.0, 2.0]


def test_an_unload_refuses_what_a_scheduler_holds_for_a_batch_that_can_no_longer_fill(
    server: BackgroundServer, client: th.InferenceServerClient
) -> None:
    """Found by review: the fixed batcher waited for ever for its batch of 8, so the unload never
    returned and the three requests never ended."""
    sent = [_send(client, "fx", float(i)) for i in range(3)]
    wait_for(lambda: _pending(server) == 3)
    client.unload_model("fx")
    for request in sent:
        with pytest.raises(InferenceServerException) as info:
            request.get_result(timeout=10)
        assert info.value.status() == "503"
        assert "'fx' was unloaded before the request could run" in info.value.message()
    assert _index(client)["fx"]["reason"] == "unloaded"


def _metric(server: BackgroundServer, name: str, model: str) -> float:
    url = f"http://127.0.0.1:{server.service.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    prefix = f'{name}{{model="{model}",version="1"}} '
    return float(next(line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)))


def test_requests_a_replaced_version_answers_are_counted(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends
) -> None:
    """Found by review: after a reload the pending gauge fell to 0 with three requests queued, and
    their answers were counted nowhere."""
    sent = _held_requests(client, server, fakes)
    client.load_model("held")
    assert _metric(server, "nv_inference_pending_request_count", "held") == 3
    fakes.control("held").gate.set()
    for s in sent:
        s.get_result(timeout=20)
    wait_for(lambda: _pending(server) == 0)
    stats = client.get_inference_statistics("held")["model_stats"][0]["inference_stats"]
    assert stats["success"]["count"] == 3
    assert _metric(server, "nv_inference_request_success", "held") == 3


def test_the_index_says_loading_forgets_stale_failures_and_removed_models(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends
) -> None:
    """Found by review: a first load showed 'unloaded'; an unloaded model showed an old failed
    reload's reason; a failed model whose folder was removed stayed listed."""
    root = server.options.repository
    write_model(root, "slow", FAKE)
    fakes.control("slow").load_delay = 1.0
    url = f"http://{server.http_url}/v2/repository/models/slow/load"
    post = urllib.request.Request(url, data=b"", method="POST")
    loading = threading.Thread(target=lambda: urllib.request.urlopen(post, timeout=20).close())
    loading.start()
    wait_for(lambda: _index(client)["slow"]["state"] == "LOADING")
    loading.join(timeout=20)
    assert _index(client)["slow"]["state"] == "READY"

    write_model(root, "slow", FAKE | {"max_batch_size": -3})
    with pytest.raises(InferenceServerException):
        client.load_model("slow")
    assert _index(client)["slow"]["state"] == "READY"  # the old version serves on
    client.unload_model("slow")
    assert _index(client)["slow"] == {"name": "slow", "state": "UNAVAILABLE", "reason": "unloaded"}

    write_model(root, "broken", FAKE | {"max_batch_size": -3})
    with pytest.raises(InferenceServerException):
        client.load_model("broken")
    assert "max_batch_size" in _index(client)["broken"]["reason"]
    shutil.rmtree(root / "broken")
    assert "broken" not in _index(client)


def test_loads_and_unloads_are_refused_while_the_server_drains(
    server: BackgroundServer, client: th.InferenceServerClient, fakes: FakeBackends
) -> None:
    """Found by review: both were carried out during the drain (a model loaded on the way out)."""
    sent = _held_requests(client, server, fakes)
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    try:
        wait_for(lambda: server.service.core.state == ServerState.DRAINING)
        for act in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerException) as info:
                act("held")
            assert info.value.status() == "503" and "shutting down" in info.value.message()
    finally:
        fakes.control("held").gate.set()
    assert [s.get_result(timeout=20).as_numpy("OUTPUT0")[0, 0] for s in sent] == [0.0, 1.0, 2.0]
    stopping.join(timeout=30)
