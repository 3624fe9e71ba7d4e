"""Structured logs: one JSON object per line, for access records and model events alike."""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from typing import Any

import orjson

__all__ = ["ACCESS", "EVENTS", "JsonFormatter", "event", "setup_logging"]

ACCESS = logging.getLogger("amber.serving.access")
EVENTS = logging.getLogger("amber.serving")


def event(level: int, name: str, **fields: Any) -> None:
    """Log a model event (``model_loaded``, ``swap_failed``, ...) with its fields."""
    if EVENTS.isEnabledFor(level):
        EVENTS.log(level, name, extra={"fields": {"event": name, **fields}})


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", ...fields or "message"}``, one line each."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "info", *, access_log: bool = True) -> None:
    """Send Amber's and uvicorn's logs to stderr as JSON lines (the CLI's set-up)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    ACCESS.disabled = not access_log
    logging.captureWarnings(True)
