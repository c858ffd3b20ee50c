"""Found by review of the system shared-memory extension, each test failing on the code before:

- every registered region kept a file descriptor open: ~1,000 registrations used up the server's
  descriptors (no new connection, no model load); regions are now mapped with the descriptor
  closed, and registrations beyond :data:`~sloserve.runtime.shared_memory.MAX_REGIONS` are refused;
- an output's region was looked up by name when the answer was written: an answer landed in the
  object registered under that name *after* the request was accepted, and an unregister made a
  request the model had run a 400; a request now holds the region it was checked against;
- an input in shared memory was copied before the model's checks and without a bound (a 100 GiB
  object: a 500 with a ``MemoryError``); it is now bounded as a body is (413), read only after the
  model's checks, and a copy there is no memory for is a 507 naming the input;
- a name registered twice was ``INVALID_ARGUMENT`` over gRPC; Triton says ``ALREADY_EXISTS``.
"""

from __future__ import annotations

import os
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
from tritonclient.utils import InferenceServerException

from server_fakes import FakeBackends, write_model
from sloserve.runtime import shared_memory as sm
from sloserve.runtime.codec import ProtocolError, ShmRef
from sloserve.runtime.service import BackgroundServer, ServeOptions
from sloserve.runtime.shared_memory import SystemSharedMemory

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory")

LIMIT = 1 << 20
"""The server's --max-body-mb here (1 MiB): the bound on an input in shared memory too."""

MakeObject = Callable[[int], str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: FakeBackends) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    write_model(root, "gated", {"backend": "fake", "max_batch_size": 4})
    options = ServeOptions(
        root, http_port=0, grpc_port=0, metrics_port=None, backends={"fake": fakes}, max_body_bytes=LIMIT
    )
    with BackgroundServer(options) as s:
        yield s


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(server.http_url)
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def grpc_client(server: BackgroundServer) -> Iterator[tg.InferenceServerClient]:
    c = tg.InferenceServerClient(server.grpc_url)
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def make_object() -> Iterator[MakeObject]:
    """POSIX shared-memory objects of zeros made with ``open``/``ftruncate``: this process (the
    server's, in these tests) maps one only where the server does."""
    made: list[Path] = []

    def make(byte_size: int) -> str:
        key = f"/sloserve-review-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path = Path("/dev/shm") / key[1:]
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(fd, byte_size)
        os.close(fd)
        made.append(path)
        return key

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def _path(key: str) -> Path:
    return Path("/dev/shm") / key[1:]


def _put(key: str, arr: np.ndarray, offset: int = 0) -> None:
    fd = os.open(_path(key), os.O_RDWR)
    try:
        os.pwrite(fd, arr.tobytes(), offset)
    finally:
        os.close(fd)


def _get(key: str, shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
    count = int(np.prod(shape))
    with open(_path(key), "rb") as f:
        f.seek(offset)
        return np.frombuffer(f.read(4 * count), dtype=np.float32).reshape(shape)


def _mappings(key: str) -> int:
    """How many mappings of the object this process has (the server's: the test maps none)."""
    return Path("/proc/self/maps").read_text().count(f"/dev/shm/{key[1:]}")


def _row(n: int = 16, start: float = 1.0) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) + start).reshape(1, n)


def _client(proto: str, server: BackgroundServer) -> Any:
    if proto == "http":
        return th.InferenceServerClient(server.http_url)
    return tg.InferenceServerClient(server.grpc_url)


def _refused(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value


def _serves(client: Any, module: Any) -> None:
    inp = module.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(np.full((1, 4), 3.0, dtype=np.float32))
    assert client.infer("gated", [inp]).as_numpy("OUTPUT0").tolist() == [[3.0] * 4]


# -- 1. no descriptor per region; a cap on registrations --------------------------------------------


def test_a_registered_region_holds_no_file_descriptor(
    http: th.InferenceServerClient, make_object: MakeObject
) -> None:
    key = make_object(4096)
    http.register_system_shared_memory("warm", key, 64)  # the connection is open before counting
    before = len(os.listdir("/proc/self/fd"))
    for i in range(200):
        http.register_system_shared_memory(f"r{i}", key, 64, offset=8 * i)
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # was one more descriptor per region
    assert _mappings(key) == 201  # mapped instead, as Triton does
    http.unregister_system_shared_memory()
    assert _mappings(key) == 0  # unregistered and held by no request: released at once


def test_registrations_beyond_the_cap_are_refused_naming_it(
    server: BackgroundServer,
    http: th.InferenceServerClient,
    grpc_client: tg.InferenceServerClient,
    make_object: MakeObject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = server.service.core.shared_memory
    assert registry.max_regions == sm.MAX_REGIONS == 1024
    monkeypatch.setattr(registry, "max_regions", 3)
    key = make_object(64)
    for i in range(3):
        http.register_system_shared_memory(f"r{i}", key, 64)
    err = _refused(lambda: http.register_system_shared_memory("r3", key, 64))
    assert err.status() == "400" and "the most this server takes (3)" in (err.message() or "")
    assert "'r3'" in (err.message() or "")
    err = _refused(lambda: grpc_client.register_system_shared_memory("r3", key, 64))
    assert err.status() == str(grpc.StatusCode.INVALID_ARGUMENT) and "(3)" in (err.message() or "")
    http.unregister_system_shared_memory("r0")
    http.register_system_shared_memory("r3", key, 64)
    assert sorted(r["name"] for r in http.get_system_shared_memory_status()) == ["r1", "r2", "r3"]


# -- 2. a request holds the regions it was checked against ----------------------------------------


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize("then", ["unregistered", "registered again for another object"])
def test_an_answer_goes_to_the_region_its_request_was_checked_against(
    proto: str,
    then: str,
    server: BackgroundServer,
    fakes: FakeBackends,
    http: th.InferenceServerClient,
    make_object: MakeObject,
) -> None:
    """Was: the answer landed in the other object (another client's, say), or the request the model
    had run was answered 400 'not registered'."""
    module: Any = th if proto == "http" else tg
    client = _client(proto, server)
    x = _row(start=7.0)
    first, second = make_object(x.nbytes), make_object(x.nbytes)
    http.register_system_shared_memory("out", first, x.nbytes)
    inp = module.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = module.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("out", x.nbytes)
    answer: dict[str, Any] = {}

    def run() -> None:
        try:
            answer["ok"] = client.infer("gated", [inp], outputs=[out])
        except InferenceServerException as exc:
            answer["error"] = exc

    control = fakes.control("gated")
    control.gate.clear()
    worker = threading.Thread(target=run)
    try:
        worker.start()
        assert control.started()  # accepted and running
        http.unregister_system_shared_memory("out")
        if then != "unregistered":
            http.register_system_shared_memory("out", second, x.nbytes)
    finally:
        control.gate.set()
    worker.join(30)
    assert "error" not in answer, answer["error"].message()
    np.testing.assert_array_equal(_get(first, x.shape), x)
    assert not _get(second, x.shape).any()
    http.unregister_system_shared_memory()
    assert _mappings(first) == 0 and _mappings(second) == 0  # released once the request is gone
    client.close()


def test_unregister_keeps_a_held_region_mapped_until_its_holder_is_gone(make_object: MakeObject) -> None:
    registry = SystemSharedMemory()
    first, second = make_object(64), make_object(64)
    registry.register("out", first, 0, 64)
    ref = ShmRef("out", 64)
    registry.check_output(ref, "output 'y'")  # as a request is decoded
    registry.unregister("out")
    registry.register("out", second, 0, 64)  # a new region under the name
    registry.write(ref, np.arange(16, dtype=np.float32), "output 'y'")
    assert _get(first, (16,)).tolist() == list(range(16)) and not _get(second, (16,)).any()
    registry.unregister()
    assert (_mappings(first), _mappings(second)) == (1, 0)
    del ref
    assert _mappings(first) == 0


def test_an_input_is_read_from_the_region_its_request_was_checked_against(make_object: MakeObject) -> None:
    registry = SystemSharedMemory(defer_reads=True)
    x = _row()
    first, second = make_object(x.nbytes), make_object(x.nbytes)
    _put(first, x)
    _put(second, x * 0 - 1)
    registry.register("in", first, 0, x.nbytes)
    pending = registry.read(ShmRef("in", x.nbytes), "FP32", (1, 16), "input 'INPUT0'")
    assert isinstance(pending, sm.PendingInput) and pending.shape == (1, 16) and pending.dtype == np.float32
    registry.unregister("in")
    registry.register("in", second, 0, x.nbytes)
    loaded = registry.load_inputs({"INPUT0": pending, "other": x})
    assert list(loaded) == ["INPUT0", "other"]
    np.testing.assert_array_equal(loaded["INPUT0"], x)
    registry.unregister()


# -- 3. inputs: the model's checks first, a bound, no MemoryError ---------------------------------


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_an_input_over_the_body_limit_is_a_413_naming_it(
    proto: str, server: BackgroundServer, http: th.InferenceServerClient, make_object: MakeObject
) -> None:
    module: Any = th if proto == "http" else tg
    client = _client(proto, server)
    n = LIMIT // 4 + 16
    key = make_object(4 * n + LIMIT)
    http.register_system_shared_memory("big", key, 4 * n + LIMIT)
    inp = module.InferInput("INPUT0", [1, n], "FP32")
    inp.set_shared_memory("big", 4 * n)
    err = _refused(lambda: client.infer("gated", [inp]))
    expected = "413" if proto == "http" else str(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert err.status() == expected, err.message()
    assert "'INPUT0'" in (err.message() or "") and f"limit of {LIMIT} bytes" in (err.message() or "")
    # at the limit: read, run, written back into the region
    ok = module.InferInput("INPUT0", [1, LIMIT // 4], "FP32")
    ok.set_shared_memory("big", LIMIT)
    _put(key, np.full(LIMIT // 4, 2.0, dtype=np.float32))
    out = module.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("big", LIMIT, offset=4 * n)
    client.infer("gated", [ok], outputs=[out])
    assert (_get(key, (LIMIT // 4,), offset=4 * n) == 2.0).all()
    _serves(client, module)
    client.close()


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_the_models_checks_come_before_an_input_is_read(
    proto: str, server: BackgroundServer, http: th.InferenceServerClient, make_object: MakeObject
) -> None:
    """The object is shrunk to nothing: a read would say so; the model's check speaks first."""
    module: Any = th if proto == "http" else tg
    client = _client(proto, server)
    key = make_object(64)
    http.register_system_shared_memory("gone", key, 64)
    os.truncate(_path(key), 0)
    for shape, datatype, words in (
        ([16], "FP32", "does not match the model's [-1, -1]"),
        ([1, 8], "FP64", "datatype FP64, but the model takes FP32"),
        ([1, 16], "FP32", "has shrunk to 0 bytes"),  # passes the checks: then read
    ):
        inp = module.InferInput("INPUT0", shape, datatype)
        inp.set_shared_memory("gone", 64)
        err = _refused(lambda inp=inp: client.infer("gated", [inp]))
        expected = "400" if proto == "http" else str(grpc.StatusCode.INVALID_ARGUMENT)
        assert err.status() == expected and words in (err.message() or ""), err.message()
        assert "'INPUT0'" in (err.message() or "")
    _serves(client, module)
    client.close()


class _NoMemory:
    """numpy, except that a byte buffer of ``size`` bytes cannot be allocated."""

    def __init__(self, size: int) -> None:
        self.size = size

    def empty(self, shape: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        if shape == self.size:
            raise MemoryError
        return np.empty(shape, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_no_memory_for_an_input_is_a_507_naming_it(
    proto: str,
    server: BackgroundServer,
    http: th.InferenceServerClient,
    make_object: MakeObject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module: Any = th if proto == "http" else tg
    client = _client(proto, server)
    key = make_object(4 * 1000)
    http.register_system_shared_memory("in", key, 4 * 1000)
    monkeypatch.setattr(sm, "np", _NoMemory(4 * 1000))
    inp = module.InferInput("INPUT0", [1, 1000], "FP32")
    inp.set_shared_memory("in", 4 * 1000)
    err = _refused(lambda: client.infer("gated", [inp]))
    expected = "507" if proto == "http" else str(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert err.status() == expected, err.message()
    assert "'INPUT0': not enough memory" in (err.message() or "") and "'in'" in (err.message() or "")
    _serves(client, module)
    client.close()


def test_the_registry_read_bounds_and_refuses_without_a_memory_error(
    make_object: MakeObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = SystemSharedMemory(max_input_bytes=64)
    key = make_object(128)
    registry.register("r", key, 0, 128)
    with pytest.raises(ProtocolError, match="'x': shared_memory_byte_size 128 is over the limit of 64") as e:
        registry.read(ShmRef("r", 128), "FP32", (32,), "input 'x'")
    assert e.value.status == 413
    monkeypatch.setattr(sm, "np", _NoMemory(64))
    with pytest.raises(ProtocolError, match="input 'x': not enough memory to read its 64 bytes") as e:
        registry.read(ShmRef("r", 64), "FP32", (16,), "input 'x'")
    assert e.value.status == 507
    registry.unregister()


# -- 4. a name registered twice: ALREADY_EXISTS over gRPC, 400 over HTTP -------------------------


def test_a_name_registered_twice_is_already_exists_over_grpc(
    http: th.InferenceServerClient, grpc_client: tg.InferenceServerClient, make_object: MakeObject
) -> None:
    key = make_object(64)
    grpc_client.register_system_shared_memory("twice", key, 64)
    err = _refused(lambda: grpc_client.register_system_shared_memory("twice", key, 64))
    assert err.status() == str(grpc.StatusCode.ALREADY_EXISTS)
    assert "'twice' is already registered" in (err.message() or "")
    err = _refused(lambda: http.register_system_shared_memory("twice", key, 32))
    assert err.status() == "400" and "'twice' is already registered" in (err.message() or "")


# -- the mapping stays safe --------------------------------------------------------------------


@pytest.mark.parametrize("through", ["process_vm_readv", "a scratch memfd"])
def test_a_shrunk_object_is_refused_and_written_again_either_way(
    through: str, make_object: MakeObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Touching a mapped page past a shrunk object's end is SIGBUS: the kernel copies instead (by
    ``process_vm_readv``, or through a ``memfd`` where a seccomp filter refuses that call)."""
    if through != "process_vm_readv":
        monkeypatch.setattr(sm, "_use_vm_copy", False)
    registry = SystemSharedMemory()
    key = make_object(3 * 4096)
    registry.register("r", key, 100, 2 * 4096)  # not page-aligned
    x = np.arange(2 * 1024, dtype=np.float32)
    registry.write(ShmRef("r", x.nbytes), x, "output 'y'")
    np.testing.assert_array_equal(_get(key, x.shape, offset=100), x)
    np.testing.assert_array_equal(registry.read(ShmRef("r", x.nbytes), "FP32", x.shape, "input 'x'"), x)
    os.truncate(_path(key), 4096)  # the second half of the region is gone
    with pytest.raises(ProtocolError, match="shrunk to 4096 bytes, short of the 8192 bytes at offset 100"):
        registry.read(ShmRef("r", x.nbytes), "FP32", x.shape, "input 'x'")
    registry.write(ShmRef("r", x.nbytes), x + 1, "output 'y'")  # writing grows the object again
    assert os.stat(_path(key)).st_size == 100 + x.nbytes
    np.testing.assert_array_equal(registry.read(ShmRef("r", x.nbytes), "FP32", x.shape, "input 'x'"), x + 1)
    registry.unregister()


def test_an_object_removed_while_registered_is_still_served(make_object: MakeObject) -> None:
    """As in Triton, which maps the region: the client may unlink its object once registered."""
    registry = SystemSharedMemory()
    x = _row()
    key = make_object(x.nbytes)
    _put(key, x)
    registry.register("r", key, 0, x.nbytes)
    _path(key).unlink()
    np.testing.assert_array_equal(registry.read(ShmRef("r", x.nbytes), "FP32", (1, 16), "input 'x'"), x)
    registry.write(ShmRef("r", x.nbytes), x * 2, "output 'y'")
    np.testing.assert_array_equal(registry.read(ShmRef("r", x.nbytes), "FP32", (1, 16), "input 'x'"), x * 2)
    registry.unregister()
