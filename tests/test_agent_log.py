"""The agent's log formats: hclog-style text and JSON lines, with structured fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from meshlite._agent_log import TRACE, AgentFormatter, fields, level_name, setup_logging

# 2026-11-26T23:10:00.123Z as a POSIX time
CREATED = 1795734600.123456


def record(
    msg: str,
    *args: object,
    level: int = logging.INFO,
    name: str = "meshlite.agent",
    **extra: object,
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.created = CREATED
    rec.msecs = 123.456
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_text_line_looks_like_consul() -> None:
    rec = record("member joined", fields={"member": "b", "address": "127.0.0.1:7947"})
    line = AgentFormatter(as_json=False).format(rec)
    assert line == (
        "2026-11-26T23:10:00.123Z [INFO]  meshlite.agent: member joined: "
        "member=b address=127.0.0.1:7947"
    )


@pytest.mark.parametrize(
    ("level", "text", "json_level"),
    [
        (TRACE, "[TRACE] ", "trace"),
        (logging.DEBUG, "[DEBUG] ", "debug"),
        (logging.INFO, "[INFO]  ", "info"),
        (logging.WARNING, "[WARN]  ", "warn"),
        (logging.ERROR, "[ERROR] ", "error"),
        (logging.CRITICAL, "[ERROR] ", "error"),
    ],
)
def test_levels_are_hclog_names(level: int, text: str, json_level: str) -> None:
    assert level_name(level) == json_level
    line = AgentFormatter(as_json=False).format(record("m", level=level))
    assert line == f"2026-11-26T23:10:00.123Z {text}meshlite.agent: m"


def test_text_values_are_quoted_only_when_needed() -> None:
    rec = record(
        "x",
        fields={"a": "", "b": "two words", "c": True, "d": None, "e": ["p", 1], "f": 'q"'},
    )
    line = AgentFormatter(as_json=False).format(rec)
    assert line.endswith(': a="" b="two words" c=true d=null e=["p",1] f="q\\""')


def test_json_line_has_stable_keys() -> None:
    rec = record("member %s", "dead", level=logging.WARNING, **fields(event="dead", member="c"))
    line = AgentFormatter(as_json=True).format(rec)
    assert "\n" not in line
    assert json.loads(line) == {
        "@timestamp": "2026-11-26T23:10:00.123Z",
        "@level": "warn",
        "@message": "member dead",
        "@module": "meshlite.agent",
        "event": "dead",
        "member": "c",
    }


def test_library_extras_become_fields() -> None:
    rec = record("refused", name="meshlite.driver", peer="127.0.0.1:1", reason="bad-key")
    out = json.loads(AgentFormatter(as_json=True).format(rec))
    assert (out["@module"], out["peer"], out["reason"]) == (
        "meshlite.driver",
        "127.0.0.1:1",
        "bad-key",
    )


def test_exceptions_are_fields_and_json_stays_one_line() -> None:
    exc = ValueError("boom")
    rec = logging.LogRecord(
        "meshlite", logging.ERROR, __file__, 1, "failed", (), (ValueError, exc, None)
    )
    out = json.loads(AgentFormatter(as_json=True).format(rec))
    assert out["error"] == "ValueError: boom"
    assert out["exception"] == "ValueError: boom\n"
    text = AgentFormatter(as_json=False).format(rec)
    assert text.splitlines()[0].endswith('failed: error="ValueError: boom"')


@pytest.fixture
def clean_meshlite_logger() -> Iterator[None]:
    logger = logging.getLogger("meshlite")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.usefixtures("clean_meshlite_logger")
def test_setup_routes_library_records_and_filters_by_level() -> None:
    out = io.StringIO()
    agent_log = setup_logging("warn", as_json=True, stream=out)
    logging.getLogger("meshlite.transport").info("hidden")
    logging.getLogger("meshlite.transport").warning("shown")
    agent_log.error("also shown", extra=fields(event="x"))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["@module"], x["@message"]) for x in lines] == [
        ("meshlite.transport", "shown"),
        ("meshlite.agent", "also shown"),
    ]
    setup_logging("info", as_json=False, stream=out)  # reconfiguring replaces, never doubles
    assert len(logging.getLogger("meshlite").handlers) == 1
