"""The configuration schema of a pipeline model (``pipeline.yaml`` in a model directory).

A pipeline is served as one model, like a Triton ensemble: a DAG of member models of the same
repository, wired by tensor names. Each step maps the member's inputs from pipeline tensors
(``input_map``: member input → pipeline tensor) and names its outputs as pipeline tensors
(``output_map``: member output → pipeline tensor). Tensors no step produces are the pipeline's
inputs; its outputs are ``outputs`` (default: tensors produced and consumed by no step). A tensor
read by several steps fans out; a step reading tensors of several steps joins them. Example::

    # repo/two_step/pipeline.yaml
    slo_ms: 100                # default end-to-end deadline budget (a request's timeout overrides)
    deadline_split: split      # split (per-step deadlines) | whole (each step gets the whole budget)
    priority_levels: 2
    steps:
      - model: identity
        input_map: {INPUT0: INPUT0}
        output_map: {OUTPUT0: mid}
      - name: second           # step name (default: the model's name)
        model: identity
        input_map: {INPUT0: mid}
        output_map: {OUTPUT0: OUTPUT0}
    outputs: [OUTPUT0]

Step weights for splitting come from a deployed plan, else from the members' profiles, else are
even (see :mod:`sloserve.policies.deadline_split`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sloserve.core.config import ConfigError, StrictModel, load_model_file

PIPELINE_NAMES = ("pipeline.yaml", "pipeline.yml", "pipeline.json")
"""File names of a pipeline's configuration (first found wins); a directory with one is a pipeline."""


PIPELINE_BACKEND = "pipeline"
"""The ``backend`` (and platform) a pipeline reports in its model configuration."""


class PipelineStep(StrictModel):
    """One member model of the pipeline."""

    name: str | None = None
    """Step name, unique in the pipeline (default: ``model``); plan modules match it."""
    model: str = Field(min_length=1)
    input_map: dict[str, str] = Field(min_length=1)
    """Member input name → pipeline tensor name."""
    output_map: dict[str, str] = Field(min_length=1)
    """Member output name → pipeline tensor name."""

    @property
    def step_name(self) -> str:
        return self.name or self.model


class PipelineConfig(StrictModel):
    """One pipeline's configuration; see the module docstring."""

    name: str | None = None
    """Defaults to the directory name (and must equal it when given)."""
    version: str = "1"
    slo_ms: float | None = Field(default=None, gt=0)
    deadline_split: Literal["split", "whole"] = "split"
    priority_levels: int = Field(default=1, ge=1, le=16)
    default_priority_level: int = Field(default=0, ge=0)
    steps: list[PipelineStep] = Field(min_length=1)
    outputs: list[str] | None = None
    """Pipeline output tensors (default: produced by a step and read by none)."""

    @model_validator(mode="after")
    def _wiring(self) -> PipelineConfig:
        names = [s.step_name for s in self.steps]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"step names must be unique; repeated: {dup} (set 'name' on the steps)")
        producer: dict[str, str] = {}
        for s in self.steps:
            for tensor in s.output_map.values():
                if tensor in producer:
                    first = producer[tensor]
                    raise ValueError(
                        f"tensor {tensor!r} is produced by both steps {first!r} and {s.step_name!r}"
                    )
                producer[tensor] = s.step_name
        if not self.pipeline_inputs():
            raise ValueError("the pipeline has no inputs (every tensor a step reads is produced by a step)")
        for t in self.outputs or []:
            if t not in producer:
                raise ValueError(f"outputs: tensor {t!r} is produced by no step")
        if not self.pipeline_outputs():
            raise ValueError("the pipeline has no outputs")
        self.parents()  # raises on a cycle
        if self.default_priority_level > self.priority_levels:
            raise ValueError(
                f"default_priority_level ({self.default_priority_level}) > priority_levels "
                f"({self.priority_levels})"
            )
        return self

    def producers(self) -> dict[str, str]:
        """Tensor → the step producing it."""
        return {t: s.step_name for s in self.steps for t in s.output_map.values()}

    def pipeline_inputs(self) -> list[str]:
        """Tensors some step reads and no step produces, in order of first use."""
        produced = self.producers()
        out: list[str] = []
        for s in self.steps:
            for t in s.input_map.values():
                if t not in produced and t not in out:
                    out.append(t)
        return out

    def pipeline_outputs(self) -> list[str]:
        """The pipeline's output tensors."""
        if self.outputs is not None:
            return list(self.outputs)
        read = {t for s in self.steps for t in s.input_map.values()}
        return [t for s in self.steps for t in s.output_map.values() if t not in read]

    def parents(self) -> dict[str, tuple[str, ...]]:
        """Step → the steps whose outputs it reads; ``ValueError`` on a cycle."""
        produced = self.producers()
        parents = {
            s.step_name: tuple(dict.fromkeys(produced[t] for t in s.input_map.values() if t in produced))
            for s in self.steps
        }
        done: set[str] = set()
        while len(done) < len(parents):
            ready = [n for n, ps in parents.items() if n not in done and all(p in done for p in ps)]
            if not ready:
                raise ValueError(f"the steps form a cycle: {sorted(set(parents) - done)}")
            done.update(ready)
        return parents


def find_pipeline_config(model_dir: Path) -> Path | None:
    """The pipeline configuration of ``model_dir``, or None when it is not a pipeline."""
    for name in PIPELINE_NAMES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def load_pipeline_config(model_dir: str | Path) -> PipelineConfig:
    """Read and validate a pipeline directory's configuration; :class:`ConfigError` names file and field."""
    directory = Path(model_dir)
    path = find_pipeline_config(directory)
    if path is None:
        raise ConfigError(f"{directory}: no {' / '.join(PIPELINE_NAMES)}")
    config = load_model_file(PipelineConfig, path)
    if config.name is not None and config.name != directory.name:
        raise ConfigError(f"{path}: name: {config.name!r} differs from the directory name {directory.name!r}")
    return config
