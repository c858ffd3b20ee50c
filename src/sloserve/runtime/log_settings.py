"""Triton's logging extension: what the server logs, read and changed while it runs.

``GET /v2/logging`` (gRPC ``LogSettings`` with no settings) answers the settings; ``POST`` with a
JSON object of some of them changes those and answers all of them. Settings (Triton's names):

- ``log_info``, ``log_warning``, ``log_error`` (booleans): whether records of that level are written;
- ``log_verbose_level`` (an integer from 0 to 2³² - 1): above 0, debug records are written too;
- ``log_file`` (text): always ``""`` — the server writes to its standard error, which its operator
  redirects; a client may not make the server write files;
- ``log_format`` (text): always ``"json"`` — one JSON object per line
  (:mod:`sloserve.runtime.logs`).

An unknown setting, a value of the wrong type or a value that cannot be changed is refused (400)
naming it, and nothing is changed. The settings apply to the ``sloserve`` loggers of the process:
the level of the ``sloserve`` logger, and a filter on the handler :func:`configure_logging` installs
(a process that embeds the server and sends the records elsewhere gets the level only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from sloserve.runtime.codec import ProtocolError, clipped

LOGGER = "sloserve"
"""The logger whose records the settings govern (and its children's)."""

LOG_FORMAT = "json"
MAX_VERBOSE_LEVEL = 2**32 - 1
"""Largest ``log_verbose_level`` (Triton's is a uint32, as gRPC carries it)."""
LEVELS = ("debug", "info", "warning", "error")
"""``sloserve serve --log-level`` choices."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    """The logging extension's settings (Triton's names and types)."""

    log_file: str = ""
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_verbose_level: int = 0
    log_format: str = LOG_FORMAT

    @classmethod
    def from_level(cls, level: str) -> LogSettings:
        """The settings ``--log-level level`` means: that level and those above it."""
        rank = LEVELS.index(level.lower())
        return cls(log_info=rank <= 1, log_warning=rank <= 2, log_verbose_level=1 if rank == 0 else 0)

    def admits(self, levelno: int) -> bool:
        """Whether a record of this level is written."""
        if levelno >= logging.ERROR:
            return self.log_error
        if levelno >= logging.WARNING:
            return self.log_warning
        if levelno >= logging.INFO:
            return self.log_info
        return self.log_verbose_level > 0


_TYPES: dict[str, type] = {
    "log_file": str,
    "log_info": bool,
    "log_warning": bool,
    "log_error": bool,
    "log_verbose_level": int,
    "log_format": str,
}
_FIXED = {"log_file": "", "log_format": LOG_FORMAT}
"""Settings a client may only set to what they are, and why."""
_WHY_FIXED = {
    "log_file": "the server logs to its standard error (its operator redirects it); a client may "
    "not make it write files",
    "log_format": "the server writes one JSON object per line",
}


class _Admit(logging.Filter):
    """The handler filter that applies :data:`current`'s per-level switches."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _current.admits(record.levelno)


_current = LogSettings()
ADMIT = _Admit()
"""Put on a handler of ``sloserve`` records (:func:`~sloserve.runtime.logs.configure_logging` does)."""


def apply(settings: LogSettings) -> None:
    """Make ``settings`` the ones in force: the ``sloserve`` logger's level (its lowest admitted
    level, so records no switch admits are not even made) and :data:`ADMIT`'s switches."""
    global _current
    _current = settings
    levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
    lowest = next((lv for lv in levels if settings.admits(lv)), logging.CRITICAL + 1)
    logging.getLogger(LOGGER).setLevel(lowest)


def update(changes: Any) -> dict[str, Any]:
    """Called for ``POST /v2/logging`` (and gRPC ``LogSettings``): check every change, apply them
    all or none, and return the settings now in force. :class:`ProtocolError` (400) names a bad one."""
    if not isinstance(changes, Mapping):
        raise ProtocolError("log settings must be a JSON object of setting names and values")
    for name, value in changes.items():
        want = _TYPES.get(name)
        if want is None:
            raise ProtocolError(f"unknown log setting {_shown(name)}; known: {sorted(_TYPES)}")
        if type(value) is not want or (isinstance(value, int) and not 0 <= value <= MAX_VERBOSE_LEVEL):
            kind = {str: "text", bool: "a boolean", int: f"an integer from 0 to {MAX_VERBOSE_LEVEL}"}[want]
            raise ProtocolError(f"log setting {name!r} must be {kind}, got {_shown(value)}")
        if name in _FIXED and value != _FIXED[name]:
            raise ProtocolError(f"log setting {name!r} can only be {_FIXED[name]!r}: {_WHY_FIXED[name]}")
    apply(replace(_current, **dict(changes)))
    return asdict(_current)


def _shown(value: Any) -> str:
    """How a refusal quotes a client's name or value: its ``repr``, cut short (it may be 20 MB)."""
    if isinstance(value, str | bytes | list):
        value = value[:64]
    return clipped(repr(value), 64)


def settings_document() -> dict[str, Any]:
    """Called for ``GET /v2/logging``: the settings in force."""
    return asdict(_current)
