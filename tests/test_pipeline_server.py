"""Pipeline models served over HTTP and gRPC with Triton's client: same outputs as calling the
members one by one, metadata, split deadlines with early drop vs the whole-deadline baseline,
priority carried through the steps, and every request ending exactly once."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import yaml
from tritonclient.utils import InferenceServerException

from server_fakes import FakeBackends, demo_model_without_slo, wait_for, write_model
from sloserve.core.request import Request
from sloserve.runtime.pipeline import PipelineLoop, _merged_shape, pipeline_loop
from sloserve.runtime.service import BackgroundServer, ServeOptions

AFFINE_50MS = {"kind": "affine", "alpha_ms": 50.0, "beta_ms": 1.0, "max_batch": 8}


def write_pipeline(root: Path, name: str, doc: dict[str, Any]) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "pipeline.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


def _step(model: str, ins: dict[str, str], outs: dict[str, str], name: str | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"model": model, "input_map": ins, "output_map": outs}
    return step | ({"name": name} if name else {})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes: FakeBackends) -> Iterator[BackgroundServer]:
    root = tmp_path_factory.mktemp("repo")
    demo_model_without_slo("identity", root)
    demo_model_without_slo("mlp", root)
    fake = {"backend": "fake", "max_batch_size": 4, "priority_levels": 2}
    write_model(root, "fake_a", fake)
    write_model(root, "fake_b", fake, AFFINE_50MS)
    write_pipeline(
        root,
        "two_step",
        {"steps": [_step("identity", {"INPUT0": "INPUT0"}, {"OUTPUT0": "x"}),
                   _step("mlp", {"input": "x"}, {"logits": "logits"})]},
    )  # fmt: skip
    write_pipeline(
        root,
        "fanout",
        {
            "steps": [
                _step("identity", {"INPUT0": "INPUT0"}, {"OUTPUT0": "x"}, "first"),
                _step("mlp", {"input": "x"}, {"logits": "logits"}),
                _step("identity", {"INPUT0": "x"}, {"OUTPUT0": "copy"}, "copy"),
            ],
            "outputs": ["logits", "copy"],
        },
    )
    gated = {
        "priority_levels": 2,
        "steps": [_step("fake_a", {"INPUT0": "INPUT0"}, {"OUTPUT0": "mid"}, "a"),
                  _step("fake_b", {"INPUT0": "mid"}, {"OUTPUT0": "OUTPUT0"}, "b")],
    }  # fmt: skip
    write_pipeline(root, "gated_split", gated)
    write_pipeline(root, "gated_whole", gated | {"deadline_split": "whole"})
    write_pipeline(root, "gated_urgent", gated | {"default_priority_level": 1})
    options = ServeOptions(root, http_port=0, grpc_port=0, metrics_port=0, backends={"fake": fakes})
    with BackgroundServer(options) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(server.http_url, concurrency=4)
    yield c
    c.close()


def _loop(server: BackgroundServer, name: str) -> PipelineLoop:
    loop = pipeline_loop(server.service.core.repository.models[name])
    assert loop is not None
    return loop


def _http_in(name: str, x: np.ndarray) -> th.InferInput:
    inp = th.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return inp


def _call(client: th.InferenceServerClient, model: str, name: str, x: np.ndarray, out: str) -> np.ndarray:
    result = client.infer(model, [_http_in(name, x)])
    arr = result.as_numpy(out)
    assert arr is not None
    return np.asarray(arr)


def test_metadata_names_pipeline_inputs_and_outputs(client: th.InferenceServerClient) -> None:
    meta = client.get_model_metadata("fanout")
    assert meta["platform"] == "pipeline"
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "copy"]
    assert client.get_model_metadata("two_step")["outputs"][0]["shape"] == [-1, 10]
    assert client.is_model_ready("two_step")


def test_two_step_equals_members_one_by_one(client: th.InferenceServerClient) -> None:
    x = np.random.default_rng(0).standard_normal((1, 784)).astype(np.float32)
    direct = _call(client, "mlp", "input", _call(client, "identity", "INPUT0", x, "OUTPUT0"), "logits")
    np.testing.assert_allclose(_call(client, "two_step", "INPUT0", x, "logits"), direct, rtol=1e-6)


def test_fanout_and_join_equal_members(client: th.InferenceServerClient) -> None:
    x = np.random.default_rng(1).standard_normal((1, 784)).astype(np.float32)
    result = client.infer("fanout", [_http_in("INPUT0", x)])
    np.testing.assert_allclose(
        result.as_numpy("logits"), _call(client, "mlp", "input", x, "logits"), rtol=1e-6
    )
    np.testing.assert_array_equal(result.as_numpy("copy"), x)


def test_two_step_over_grpc(server: BackgroundServer, client: th.InferenceServerClient) -> None:
    x = np.random.default_rng(2).standard_normal((1, 784)).astype(np.float32)
    g = tg.InferenceServerClient(server.grpc_url)
    try:
        meta = g.get_model_metadata("two_step", as_json=True)
        assert [i["name"] for i in meta["inputs"]] == ["INPUT0"]
        inp = tg.InferInput("INPUT0", [1, 784], "FP32")
        inp.set_data_from_numpy(x)
        got = g.infer("two_step", [inp]).as_numpy("logits")
    finally:
        g.close()
    np.testing.assert_allclose(got, _call(client, "two_step", "INPUT0", x, "logits"), rtol=1e-6)


def _hold_first_step(server: BackgroundServer, fakes: FakeBackends, model: str, budget_ms: float) -> Any:
    """Send one request with the first step held past the end-to-end deadline; returns the result or error."""
    control = fakes.control("fake_a")
    c = th.InferenceServerClient(server.http_url)
    control.gate.clear()
    try:
        pending = c.async_infer(model, [_http_in("INPUT0", np.ones((1, 4), np.float32))],
                                headers={"x-slo-timeout-ms": str(budget_ms)})  # fmt: skip
        assert control.started()
        time.sleep(3 * budget_ms / 1000)  # the end-to-end deadline passes while step a runs
        control.gate.set()
        try:
            return pending.get_result()
        except InferenceServerException as exc:
            return exc
    finally:
        control.gate.set()
        c.close()


def test_split_drops_at_earliest_step_whole_runs_late(server: BackgroundServer, fakes: FakeBackends) -> None:
    b = fakes.control("fake_b")
    before = len(b.batches)
    refused = _hold_first_step(server, fakes, "gated_split", 100)
    assert isinstance(refused, InferenceServerException) and refused.status() == "503"
    assert "dropped at step 'b'" in refused.message() and "deadline_unreachable" in refused.message()
    assert len(b.batches) == before  # step b never ran
    assert _loop(server, "gated_split").step_drops["b"] == 1
    late = _hold_first_step(server, fakes, "gated_whole", 100)  # Triton-ensemble baseline
    assert not isinstance(late, InferenceServerException)
    assert len(b.batches) == before + 1
    whole = _loop(server, "gated_whole").stats
    assert whole.slo_missed == 1 and whole.slo_met == 0


def test_budget_below_fastest_path_drops_at_first_step(
    client: th.InferenceServerClient, server: BackgroundServer, fakes: FakeBackends
) -> None:
    a_before = len(fakes.control("fake_a").batches)
    with pytest.raises(InferenceServerException) as info:
        client.infer(
            "gated_split",
            [_http_in("INPUT0", np.ones((1, 4), np.float32))],
            headers={"x-slo-timeout-ms": "10"},
        )
    assert "dropped at step 'a'" in info.value.message() and info.value.status() == "503"
    assert len(fakes.control("fake_a").batches) == a_before
    assert _loop(server, "gated_split").step_drops["a"] == 1


def test_priority_carried_through_every_step(
    client: th.InferenceServerClient, server: BackgroundServer
) -> None:
    models = server.service.core.repository.models
    seen: list[tuple[str, int]] = []

    def hook(model: str) -> Any:
        def record(now: float, decision: Any) -> None:
            seen.extend((model, r.priority) for r in decision.batch.requests if isinstance(r, Request))

        return record

    for m in ("fake_a", "fake_b"):
        models[m].loop.on_dispatch = hook(m)
    try:
        client.infer("gated_whole", [_http_in("INPUT0", np.ones((1, 4), np.float32))], priority=1)
        client.infer("gated_split", [_http_in("INPUT0", np.ones((1, 4), np.float32))], priority=2)
        # found by review: a pipeline's own default level was not given to its steps (they took theirs)
        client.infer("gated_urgent", [_http_in("INPUT0", np.ones((1, 4), np.float32))])
    finally:
        for m in ("fake_a", "fake_b"):
            models[m].loop.on_dispatch = None
    assert seen == [("fake_a", 1), ("fake_b", 1), ("fake_a", 2), ("fake_b", 2), ("fake_a", 1), ("fake_b", 1)]


def test_every_request_ends_exactly_once(client: th.InferenceServerClient, server: BackgroundServer) -> None:
    x = np.ones((1, 784), np.float32)
    sent = 40
    futures = [client.async_infer("fanout", [_http_in("INPUT0", x)]) for _ in range(sent)]
    for _ in range(sent // 4):  # a quarter with a budget no pipeline can meet: refused at the first step
        futures.append(
            client.async_infer(
                "gated_split", [_http_in("INPUT0", x[:, :4])], headers={"x-slo-timeout-ms": "1"}
            )
        )
    answered = refused = 0
    for f in futures:
        try:
            f.get_result()
            answered += 1
        except InferenceServerException:
            refused += 1
    assert answered == sent and refused == sent // 4
    for name in ("fanout", "gated_split"):
        loop = _loop(server, name)
        wait_for(lambda loop=loop: not loop.pending)
        s = loop.stats
        assert s.arrivals == s.success_count + s.fail_count
        assert sum(loop.step_drops.values()) == s.fail_count
        stats = client.get_inference_statistics(name)["model_stats"][0]["inference_stats"]
        assert int(stats["success"]["count"]) == s.success_count
        assert int(stats["fail"]["count"]) == s.fail_count


def test_wiring_errors_name_file_and_field(
    client: th.InferenceServerClient, server: BackgroundServer
) -> None:
    root = server.options.repository
    write_pipeline(root, "bad_inputs", {"steps": [_step("identity", {"NOPE": "INPUT0"}, {"OUTPUT0": "y"})]})
    write_pipeline(root, "bad_member", {"steps": [_step("no_such_model", {"INPUT0": "x"}, {"OUTPUT0": "y"})]})
    # found by fuzzing: loaded READY, then every request failed, blamed on the client
    handoff = [
        _step("mlp", {"input": "INPUT0"}, {"logits": "x"}, "one"),
        _step("mlp", {"input": "x"}, {"logits": "y"}, "two"),
    ]
    write_pipeline(root, "bad_handoff", {"steps": handoff})
    # found by review: a pipeline input feeding two steps was checked against the first one's only
    # (it loaded READY, and every request failed at the second step, blamed on the client)
    two = _step("mlp", {"input": "X"}, {"logits": "b"}, "two")
    write_pipeline(root, "fan", {"steps": [_step("identity", {"INPUT0": "X"}, {"OUTPUT0": "a"}, "one"), two]})
    client.load_model("fan")  # the pipeline's input is what fits both steps: mlp's 784 columns
    assert client.get_model_metadata("fan")["inputs"][0]["shape"] == [-1, 784]
    assert _merged_shape((-1, -1), (-1, 784)) == (-1, 784) and _merged_shape((-1, 4), (-1, 784)) is None
    for name, field in (
        ("bad_inputs", "steps.0.input_map"),
        ("bad_member", "steps.0.model"),
        ("bad_handoff", "steps.1.input_map: 'x' is FP32 [-1, 10] from steps.0, but 'mlp'"),
    ):
        with pytest.raises(InferenceServerException) as info:
            client.load_model(name)
        assert f"{root / name / 'pipeline.yaml'}: {field}" in info.value.message()
        assert not client.is_model_ready(name)


def test_config_and_metrics_of_pipeline(client: th.InferenceServerClient, server: BackgroundServer) -> None:
    config = client.get_model_config("two_step")
    assert config["platform"] == "pipeline" and config["max_batch_size"] == 64
    assert [i["name"] for i in config["input"]] == ["INPUT0"]
    x = np.ones((1, 784), np.float32)
    client.infer("two_step", [_http_in("INPUT0", x)])
    url = f"http://127.0.0.1:{server.service.metrics_port}/metrics"
    text = urllib.request.urlopen(url).read().decode()
    assert 'nv_inference_request_success{model="two_step",version="1"}' in text
    assert 'sloserve_instances{model="two_step",version="1"} 0.0' in text


def test_the_index_lists_loaded_pipelines(client: th.InferenceServerClient) -> None:
    """Found by fuzzing: with a pipeline loaded, the index was a 500 (a pipeline has no 'fault')."""
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index["two_step"] == "READY" and index["identity"] == "READY"


def test_a_pipeline_whose_member_is_unloaded_is_unavailable_saying_which(
    client: th.InferenceServerClient,
) -> None:
    """Found by review: it showed LOADING, with no reason."""
    client.unload_model("mlp")
    try:
        entry = next(m for m in client.get_model_repository_index() if m["name"] == "two_step")
        assert entry["state"] == "UNAVAILABLE" and entry["reason"] == "member model 'mlp' is not loaded"
        assert not client.is_model_ready("two_step")
    finally:
        client.load_model("mlp")
    entry = next(m for m in client.get_model_repository_index() if m["name"] == "two_step")
    assert entry["state"] == "READY" and "reason" not in entry


def test_two_pipelines_that_name_each_other_are_refused(
    client: th.InferenceServerClient, server: BackgroundServer
) -> None:
    """Found by fuzzing: each waited for the other's load for ever; the server never became ready."""
    root = server.options.repository
    write_pipeline(root, "ping", {"steps": [_step("identity", {"INPUT0": "INPUT0"}, {"OUTPUT0": "x"}),
                                            _step("pong", {"INPUT0": "x"}, {"OUTPUT0": "y"})]})  # fmt: skip
    write_pipeline(root, "pong", {"steps": [_step("identity", {"INPUT0": "INPUT0"}, {"OUTPUT0": "x"}),
                                            _step("ping", {"INPUT0": "x"}, {"OUTPUT0": "y"})]})  # fmt: skip
    for name, other in (("ping", "pong"), ("pong", "ping")):
        with pytest.raises(InferenceServerException) as info:
            client.load_model(name)
        assert f"steps.1.model: '{other}' is itself a pipeline" in info.value.message()


def _identity_onnx(directory: Path, output: str, input: str = "INPUT0") -> None:
    """An identity model on FP32 [N, 4] whose input and output are called ``input`` and ``output``."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info(input, TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Identity", [input], [output])], "id", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    save(model, directory / "model.onnx")
    (directory / "config.yaml").write_text("max_batch_size: 4\n")


def test_a_member_reloaded_with_other_outputs_fails_the_request_instead_of_stranding_it(
    client: th.InferenceServerClient, server: BackgroundServer
) -> None:
    """Found by fuzzing: the pipeline's requests waited for ever (a KeyError in the step's end).
    Found by review: with other inputs, every request was a 400 blaming the client's (now a 503
    saying what changed, and the pipeline shows unavailable)."""
    root = server.options.repository
    _identity_onnx(root / "renamed", "OUTPUT0")
    write_pipeline(root, "via_renamed", {"steps": [_step("renamed", {"INPUT0": "INPUT0"}, {"OUTPUT0": "y"})]})
    x = np.ones((1, 4), np.float32)
    for changed, expected in (
        ({"output": "OTHER"}, "other output(s) ['OUTPUT0']"),
        ({"output": "OUTPUT0", "input": "OTHER_IN"}, "other inputs (OTHER_IN FP32 [-1, 4])"),
    ):
        _identity_onnx(root / "renamed", "OUTPUT0")
        if client.is_model_ready("renamed"):
            client.load_model("renamed")  # as it was
        client.load_model("via_renamed")
        np.testing.assert_array_equal(client.infer("via_renamed", [_http_in("INPUT0", x)]).as_numpy("y"), x)
        _identity_onnx(root / "renamed", **changed)
        client.load_model("renamed")  # the member alone, reloaded under the pipeline
        with pytest.raises(InferenceServerException) as info:
            client.async_infer("via_renamed", [_http_in("INPUT0", x)]).get_result(timeout=10)
        assert info.value.status() == "503"
        assert f"model 'renamed' was loaded again with {expected}" in info.value.message()
        assert "load the pipeline again" in info.value.message()
        assert not _loop(server, "via_renamed").pending
        entry = next(m for m in client.get_model_repository_index() if m["name"] == "via_renamed")
        assert entry["state"] == "UNAVAILABLE" and expected in entry["reason"]
        assert not client.is_model_ready("via_renamed")


def test_at_shutdown_pipelines_drain_before_their_members(tmp_path: Path) -> None:
    """Found by fuzzing: every model was unloaded at once, so a request past its first step got 503
    'model ... is not loaded' although the drain time was not spent."""
    import threading

    fakes = FakeBackends()
    write_model(tmp_path, "first", {"backend": "fake", "max_batch_size": 4})
    write_model(tmp_path, "second", {"backend": "fake", "max_batch_size": 4})
    steps = [
        _step("first", {"INPUT0": "INPUT0"}, {"OUTPUT0": "mid"}),
        _step("second", {"INPUT0": "mid"}, {"OUTPUT0": "out"}),
    ]
    write_pipeline(tmp_path, "chain", {"steps": steps})
    options = ServeOptions(
        tmp_path, http_port=0, grpc_port=None, metrics_port=None, backends={"fake": fakes}, drain_timeout=20
    )
    server = BackgroundServer(options).start()
    client = th.InferenceServerClient(server.http_url, concurrency=4)
    try:
        fakes.control("first").gate.clear()  # the requests wait in their first step
        pending = [
            client.async_infer("chain", [_http_in("INPUT0", np.ones((1, 4), np.float32))]) for _ in range(4)
        ]
        assert fakes.control("first").started()
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        time.sleep(0.3)  # the shutdown has begun
        fakes.control("first").gate.set()
        results = [p.get_result(timeout=20).as_numpy("out") for p in pending]
        stopping.join(timeout=30)
    finally:
        fakes.control("first").gate.set()
        client.close()
    assert all(r is not None and r.shape == (1, 4) for r in results)
