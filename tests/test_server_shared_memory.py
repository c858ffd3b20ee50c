"""Triton's system shared-memory extension with Triton's own clients (HTTP and gRPC): register,
status, infer with inputs and outputs in shared memory, unregister (also while a request that reads
the region is in flight), and the bad cases, each a clear 4xx with the server still serving."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from server_fakes import FakeBackends, demo_model_without_slo, wait_for, write_model
from sloserve.runtime.codec import ProtocolError, ShmRef
from sloserve.runtime.service import BackgroundServer, ServeOptions
from sloserve.runtime.shared_memory import SystemSharedMemory

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory")

Region = Any  # tritonclient's SharedMemoryRegion handle
MakeRegion = Callable[[int], tuple[Region, str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: FakeBackends) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    demo_model_without_slo("identity", root)
    write_model(root, "gated", {"backend": "fake", "max_batch_size": 4})
    options = ServeOptions(root, http_port=0, grpc_port=0, metrics_port=None, backends={"fake": fakes})
    with BackgroundServer(options) as s:
        yield s


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(server.http_url, concurrency=2)
    yield c
    c.unregister_system_shared_memory()  # every region: the next test starts clean
    c.close()


@pytest.fixture
def grpc_client(server: BackgroundServer) -> Iterator[tg.InferenceServerClient]:
    c = tg.InferenceServerClient(server.grpc_url)
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def make_region() -> Iterator[MakeRegion]:
    """Create POSIX shared-memory objects (unique keys); all destroyed after the test."""
    made: list[Region] = []

    def make(byte_size: int) -> tuple[Region, str]:
        key = f"/sloserve-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        handle = shm.create_shared_memory_region(key.lstrip("/"), key, byte_size)
        made.append(handle)
        return handle, key

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def _data(n: int = 16, rows: int = 1, start: float = 0.0) -> np.ndarray:
    return (np.arange(rows * n, dtype=np.float32) + start).reshape(rows, n)


def _status_code(exc: InferenceServerException) -> str:
    return str(exc.status())


def _http_serves(client: th.InferenceServerClient) -> None:
    inp = th.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(np.full((1, 4), 7.0, dtype=np.float32))
    out = client.infer("identity", [inp]).as_numpy("OUTPUT0")
    assert out is not None and out.tolist() == [[7.0] * 4]


# -- HTTP --------------------------------------------------------------------------------------


def test_http_register_status_infer_unregister(
    http: th.InferenceServerClient, make_region: MakeRegion
) -> None:
    assert "system_shared_memory" in http.get_server_metadata()["extensions"]
    x = _data()
    in_handle, in_key = make_region(x.nbytes)
    out_handle, out_key = make_region(x.nbytes)
    shm.set_shared_memory_region(in_handle, [x])
    http.register_system_shared_memory("in", in_key, x.nbytes)
    http.register_system_shared_memory("out", out_key, x.nbytes)
    status = sorted(http.get_system_shared_memory_status(), key=lambda r: r["name"])
    assert status == [
        {"name": "in", "key": in_key, "offset": 0, "byte_size": x.nbytes},
        {"name": "out", "key": out_key, "offset": 0, "byte_size": x.nbytes},
    ]
    assert http.get_system_shared_memory_status("in") == [status[0]]

    inp = th.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_shared_memory("in", x.nbytes)
    out = th.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("out", x.nbytes)
    result = http.infer("identity", [inp], outputs=[out])
    entry = result.get_output("OUTPUT0")
    assert entry == {
        "name": "OUTPUT0",
        "datatype": "FP32",
        "shape": [1, 16],
        "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": x.nbytes},
    }  # no data in the response: it is in the region
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [1, 16]), x)

    # input in shared memory, output in the response (binary, then JSON)
    for binary in (True, False):
        result = http.infer("identity", [inp], outputs=[th.InferRequestedOutput("OUTPUT0", binary)])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)

    # the client changes the region's contents: the next request reads the new values
    shm.set_shared_memory_region(in_handle, [x * 2])
    np.testing.assert_array_equal(http.infer("identity", [inp]).as_numpy("OUTPUT0"), x * 2)

    http.unregister_system_shared_memory("in")
    assert [r["name"] for r in http.get_system_shared_memory_status()] == ["out"]
    http.unregister_system_shared_memory()
    assert http.get_system_shared_memory_status() == []


def test_http_offsets_within_one_object(http: th.InferenceServerClient, make_region: MakeRegion) -> None:
    """A region at an offset of its object, tensors at offsets of the region, a client batch of 3."""
    x = _data(rows=3, start=1.0)
    handle, key = make_region(4096 + 2 * x.nbytes + 64)
    shm.set_shared_memory_region(handle, [x], offset=4096 + 64)
    http.register_system_shared_memory("big", key, 2 * x.nbytes + 64, offset=4096)
    inp = th.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_shared_memory("big", x.nbytes, offset=64)
    out = th.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("big", x.nbytes, offset=64 + x.nbytes)
    http.infer("identity", [inp], outputs=[out])
    got = shm.get_contents_as_numpy(handle, np.float32, list(x.shape), offset=4096 + 64 + x.nbytes)
    np.testing.assert_array_equal(got, x)


def test_http_bad_cases_are_clear_4xx(http: th.InferenceServerClient, make_region: MakeRegion) -> None:
    x = _data()
    handle, key = make_region(x.nbytes)
    shm.set_shared_memory_region(handle, [x])

    def refused(call: Callable[[], object], status: str, *words: str) -> None:
        with pytest.raises(InferenceServerException) as err:
            call()
        assert _status_code(err.value) == status, err.value.message()
        for word in words:
            assert word in (err.value.message() or ""), err.value.message()
        _http_serves(http)

    missing = f"/sloserve-test-missing-{uuid.uuid4().hex[:8]}"
    refused(lambda: http.register_system_shared_memory("r", missing, 64), "400", "no shared memory object")
    refused(lambda: http.register_system_shared_memory("r", key, x.nbytes + 1), "400", "runs past the end")
    http.register_system_shared_memory("r", key, x.nbytes)
    refused(lambda: http.register_system_shared_memory("r", key, x.nbytes), "400", "already registered")
    refused(lambda: http.get_system_shared_memory_status("nope"), "404", "nope")

    def infer_from(region: str, byte_size: int, offset: int = 0) -> object:
        inp = th.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_shared_memory(region, byte_size, offset)
        return http.infer("identity", [inp])

    refused(lambda: infer_from("nope", x.nbytes), "400", "'nope' is not registered", "INPUT0")
    refused(lambda: infer_from("r", x.nbytes - 4), "400", "does not match shape [1, 16] FP32", "INPUT0")
    refused(lambda: infer_from("r", x.nbytes, offset=4), "400", "runs past the end of shared memory region")

    def infer_into(region: str, byte_size: int) -> object:
        inp = th.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = th.InferRequestedOutput("OUTPUT0")
        out.set_shared_memory(region, byte_size)
        return http.infer("identity", [inp], outputs=[out])

    refused(lambda: infer_into("nope", x.nbytes), "400", "'nope' is not registered", "OUTPUT0")
    before = _stats(http, "identity")
    with pytest.raises(InferenceServerException, match="too small for the output of shape") as err:
        infer_into("r", x.nbytes - 4)
    assert _status_code(err.value) == "400" and "OUTPUT0" in (err.value.message() or "")
    after = _stats(http, "identity")  # one request, one failure (it was counted a success and a failure)
    assert after["success"]["count"] - before["success"]["count"] == 0
    assert after["fail"]["count"] - before["fail"]["count"] == 1
    assert after["compute_infer"]["count"] - before["compute_infer"]["count"] == 1  # the model ran it
    # unregistered regions are gone for inference too
    http.unregister_system_shared_memory("r")
    refused(lambda: infer_from("r", x.nbytes), "400", "'r' is not registered")


def test_unregister_while_a_request_reads_the_region(
    server: BackgroundServer, fakes: FakeBackends, http: th.InferenceServerClient, make_region: MakeRegion
) -> None:
    """The request read its input when it was decoded: unregistering while its batch runs changes
    nothing; the answer has the right data."""
    control = fakes.control("gated")
    x = _data(start=5.0)
    handle, key = make_region(x.nbytes)
    shm.set_shared_memory_region(handle, [x])
    http.register_system_shared_memory("held", key, x.nbytes)
    inp = th.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_shared_memory("held", x.nbytes)
    control.gate.clear()
    try:
        pending = http.async_infer("gated", [inp])
        assert control.started()  # the batch is running
        http.unregister_system_shared_memory("held")
        assert http.get_system_shared_memory_status() == []
    finally:
        control.gate.set()
    np.testing.assert_array_equal(pending.get_result().as_numpy("OUTPUT0"), x)
    assert len(server.service.core.shared_memory) == 0


# -- gRPC --------------------------------------------------------------------------------------


def test_grpc_register_status_infer_unregister(
    grpc_client: tg.InferenceServerClient, http: th.InferenceServerClient, make_region: MakeRegion
) -> None:
    x = _data(rows=2, start=3.0)
    in_handle, in_key = make_region(x.nbytes)
    out_handle, out_key = make_region(x.nbytes)
    shm.set_shared_memory_region(in_handle, [x])
    grpc_client.register_system_shared_memory("in", in_key, x.nbytes)
    grpc_client.register_system_shared_memory("out", out_key, x.nbytes)
    status = grpc_client.get_system_shared_memory_status().regions
    assert set(status) == {"in", "out"}
    region = status["in"]
    assert (region.name, region.key, region.offset, region.byte_size) == ("in", in_key, 0, x.nbytes)
    one = grpc_client.get_system_shared_memory_status("out")
    assert list(one.regions) == ["out"] and one.regions["out"].key == out_key
    # one registry for both front ends
    assert sorted(r["name"] for r in http.get_system_shared_memory_status()) == ["in", "out"]

    inp = tg.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_shared_memory("in", x.nbytes)
    out = tg.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("out", x.nbytes)
    result = grpc_client.infer("identity", [inp], outputs=[out])
    response = result.get_response()
    assert len(response.raw_output_contents) == 0
    tensor = result.get_output("OUTPUT0")
    assert list(tensor.shape) == [2, 16] and tensor.datatype == "FP32"
    assert tensor.parameters["shared_memory_region"].string_param == "out"
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [2, 16]), x)

    # input in shared memory, output in the response; and the reverse
    plain = grpc_client.infer("identity", [inp])
    np.testing.assert_array_equal(plain.as_numpy("OUTPUT0"), x)
    sent = tg.InferInput("INPUT0", list(x.shape), "FP32")
    sent.set_data_from_numpy(x + 1)
    grpc_client.infer("identity", [sent], outputs=[out])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [2, 16]), x + 1)

    grpc_client.unregister_system_shared_memory("in")
    assert list(grpc_client.get_system_shared_memory_status().regions) == ["out"]
    grpc_client.unregister_system_shared_memory()
    assert len(grpc_client.get_system_shared_memory_status().regions) == 0


def test_grpc_bad_cases(grpc_client: tg.InferenceServerClient, make_region: MakeRegion) -> None:
    x = _data()
    handle, key = make_region(x.nbytes)
    shm.set_shared_memory_region(handle, [x])

    def refused(call: Callable[[], object], code: grpc.StatusCode, word: str) -> None:
        with pytest.raises(InferenceServerException) as err:
            call()
        assert err.value.status() == str(code), err.value
        assert word in (err.value.message() or ""), err.value.message()
        ok = tg.InferInput("INPUT0", [1, 4], "FP32")
        ok.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        assert grpc_client.infer("identity", [ok]).as_numpy("OUTPUT0").tolist() == [[1.0] * 4]

    missing = f"/sloserve-test-missing-{uuid.uuid4().hex[:8]}"
    bad = grpc.StatusCode.INVALID_ARGUMENT
    refused(lambda: grpc_client.register_system_shared_memory("r", missing, 64), bad, "no shared memory")
    grpc_client.register_system_shared_memory("r", key, x.nbytes)
    dup = grpc.StatusCode.ALREADY_EXISTS  # as Triton answers (HTTP: 400)
    refused(lambda: grpc_client.register_system_shared_memory("r", key, x.nbytes), dup, "already registered")
    refused(lambda: grpc_client.get_system_shared_memory_status("nope"), grpc.StatusCode.NOT_FOUND, "nope")

    def infer_from(region: str, byte_size: int) -> object:
        inp = tg.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_shared_memory(region, byte_size)
        return grpc_client.infer("identity", [inp])

    refused(lambda: infer_from("nope", x.nbytes), bad, "'nope' is not registered")
    refused(lambda: infer_from("r", x.nbytes + 4), bad, "does not match shape")


# -- the registry itself -------------------------------------------------------------------------


def test_registry_reads_copies_so_the_client_may_reuse_its_region(make_region: MakeRegion) -> None:
    registry = SystemSharedMemory()
    x = _data()
    handle, key = make_region(x.nbytes)
    shm.set_shared_memory_region(handle, [x])
    registry.register("r", key, 0, x.nbytes)
    arr = registry.read(ShmRef("r", x.nbytes), "FP32", (1, 16), "input 'INPUT0'")
    shm.set_shared_memory_region(handle, [x + 100])  # the client writes its next request
    np.testing.assert_array_equal(arr, x)  # the request read keeps what it read
    registry.unregister("r")
    assert len(registry) == 0
    registry.unregister("never-registered")  # no error, as in Triton


def test_an_object_shrunk_under_its_region_is_refused_and_the_server_lives(
    http: th.InferenceServerClient, grpc_client: tg.InferenceServerClient, make_region: MakeRegion
) -> None:
    """A mapped page past the object's end would kill the process (SIGBUS); reads say 400 instead."""
    x = _data()
    handle, key = make_region(x.nbytes)
    shm.set_shared_memory_region(handle, [x])
    http.register_system_shared_memory("shrunk", key, x.nbytes)
    os.truncate(Path("/dev/shm") / key.lstrip("/"), 0)
    for client, module in ((http, th), (grpc_client, tg)):
        inp = module.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_shared_memory("shrunk", x.nbytes)
        with pytest.raises(InferenceServerException, match="has shrunk to 0 bytes, short of the 64 bytes"):
            client.infer("identity", [inp])
    out = th.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("shrunk", x.nbytes)  # writing grows the object again: no harm
    inp = th.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    http.infer("identity", [inp], outputs=[out])
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, list(x.shape)), x)


def _stats(client: th.InferenceServerClient, model: str) -> dict[str, Any]:
    stats: dict[str, Any] = client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]
    return stats


def test_a_byte_size_is_checked_against_the_region_before_anything_is_allocated() -> None:
    """Found by review: the size a client names was allocated before its region was looked up, so
    an unregistered region with a byte size of 2**62 was a 500 (MemoryError), and one of a few GiB
    stalled the server while it allocated, only to refuse the request."""
    registry = SystemSharedMemory()
    for datatype, shape in (("BYTES", (1, 1)), ("FP32", (1 << 40, 4))):
        huge = ShmRef("never_registered", 1 << 62 if datatype == "BYTES" else 1 << 44)
        with pytest.raises(ProtocolError, match="'never_registered' is not registered"):
            registry.read(huge, datatype, shape, "input 'INPUT0'")


def test_registry_refuses_bad_registrations(
    make_region: MakeRegion, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    registry = SystemSharedMemory()
    _, key = make_region(64)
    (tmp_path / "victim").write_bytes(b"x" * 64)
    link = Path("/dev/shm") / f"sloserve-test-link-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    link.symlink_to(tmp_path / "victim")
    request.addfinalizer(link.unlink)
    for args, words in [
        (("r", "/a/b", 0, 8), "invalid shared memory key"),
        (("r", "/a\0b", 0, 8), "invalid shared memory key"),  # was an internal error (embedded NUL)
        (("r", "/\ud800", 0, 8), "invalid shared memory key"),  # JSON's lone surrogate: was a 500 too
        (("r", "/" + link.name, 0, 8), "symbolic link"),  # it could name any file the server may write
        (("r", key, 0, 0), "must be positive"),
        (("r", key, -1, 8), "non-negative integer"),
        (("r", key, 60, 8), "runs past the end"),
        (("", key, 0, 8), "non-empty name"),
    ]:
        with pytest.raises(ProtocolError) as err:
            registry.register(*args)
        assert err.value.status == 400 and words in err.value.message
    registry.register("r", key, 56, 8)  # the last 8 bytes, at an offset that is not page-aligned
    registry.write(ShmRef("r", 8), np.array([[1.5, 2.5]], dtype=np.float32), "output 'x'")
    got = registry.read(ShmRef("r", 8), "FP32", (2,), "input 'x'")
    assert got.tolist() == [1.5, 2.5]
    del got
    registry.unregister()


def test_concurrent_clients_each_with_their_region(
    http: th.InferenceServerClient, server: BackgroundServer, make_region: MakeRegion
) -> None:
    """Several connections, one input and one output region each, in parallel: no mix-ups."""
    errors: list[BaseException] = []
    handles = []
    for i in range(4):
        x = _data(start=100.0 * i)
        ih, ik = make_region(x.nbytes)
        oh, ok = make_region(x.nbytes)
        shm.set_shared_memory_region(ih, [x])
        http.register_system_shared_memory(f"in{i}", ik, x.nbytes)
        http.register_system_shared_memory(f"out{i}", ok, x.nbytes)
        handles.append((x, oh))

    def run(i: int) -> None:
        try:
            c = th.InferenceServerClient(server.http_url)
            x, oh = handles[i]
            inp = th.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_shared_memory(f"in{i}", x.nbytes)
            out = th.InferRequestedOutput("OUTPUT0")
            out.set_shared_memory(f"out{i}", x.nbytes)
            for _ in range(20):
                c.infer("identity", [inp], outputs=[out])
                np.testing.assert_array_equal(shm.get_contents_as_numpy(oh, np.float32, [1, 16]), x)
            c.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    wait_for(lambda: server.service.core.pending_requests == 0)


def test_the_load_generator_sends_its_inputs_through_a_region_it_registers_and_removes(
    server: BackgroundServer, http: th.InferenceServerClient, tmp_path: Path
) -> None:
    from sloserve.bench.runner import make_target, run_load
    from sloserve.bench.targets import HttpTarget
    from sloserve.cli import main

    shm_objects = set(os.listdir("/dev/shm"))
    seen: dict[str, Any] = {}

    class Watched(HttpTarget):
        async def start(self) -> None:
            await super().start()
            seen["regions"] = http.get_system_shared_memory_status()
            seen["body"] = self._encode(1_000_000, 0)[0]

    before = http.get_inference_statistics("identity")["model_stats"][0]["inference_count"]
    res = run_load(Watched(server.http_url, "identity", shared_memory=True), np.arange(20) / 200.0, 1.0)
    assert res.ok.all() and res.met.all()
    after = http.get_inference_statistics("identity")["model_stats"][0]["inference_count"]
    assert after - before == 20  # the server ran every request, its input read from the region
    (region,) = seen["regions"]
    (spec,) = http.get_model_metadata("identity")["inputs"]
    assert spec["datatype"] == "FP32"
    assert region["byte_size"] == 4 * math.prod(max(1, int(d)) for d in spec["shape"])
    (sent,) = json.loads(seen["body"])["inputs"]  # all JSON: no tensor bytes after the header
    assert sent["parameters"] == {
        "shared_memory_region": region["name"],
        "shared_memory_byte_size": region["byte_size"],
        "shared_memory_offset": 0,
    }
    assert http.get_system_shared_memory_status() == [] and set(os.listdir("/dev/shm")) == shm_objects

    out = tmp_path / "bench"
    argv = [
        "bench",
        server.http_url,
        "-m",
        "identity",
        "--rate",
        "50",
        "--duration",
        "0.4",
        "--slo-ms",
        "500",
    ]
    assert main([*argv, "--shared-memory", "--no-ceiling", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["target"]["shared_memory"] is True
    assert report["result"]["requests"] == report["result"]["met"] > 0
    assert http.get_system_shared_memory_status() == [] and set(os.listdir("/dev/shm")) == shm_objects
    assert main([*argv, "--shared-memory", "--protocol", "grpc", "--no-ceiling"]) == 2
    with pytest.raises(ValueError, match="HTTP only"):
        make_target(server.grpc_url, "identity", "grpc", shared_memory=True)


def test_a_load_generator_stopped_by_sigterm_unregisters_its_region(
    server: BackgroundServer, http: th.InferenceServerClient, tmp_path: Path
) -> None:
    shm_objects = set(os.listdir("/dev/shm"))
    argv = ["bench", server.http_url, "-m", "identity", "--rate", "20", "--duration", "60", "--no-ceiling"]
    bench = subprocess.Popen(
        [sys.executable, "-m", "sloserve", *argv, "--shared-memory", "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(http.get_system_shared_memory_status()) == 1, timeout=60)
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=30)
    finally:
        bench.kill()
        bench.wait()
    assert bench.returncode == 130 and "stopped before the run ended" in err and "Traceback" not in err
    assert http.get_system_shared_memory_status() == [] and set(os.listdir("/dev/shm")) == shm_objects
