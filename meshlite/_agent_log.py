"""The agent's log lines: Consul's text format, or one JSON object per line.

Theory of operation
-------------------
Consul logs through hashicorp/go-hclog; we copy its two shapes so tools written for Consul
read ours.  Text: ``2026-11-26T23:10:00.123Z [INFO]  meshlite.agent: member joined:
member=b address=127.0.0.1:7947`` — the level bracketed and padded to hclog's width,
then the module (the Python logger name), the message and ``key=value`` fields.  JSON
(``-log-json``): ``@timestamp``, ``@level``, ``@message``, ``@module`` plus the same
fields as keys.  Timestamps are ISO-8601 UTC with milliseconds, always ``Z``.

Structured fields travel on the record as ``extra={"fields": {...}}`` (one key, because
``extra`` may not reuse LogRecord attribute names such as ``name``); any other
non-standard attribute a library record carries is rendered as a field too.  Field names
are part of the contract with whatever parses the log (see ``docs/cli.md``).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["TRACE", "AgentFormatter", "fields", "level_number", "setup_logging"]

TRACE = logging.DEBUG - 5  # hclog's TRACE sits below DEBUG; Python has no name for it
_LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO}
_LEVELS |= {"warn": logging.WARNING, "error": logging.ERROR}
# LogRecord's own attributes: anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}
_TEXT_LEVEL_WIDTH = 7  # len("[ERROR]"): hclog pads so messages line up


def level_number(name: str) -> int:
    """hclog level name (``trace`` ... ``error``) -> ``logging`` level number."""
    return _LEVELS[name]


def level_name(levelno: int) -> str:
    """``logging`` level number -> hclog's lowercase name (``warning`` is ``warn``)."""
    if levelno < logging.DEBUG:
        return "trace"
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    return "warn" if levelno < logging.ERROR else "error"


def fields(**values: Any) -> dict[str, Any]:
    """``log.info(msg, extra=fields(member="b"))``: attach structured fields to a record."""
    return {"fields": values}


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str)
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


class AgentFormatter(logging.Formatter):
    """hclog-style text (default) or JSON lines (``as_json=True``)."""

    def __init__(self, *, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def record_fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {exc}"
        return out

    def format(self, record: logging.LogRecord) -> str:
        values = self.record_fields(record)
        message = record.getMessage()
        if self.as_json:
            line: dict[str, Any] = {
                "@timestamp": _timestamp(record.created),
                "@level": level_name(record.levelno),
                "@message": message,
                "@module": record.name,
            }
            line.update(values)
            if record.exc_info:
                line["exception"] = "".join(traceback.format_exception(*record.exc_info))
            return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))
        level = f"[{level_name(record.levelno).upper()}]"
        text = f"{_timestamp(record.created)} {level:<{_TEXT_LEVEL_WIDTH}} {record.name}: {message}"
        if values:
            text += ":" + "".join(f" {k}={_text_value(v)}" for k, v in values.items())
        if record.exc_info:  # rare and precious: keep the traceback, indented under the line
            tb = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            text += "\n" + "\n".join("    " + ln for ln in tb.splitlines())
        return text


def setup_logging(level: str, *, as_json: bool, stream: TextIO | None = None) -> logging.Logger:
    """Send every ``meshlite.*`` record through one :class:`AgentFormatter` handler."""
    root = logging.getLogger("meshlite")
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(AgentFormatter(as_json=as_json))
    root.addHandler(handler)
    root.setLevel(level_number(level))
    root.propagate = False  # the agent owns the process: no duplicate lines via the root
    return logging.getLogger("meshlite.agent")
