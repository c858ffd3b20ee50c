"""Reading and validating user files (profiles, experiments, model configs, apps).

Every loader in sloserve goes through :func:`load_model_file` so that a bad file always gives a
:class:`ConfigError` that names the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A user file or value is invalid; the message names the file and the field."""


MAX_SEED = 2**32 - 1
"""NumPy's and PyTorch's seeds are 32-bit."""

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
"""A random seed in a config file."""


class StrictModel(BaseModel):
    """Base for config schemas: unknown fields are errors, NaN and infinities too (a file
    that means "none" leaves the field out), values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def read_document(path: str | Path) -> Any:
    """Parse a YAML or JSON file (by extension; YAML otherwise) into plain Python data."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {exc}"
        ) from None


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: ``source: field.path: message``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        # a check of our own says what is wrong without pydantic's "Value error, " before it; one
        # across the fields of the whole file names them itself
        msg = str(err.get("ctx", {}).get("error", err["msg"])) if err["type"] == "value_error" else err["msg"]
        lines.append(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}")
    return "\n".join(lines)


def validate(schema: type[M], data: Any, source: str) -> M:
    """Validate plain data against ``schema``; raise :class:`ConfigError` naming ``source`` and fields."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_model_file(schema: type[M], path: str | Path) -> M:
    """Read a YAML/JSON file and validate it against ``schema``."""
    return validate(schema, read_document(path), str(path))


def write_document(data: Any, path: str | Path) -> None:
    """Write plain data as JSON (``.json``) or YAML (anything else)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".json":
        p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        p.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
