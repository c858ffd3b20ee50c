"""The values the load generator's requests carry: random (the default), zeros, or real data read from
a JSON file in perf_analyzer's ``--input-data`` format.

A file is ``{"data": [ENTRY, ...]}``. An entry gives every input of the model the values of one row
(the batch dimension left out), each as one of::

    [1, 2, 3, ...]                                  row-major values (nested lists are read in order)
    {"b64": "..."}                                  the row's bytes, little-endian, in base64
    {"content": [...] or {"b64": "..."}, "shape": [D1, ...]}
                                                    with the row's shape (it sets variable dimensions
                                                    for this entry, over ``--shape``)

Requests take the entries in turn, round-robin; with ``-b N`` a request's rows are N consecutive
entries. Reading the file checks its structure (each error names the entry and the input); fitting
the values to the model's inputs (datatypes, ranges, shapes) is done by
:func:`sloserve.bench.payload.sized_requests` once the metadata is known.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sloserve.runtime.codec import flatten_lists


class InputDataError(ValueError):
    """An input-data file that cannot be read as perf_analyzer's format; the message names the field."""


@dataclass(frozen=True, slots=True)
class GivenTensor:
    """One input's values in one entry of an input-data file, before the model's datatype is known."""

    values: np.ndarray | bytes
    """The values as the JSON gave them, flat: a bool array (all true/false), an object array of
    Python integers (all integers, of any size: the input's datatype says which it can hold), a
    float64 array (any number a float), or raw little-endian bytes from base64."""
    shape: tuple[int, ...] | None = None
    """The row's shape from the entry's ``"shape"`` (batch dimension left out); None: ``--shape``'s."""


Entry = Mapping[str, GivenTensor]


@dataclass(frozen=True, slots=True)
class InputData:
    """Which values requests carry: ``random`` (drawn once, every request the same), ``zero``, or the
    ``entries`` of a ``file`` (``source``), sent in turn."""

    kind: Literal["random", "zero", "file"] = "random"
    entries: tuple[Entry, ...] = ()
    source: str = ""

    def shaped_by_file(self, name: str) -> bool:
        """Whether every entry of a file gives input ``name`` its own shape."""
        return self.kind == "file" and all(
            name in entry and entry[name].shape is not None for entry in self.entries
        )

    def describe(self) -> str | dict[str, Any]:
        """The choice as a report states it."""
        if self.kind == "file":
            return {"file": self.source, "entries": len(self.entries)}
        return self.kind


RANDOM = InputData()


def input_data_option(text: str) -> InputData:
    """``--input-data``'s argument type: ``random``, ``zero`` or the path of a JSON file."""
    if text in ("random", "zero"):
        return InputData(text)  # type: ignore[arg-type]  # one of the two literals
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'random', 'zero' nor a readable file")
    try:
        return load_input_data(path)
    except InputDataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_input_data(path: Path) -> InputData:
    """The entries of the JSON file at ``path``; :class:`InputDataError` naming what is wrong."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputDataError(f"{path}: not a readable JSON file: {exc}") from None
    if not isinstance(doc, dict) or "data" not in doc:
        raise InputDataError(f'{path}: expected an object with a "data" list of entries')
    other = sorted(set(doc) - {"data"})
    if other:
        why = " (output validation is not supported)" if "validation_data" in other else ""
        raise InputDataError(f'{path}: unknown field(s) {other} beside "data"{why}')
    data = doc["data"]
    if not isinstance(data, list) or not data:
        raise InputDataError(f'{path}: "data" must be a non-empty list of entries')
    entries = []
    for i, entry in enumerate(data):
        where = f"{path}: data[{i}]"
        if isinstance(entry, list):
            raise InputDataError(f"{where} is a list: sequence streams are not supported")
        if not isinstance(entry, dict) or not entry:
            raise InputDataError(f"{where} must be an object mapping each input's name to its values")
        entries.append({name: _tensor(value, f"{where}.{name}") for name, value in entry.items()})
    return InputData("file", tuple(entries), str(path))


def _tensor(value: Any, where: str) -> GivenTensor:
    """One input's values in an entry, in any of the three forms the module docstring lists."""
    if isinstance(value, list):
        return GivenTensor(_values(value, where))
    if isinstance(value, dict) and set(value) == {"b64"}:
        return GivenTensor(_b64(value["b64"], f"{where}.b64"))
    if isinstance(value, dict) and "content" in value and set(value) <= {"content", "shape"}:
        content = value["content"]
        shape = _shape(value["shape"], f"{where}.shape") if "shape" in value else None
        if isinstance(content, list):
            return GivenTensor(_values(content, f"{where}.content"), shape)
        if isinstance(content, dict) and set(content) == {"b64"}:
            return GivenTensor(_b64(content["b64"], f"{where}.content.b64"), shape)
        raise InputDataError(f'{where}.content must be a list of values or {{"b64": "..."}}')
    shown = json.dumps(value)[:60] if not isinstance(value, dict) else f"an object with {sorted(value)}"
    raise InputDataError(
        f'{where}: expected a list of values, {{"b64": "..."}} or {{"content": ..., "shape": [...]}}; '
        f"got {shown}"
    )


def _values(values: list[Any], where: str) -> np.ndarray:
    """A list's values, nested lists flattened in order."""
    flat = flatten_lists(values)
    if not all(type(v) in (bool, int, float) for v in flat):
        raise InputDataError(f"{where}: values must be numbers or booleans (BYTES inputs are not supported)")
    booleans = sum(type(v) is bool for v in flat)
    if booleans and booleans < len(flat):
        raise InputDataError(f"{where}: true/false mixed with numbers")
    if booleans:
        return np.array(flat, dtype=np.bool_)
    if any(type(v) is float for v in flat):
        try:
            return np.array(flat, dtype=np.float64)
        except OverflowError:  # an integer beyond any float beside a float
            raise InputDataError(f"{where}: an integer too large for any datatype") from None
    return np.array(flat, dtype=object)  # Python integers, exact whatever their size


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InputDataError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputDataError(f"{where}: not base64: {exc}") from None


def _shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InputDataError(f"{where} must be a list of non-negative integers, got {json.dumps(shape)[:60]}")
    return tuple(shape)
