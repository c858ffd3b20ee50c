"""Shared pytest configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_fakes import FakeBackends, demo_model_without_slo
from sloserve.runtime.service import BackgroundServer, ServeOptions

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full demo model repository (identity, mlp, mobilenet_v2, resnet18, bert), built once per session.

    Takes about 1.5 s and 110 MB in a temporary directory. Tests that need one small model can
    call ``sloserve.runtime.demo.build_demo_model("identity", tmp_path)`` instead (milliseconds).
    """
    from sloserve.runtime.demo import ensure_demo_repository

    return ensure_demo_repository(tmp_path_factory.mktemp("demo-repo"))


@pytest.fixture(scope="module")
def fakes() -> FakeBackends:
    """A fresh set of controllable fake backends for each server test module (see ``server_fakes``)."""
    return FakeBackends()


@pytest.fixture(scope="module")
def identity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    """A real server (HTTP and gRPC on free ports) with the demo identity model on ONNX Runtime
    (FP32 ``INPUT0`` [batch, n], no SLO), one per test module that asks for it."""
    root = tmp_path_factory.mktemp("identity-repo")
    demo_model_without_slo("identity", root)
    with BackgroundServer(ServeOptions(root, http_port=0, grpc_port=0, metrics_port=None)) as server:
        yield server
