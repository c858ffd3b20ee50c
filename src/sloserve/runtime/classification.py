"""Triton's classification extension: an output answered as its highest-valued classes.

A client asks for it per output: over HTTP with the output's ``"parameters": {"classification": 3}``,
over gRPC with ``parameters["classification"].int64_param``; ``tritonclient`` sends either for
``InferRequestedOutput(name, class_count=3)``. Instead of the tensor, that output comes back as a
``BYTES`` tensor of shape ``[rows, k]`` (``[k]`` for a model without a batch dimension), where
``k = min(count, classes per row)``; each element is ``"<value>:<index>"``, or
``"<value>:<index>:<label>"`` when the model has a label for that index, highest value first
(equal values: the lower index first; NaN ranks as the lowest value). Values are written as
Triton writes them (C++'s ``std::to_string``: six decimals for floats, plain integers). Labels
come from the model's ``labels`` files (one label per line, line ``i`` for index ``i``; Triton's
``label_filename``).

Only numeric outputs have an order: ``BOOL``, ``BYTES``, ``FP16`` and ``BF16`` outputs are refused
(400), as by Triton.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sloserve.core.config import ConfigError
from sloserve.runtime.codec import ProtocolError

CLASSIFIABLE = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"}
)
"""Datatypes an output must have to be classified."""


def check_classifiable(name: str, datatype: str) -> None:
    """Refuse (400) classification of output ``name`` of ``datatype``; called before a request is queued."""
    if datatype not in CLASSIFIABLE:
        raise ProtocolError(f"output {name!r}: classification needs a numeric output; this one is {datatype}")


def top_classes(tensor: np.ndarray, count: int, *, batched: bool, labels: Sequence[str] = ()) -> np.ndarray:
    """The ``count`` highest-valued classes of each row of ``tensor`` as a ``BYTES`` tensor (an
    object array of ``bytes``); see the module docstring for its shape and elements."""
    n = tensor.shape[0] if batched else 1
    width = int(np.prod(tensor.shape[1:] if batched else tensor.shape))
    rows = tensor.reshape(n, width)
    k = min(count, width)
    floats = rows.dtype.kind == "f"
    keys = np.where(np.isnan(rows), -np.inf, rows) if floats else rows  # NaN is no score: ranked last
    # a stable ascending sort of the reversed row, read backwards: descending, ties by lower index
    order = width - 1 - np.argsort(keys[:, ::-1], axis=1, kind="stable")[:, ::-1][:, :k]
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, (values, indices) in enumerate(zip(rows, order, strict=True)):
        for c, i in enumerate(indices.tolist()):
            value = values[i]
            text = f"{value:f}" if floats else str(int(value))
            label = labels[i] if i < len(labels) else ""
            out[r, c] = (f"{text}:{i}:{label}" if label else f"{text}:{i}").encode()
    return out if batched else out.reshape(k)


def read_labels(path: Path, where: str) -> tuple[str, ...]:
    """The labels in ``path``, one per line (trailing whitespace dropped; an empty line: that
    index has no label). :class:`ConfigError` naming ``where`` if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    return tuple(line.rstrip() for line in text.splitlines())
