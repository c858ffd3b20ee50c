"""Structured logs: one JSON object per line (``ts``, ``level``, ``logger``, ``msg`` and extras)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from sloserve.runtime import log_settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; fields passed with ``extra=`` become keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "info") -> None:
    """Send ``sloserve.*`` logs to stderr as JSON lines at ``level`` and above (changed while the
    server runs through Triton's logging extension: :mod:`sloserve.runtime.log_settings`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(log_settings.ADMIT)
    logger = logging.getLogger(log_settings.LOGGER)
    logger.handlers[:] = [handler]
    logger.propagate = False
    log_settings.apply(log_settings.LogSettings.from_level(level))
