"""Reading and validating user files (profiles, experiments, model configs, apps).

Every loader in sloserve goes through :func:`load_model_file` so that a bad file always gives a
:class:`ConfigError` that names the file and the field.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A user file or value is invalid; the message names the file and the field."""


MAX_SEED = 2**32 - 1
"""NumPy's and PyTorch's seeds are 32-bit."""

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
"""A random seed in a config file."""


def a_number(value: Any) -> Any:
    """Refuses booleans and text where a number is due (pydantic would read ``true`` as 1 and
    ``"8"`` as 8); returns anything else unchanged, for the field's own check."""
    if isinstance(value, bool | str):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _checks_numbers(annotation: Any) -> bool:
    """Whether :func:`_numbers_only` has anything to check in a field of this type: a number, or a
    list, tuple or mapping holding numbers (``None`` allowed beside them)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _checks_numbers(args[0])
    if origin in (Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        return bool(rest) and all(_checks_numbers(arg) for arg in rest)
    if origin in (list, tuple, set, frozenset, dict):
        return any(_checks_numbers(arg) for arg in args if arg is not Ellipsis)
    return annotation in (int, float)


def _numbers_only(annotation: Any, value: Any, where: str) -> None:
    """:func:`a_number` on ``value`` where ``annotation`` wants a number, and on the items (keys and
    values) of lists, tuples and mappings of numbers; ValueError naming ``where``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        _numbers_only(args[0], value, where)
    elif origin in (Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if value is not None and len(rest) == 1:
            _numbers_only(rest[0], value, where)
    elif origin in (list, set, frozenset) and isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _numbers_only(args[0], item, f"{where}.{i}")
    elif origin is tuple and isinstance(value, list | tuple):
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        for i, (kind, item) in enumerate(zip(kinds, value, strict=False)):
            _numbers_only(kind, item, f"{where}.{i}")
    elif origin is dict and isinstance(value, Mapping):
        for key, item in value.items():
            _numbers_only(args[0], key, f"{where} key {key!r}")
            _numbers_only(args[1], item, f"{where}.{key}")
    elif annotation in (int, float):
        try:
            a_number(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


@functools.cache
def _number_fields(schema: type[BaseModel]) -> dict[str, Any]:
    """Key (alias where given) → type of ``schema``'s fields that hold numbers (or lists, tuples or
    mappings of them)."""
    fields = schema.model_fields.items()
    return {info.alias or name: info.annotation for name, info in fields if _checks_numbers(info.annotation)}


class StrictModel(BaseModel):
    """Base for config schemas: unknown fields are errors, NaN and infinities too (a file
    that means "none" leaves the field out), so are booleans and text in number fields
    (:func:`a_number`), and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        """Applies :func:`a_number` to each given field that holds numbers, and to the numbers in
        lists, tuples and mappings (a model-wide check: a field's own would not be allowed on a
        union's discriminator)."""
        if isinstance(data, Mapping):
            for key, annotation in _number_fields(cls).items():
                if key in data:
                    _numbers_only(annotation, data[key], key)
        return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a mapping that names a key twice is an error (the safe
    loader keeps the last, so a setting written twice silently loses one of its values)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<:`` merges may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            with contextlib.suppress(TypeError):  # an unhashable key: the safe loader says so
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YAML_12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
"""A number with an exponent and no dot (``1e3``, ``2.5E-3`` too): YAML 1.2 and JSON read it as a
float, PyYAML (YAML 1.1) as text, which a number field would then refuse."""
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_12_FLOAT, list("-+0123456789."))


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: an object that names a key twice is an error."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_document(text: str, json_syntax: bool) -> Any:
    """Parse YAML (or JSON) text into plain Python data; a key named twice in one mapping is an
    error (ValueError or ``yaml.YAMLError``)."""
    if json_syntax:
        return json.loads(text, object_pairs_hook=unique_keys)
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a safe loader's subclass


def read_document(path: str | Path) -> Any:
    """Parse a YAML or JSON file (by extension; YAML otherwise) into plain Python data."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    json_syntax = p.suffix.lower() == ".json"
    try:
        return parse_document(text, json_syntax)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if json_syntax else 'YAML'}: {exc}") from None


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
