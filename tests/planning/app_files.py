"""An app file's data for the planning tests: two modules on the example catalogue and profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"


def app_data(**changes: Any) -> dict[str, Any]:
    """A valid app (``det`` fanning out to ``cls``, 200 ms, 100 req/s) with ``changes`` over it."""
    data: dict[str, Any] = {
        "format": "sloserve-app/v1",
        "slo_ms": 200,
        "rate": 100,
        "modules": [{"name": "det", "model": "yolov5s"}, {"name": "cls", "model": "resnet50"}],
        "edges": [{"from": "det", "to": "cls", "fanout": 2}],
        "hardware": str(EXAMPLES / "hardware.yaml"),
        "profiles": str(EXAMPLES / "profiles.yaml"),
    }
    data.update(changes)
    return data
