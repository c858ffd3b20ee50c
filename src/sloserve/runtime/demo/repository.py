"""The built-in demo model repository, built on first use with no downloads.

Layout (what the server's model repository reads)::

    <root>/<model>/model.onnx      # the graph with seeded random weights
    <root>/<model>/config.yaml     # runtime.model_config.ModelConfig
    <root>/<model>/BUILD           # builder version stamp; a stale stamp means rebuild

Each model is written into a temporary directory beside its final place and renamed into place,
so two processes calling :func:`ensure_demo_repository` at once never see a half-written model.
Only a directory carrying a (one-line) stamp, or an empty one, is replaced: any other directory of
a demo model's name is the user's, and building there is a :class:`~sloserve.core.config.ConfigError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sloserve.core.config import ConfigError
from sloserve.runtime.demo.models import DEMO_MODELS, DemoModel

BUILD_VERSION = "sloserve-demo/2"
"""Bump when a demo model or its config changes, so cached repositories are rebuilt."""

ENV_VAR = "SLOSERVE_DEMO_REPO"
"""Environment variable overriding the default repository location."""


def default_repository_path() -> Path:
    """``$SLOSERVE_DEMO_REPO``, else ``$XDG_CACHE_HOME/sloserve/demo-repo`` (``~/.cache`` by default)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sloserve" / "demo-repo"


def model_config(model: DemoModel) -> dict[str, Any]:
    """The ``config.yaml`` content of a demo model (fields of ``runtime.model_config.ModelConfig``)."""
    threads = 1 if model.name in ("identity", "mlp") else 2
    return {
        "name": model.name,
        "backend": "onnxruntime",
        "model_file": "model.onnx",
        **model.config,
        "instance_group": {"count": 1, "threads": threads},
        "scheduler": {"name": "triton"},
    }


def _is_current(directory: Path) -> bool:
    stamp = directory / "BUILD"
    try:
        return (
            stamp.read_text(encoding="utf-8").strip() == BUILD_VERSION
            and (directory / "model.onnx").is_file()
        )
    except OSError:
        return False


def _is_demo_build(directory: Path) -> bool:
    """Whether ``directory`` was built here, current or stale (a one-line ``BUILD`` stamp, of any
    version), or is empty: safe to replace. (A Bazel ``BUILD`` file has more than one line.)"""
    try:
        with (directory / "BUILD").open(encoding="utf-8") as f:
            if len(f.read(200).strip().splitlines()) == 1:
                return True
    except (OSError, UnicodeDecodeError):
        pass
    try:
        return directory.is_dir() and not any(directory.iterdir())
    except OSError:
        return False


def build_demo_model(name: str, root: str | Path, *, model: DemoModel | None = None) -> Path:
    """Build demo model ``name`` into ``root/name`` unless a current build is there; returns that directory.

    ``model`` overrides the default-sized graph (tests pass smaller variants). A ``root/name``
    that is not a demo build (no stamp: the user's own model, or a file), or a ``root`` that cannot
    be made or written, is a :class:`ConfigError` naming it; nothing of the user's is replaced.
    """
    if name not in DEMO_MODELS:
        raise KeyError(f"unknown demo model {name!r}; known: {sorted(DEMO_MODELS)}")
    root = Path(root)
    final = root / name
    if _is_current(final):
        return final
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a directory: cannot build demo model {name!r} in it")
    if (final.exists() or final.is_symlink()) and not _is_demo_build(final):
        raise ConfigError(
            f"{final} exists and is not a sloserve demo build (no {final / 'BUILD'} stamp); not "
            f"replacing it: give another repository, or move {final} away"
        )
    try:
        return _build(name, root, final, model)
    except OSError as exc:
        raise ConfigError(f"{root}: cannot build demo model {name!r} there: {exc.strerror or exc}") from None


def _build(name: str, root: Path, final: Path, model: DemoModel | None) -> Path:
    """Write the model into a temporary directory in ``root`` and rename it to ``final``."""
    root.mkdir(parents=True, exist_ok=True)
    built = model or DEMO_MODELS[name]()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        (tmp / "model.onnx").write_bytes(built.proto.SerializeToString())
        text = f"# demo model: {built.proto.doc_string}\n" + yaml.safe_dump(
            model_config(built), sort_keys=False
        )
        (tmp / "config.yaml").write_text(text, encoding="utf-8")
        (tmp / "BUILD").write_text(BUILD_VERSION + "\n", encoding="utf-8")
        if final.exists() and not _is_current(final) and _is_demo_build(final):  # stale: replace
            stale = Path(tempfile.mkdtemp(prefix=f".{name}-stale-", dir=root))
            with contextlib.suppress(OSError):
                final.rename(stale / name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError:
            if not _is_current(final):  # lost a race to a build that is not usable: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def ensure_demo_repository(path: str | Path | None = None, models: Iterable[str] | None = None) -> Path:
    """Build the demo models that are missing (all, or ``models``) and return the repository root.

    Fast when everything is built (one stamp read per model); safe under concurrent callers.
    """
    root = Path(path) if path is not None else default_repository_path()
    for name in models if models is not None else DEMO_MODELS:
        build_demo_model(name, root)
    return root
