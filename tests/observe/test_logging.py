"""Structured logs (issue 6.4): `log.format=json` gives one JSON object per line with origin, route and trace;
the default text format keeps the seed's shape and wording."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from typing import Any

import pytest

from meshkit import AppConfig, ConfigError
from meshkit.core import EventContext, current_event
from meshkit.observe._logging import JsonFormatter, make_formatter, set_log_origin, setup_logging
from tests.support.servers import REPO

ORIGIN = "20261125" + "ab" * 16


def _record(message: str, *args: Any, level: int = logging.WARNING, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("the cause")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("meshkit.worker", level, __file__, 1, message, args, exc_info)


@pytest.fixture
def origin() -> Any:
    set_log_origin(ORIGIN)
    yield ORIGIN
    set_log_origin(None)


def test_a_json_line_has_time_level_logger_message_and_origin(origin: str) -> None:
    line = JsonFormatter().format(_record("%s failed on event %s: %s", "a.b", "e1", "boom"))
    data = json.loads(line)
    assert "\n" not in line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data.pop("time"))
    assert data == {
        "level": "WARNING",
        "logger": "meshkit.worker",
        "message": "a.b failed on event e1: boom",
        "origin": origin,
    }


def test_a_json_line_written_while_a_function_runs_has_its_route_and_trace(origin: str) -> None:
    token = current_event.set(EventContext("hello.world", "t-1", "GET /api/hello"))
    try:
        traced = json.loads(JsonFormatter().format(_record("inside", exc=True)))
    finally:
        current_event.reset(token)
    token = current_event.set(EventContext("hello.world", None, None))
    try:
        untraced = json.loads(JsonFormatter().format(_record("untraced")))
    finally:
        current_event.reset(token)
    assert (traced["route"], traced["trace_id"], traced["trace_path"]) == (
        "hello.world",
        "t-1",
        "GET /api/hello",
    )
    assert "ValueError: the cause" in traced["exception"] and "Traceback" in traced["exception"]
    assert untraced["route"] == "hello.world" and "trace_id" not in untraced


def test_a_trace_record_is_a_nested_object_in_json(origin: str) -> None:
    trace = {"trace_id": "t-2", "trace_path": "GET /x", "route": "a.b", "status": 200}
    record = _record("%s", json.dumps(trace), level=logging.INFO)
    record.trace = trace
    data = json.loads(JsonFormatter().format(record))
    assert data["trace"] == trace and data["message"] == "trace"
    assert (data["route"], data["trace_id"], data["trace_path"]) == ("a.b", "t-2", "GET /x")


def test_the_text_format_is_the_seeds() -> None:
    line = make_formatter("text").format(_record("Public %s with %d instance", "hello.world", 1))
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(stamp + r" WARNING meshkit\.worker - Public hello\.world with 1 instance", line)


def test_an_unknown_log_format_is_refused() -> None:
    config = AppConfig.load(argv=[], environ={}, overrides={"log.format": "xml"})
    with pytest.raises(ConfigError, match=r"log\.format='xml'"):
        setup_logging(config)


_SCRIPT = """
import asyncio, logging, sys
from meshkit import AppError, FunctionRegistry, PostOffice, create_app

registry = FunctionRegistry()
log = logging.getLogger("meshkit.demo")

@registry.route("log.demo")
async def demo(body):
    log.info("working on %s", body)
    raise RuntimeError("it broke")

app = create_app(name="log-app", functions=registry, properties={"log.format": sys.argv[1]})

async def main():
    async with app.router.lifespan_context(app):
        platform = app.state.platform
        await PostOffice(platform, trace_id="t-77", trace_path="GET /api/demo").request("log.demo", 5)
        await PostOffice(platform).request("log.demo", 6)
        print("ORIGIN", platform.origin, flush=True)

asyncio.run(main())
"""


def _run(log_format: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, log_format],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    origin = done.stdout.split()[-1]
    return origin, done.stderr.splitlines()


def test_json_logs_of_a_real_process_parse_and_carry_origin_route_and_trace() -> None:
    origin, lines = _run("json")
    assert lines
    data = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(d["origin"] == origin and {"time", "level", "logger", "message"} <= set(d) for d in data)
    messages = [d["message"] for d in data]
    assert "Public log.demo with 1 instance" in messages  # the seed's wording, inside the JSON
    (working,) = [d for d in data if d["message"] == "working on 5"]
    assert (working["route"], working["trace_id"], working["trace_path"]) == (
        "log.demo",
        "t-77",
        "GET /api/demo",
    )
    (untraced,) = [d for d in data if d["message"] == "working on 6"]
    assert untraced["route"] == "log.demo" and "trace_id" not in untraced
    failed = [d for d in data if d["message"].startswith("log.demo failed on event")]
    assert len(failed) == 2 and all("RuntimeError: it broke" in d["exception"] for d in failed)
    (trace,) = [d for d in data if d["logger"] == "meshkit.trace"]
    assert trace["trace"]["status"] == 500 and trace["trace"]["exception"] == "it broke"
    assert trace["trace_id"] == "t-77" and trace["route"] == "log.demo"


def test_text_logs_of_a_real_process_keep_the_seeds_lines() -> None:
    origin, lines = _run("text")
    shape = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (INFO|WARNING) [a-z._]+ - .+")
    assert all(
        shape.fullmatch(line) for line in lines if not line.startswith(("Traceback", " ", "RuntimeError"))
    )
    assert any(line.endswith("INFO meshkit.platform - Public log.demo with 1 instance") for line in lines)
    assert any(line.endswith(f"log-app 1.0.0 started as {origin} with 1 functions") for line in lines)
    trace_lines = [line for line in lines if " INFO meshkit.trace - " in line]
    assert len(trace_lines) == 1 and json.loads(trace_lines[0].split(" - ", 1)[1])["trace_id"] == "t-77"
