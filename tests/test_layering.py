"""The layering rule of ARCHITECTURE.md, checked on the source with ``ast``.

- core/ and policies/ import no clock (time, datetime), asyncio, socket/network or framework;
- sim/ and runtime/ never import each other;
- planning/ never imports runtime/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sloserve"

FORBIDDEN_IN_PURE = {
    # clocks
    "time",
    "datetime",
    # I/O and concurrency
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "threading",
    "multiprocessing",
    "subprocess",
    "http",
    "urllib",
    "requests",
    "httpx",
    "aiohttp",
    # frameworks
    "grpc",
    "starlette",
    "uvicorn",
    "uvloop",
    "fastapi",
    "onnxruntime",
    "onnx",
    "torch",
    "tritonclient",
    "ray",
    "prometheus_client",
    "gymnasium",
    "stable_baselines3",
    # the layers above
    "sloserve.sim",
    "sloserve.runtime",
    "sloserve.planning",
    "sloserve.rl",
    "sloserve.bench",
    "sloserve.experiments",
    "sloserve.cli",
}


def imports(path: Path, package: str | None = None) -> set[str]:
    """Every module name a file imports (absolute; relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if package is None:
        package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def violations(layer: str, forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for name in sorted(imports(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(SRC)} imports {name}")
    return found


def test_the_source_tree_is_where_the_test_expects_it() -> None:
    for layer in ("core", "policies", "sim"):
        assert any((SRC / layer).glob("*.py")), layer


@pytest.mark.parametrize("layer", ["core", "policies"])
def test_core_and_policies_are_sans_io(layer: str) -> None:
    assert violations(layer, FORBIDDEN_IN_PURE) == []


def test_sim_and_runtime_do_not_import_each_other() -> None:
    assert violations("sim", {"sloserve.runtime"}) == []
    assert violations("runtime", {"sloserve.sim"}) == []


def test_planning_reads_no_clock_and_does_no_io() -> None:
    """Planners are pure computations; callers (the CLI, benchmarks) time and print them."""
    outside = {f for f in FORBIDDEN_IN_PURE if not f.startswith("sloserve.")}
    assert violations("planning", outside) == []


def test_planning_does_not_import_runtime() -> None:
    assert violations("planning", {"sloserve.runtime"}) == []


def test_the_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    fake = tmp_path / "x.py"
    fake.write_text(
        "import time\nfrom asyncio import sleep\nimport torch.nn as nn\nfrom ..sim import cluster\n"
        "def f():\n    import datetime\n"
    )
    names = imports(fake, package="sloserve.policies")
    bad = {n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN_IN_PURE)}
    assert {"time", "asyncio", "torch.nn", "sloserve.sim", "datetime"} <= bad
