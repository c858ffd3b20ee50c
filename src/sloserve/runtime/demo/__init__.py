"""Demo models (real architectures, seeded random weights) and the demo model repository."""

from sloserve.runtime.demo.models import DEMO_MODELS, DemoModel
from sloserve.runtime.demo.repository import (
    build_demo_model,
    default_repository_path,
    ensure_demo_repository,
    model_config,
)

__all__ = [
    "DEMO_MODELS",
    "DemoModel",
    "build_demo_model",
    "default_repository_path",
    "ensure_demo_repository",
    "model_config",
]
