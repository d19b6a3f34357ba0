"""One-line structured logs: ``key=value`` text, or JSON with CLARION_LOG_JSON=1."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# uvicorn adds ``color_message`` (the message with ANSI colours) to its records: not a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = f"{ts} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        if extras:
            line += " " + extras
        if record.exc_info:
            # Keep one line per record: the traceback's newlines are escaped.
            line += " exc=" + self.formatException(record.exc_info).replace("\n", "\\n")
        return line


def _quiet_alembic_context(record: logging.LogRecord) -> bool:
    """Drop alembic's two lines about its own set-up ("Context impl SQLiteImpl.", "Will assume
    non-transactional DDL."), written every time a process reads the schema's revision; keep
    what it migrates ("Running upgrade 0006 -> 0007")."""
    if record.name != "alembic.runtime.migration" or record.levelno > logging.INFO:
        return True
    message = str(record.msg)
    return not message.startswith(("Context impl", "Will assume"))


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Route clarion's, uvicorn's and SQLAlchemy's loggers to one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else LineFormatter())
    handler.addFilter(_quiet_alembic_context)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
