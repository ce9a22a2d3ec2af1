"""``meshkit call ROUTE``: the real command against a real app (tests.apps.http_target under meshkit run)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit import cli
from meshkit.cli._call import DEFAULT_ENDPOINT
from tests.cli.conftest import Meshkit
from tests.support.servers import UvicornProcess, free_port

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed() -> Iterator[UvicornProcess]:
    """The same app admitting only the mesh key (a comma list: the second is accepted too)."""
    properties = {"cloud.connector": "none", "mesh.api.key": f"{KEY},older-key"}
    with UvicornProcess("tests.apps.http_target:app", properties=properties) as server:
        yield server


# -- replies ------------------------------------------------------------------------------------------------
def test_a_call_prints_the_body_as_indented_json_and_the_status_on_stderr(
    meshkit: Meshkit, target: UvicornProcess
) -> None:
    result = meshkit("call", "test.echo", "--body", '{"a": [1, 2], "b": "é"}', "--endpoint", target.event_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "é"\n}\n'
    assert result.stderr.startswith("200 OK (test.echo, ran ")


def test_a_text_body_is_printed_as_it_is_and_a_model_is_validated(
    meshkit: Meshkit, target: UvicornProcess
) -> None:
    text = meshkit("call", "test.echo", "--body", '"hello\\nworld"', "--endpoint", target.event_url)
    assert (text.returncode, text.stdout) == (0, "hello\nworld\n")
    greeting = meshkit(
        "call", "test.greeting", "--body", '{"name": "Ann", "count": 1}', "--endpoint", target.url
    )  # a bare http://host:port gets /api/event
    assert greeting.returncode == 0, greeting.stderr
    assert json.loads(greeting.stdout) == {"name": "hello Ann", "count": 2}


def test_json_prints_the_whole_reply_envelope_and_headers_pass_through(
    meshkit: Meshkit, target: UvicornProcess
) -> None:
    result = meshkit(
        *("call", "test.echo", "--json", "--body", "[1, true, null]", "--endpoint", target.event_url),
        *("--header", "color=blue", "--header", "query=a=b", "--header", "empty="),
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["status"] == 200 and reply["body"] == [1, True, None]
    assert reply["from"] == "test.echo"  # the wire's name of the sender
    assert reply["headers"] == {"color": "blue", "query": "a=b", "empty": "", "my_route": "test.echo"}
    assert isinstance(reply["exec_time"], float) and isinstance(reply["round_trip"], float)
    assert reply["id"] and "to" not in reply
    assert result.stderr == ""


def test_the_body_can_come_from_a_file_or_from_stdin(
    meshkit: Meshkit, target: UvicornProcess, tmp_path: Path
) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"from": "a file"}', encoding="utf-8")
    from_file = meshkit("call", "test.echo", "--body", f"@{body}", "--endpoint", target.event_url)
    assert (from_file.returncode, json.loads(from_file.stdout)) == (0, {"from": "a file"})
    piped = meshkit("call", "test.echo", "--body", "-", "--endpoint", target.event_url, input='["stdin"]')
    assert (piped.returncode, json.loads(piped.stdout)) == (0, ["stdin"])


def test_the_endpoint_defaults_to_meshkit_endpoint(meshkit: Meshkit, target: UvicornProcess) -> None:
    result = meshkit("call", "test.echo", "--body", "7", env={"MESHKIT_ENDPOINT": target.event_url})
    assert (result.returncode, result.stdout) == (0, "7\n")


# -- error replies ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "status", "message"),
    [
        ("no.such.route", "404 Not Found", "Route no.such.route not found"),
        ("test.conflict", "409 Conflict", "Already exists"),  # the handler's AppError
        ("test.crash", "500 Internal Server Error", "boom"),  # the handler's exception
        ("test.secret", "403 Forbidden", "Route test.secret is private"),
    ],
)
def test_an_error_reply_exits_1_with_its_status_and_message_on_stderr(
    meshkit: Meshkit, target: UvicornProcess, route: str, status: str, message: str
) -> None:
    result = meshkit("call", route, "--endpoint", target.event_url)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"meshkit: error: {status}") and line.endswith(message), line
    assert route in line and target.event_url in line


def test_an_error_reply_with_json_prints_its_envelope_too(meshkit: Meshkit, target: UvicornProcess) -> None:
    result = meshkit("call", "test.conflict", "--json", "--endpoint", target.event_url)
    assert result.returncode == 1
    reply = json.loads(result.stdout)
    assert (reply["status"], reply["body"], reply["exception"]) == (409, "Already exists", "AppError")
    refused = meshkit("call", "no.such.route", "--json", "--endpoint", target.event_url)
    assert refused.returncode == 1
    assert json.loads(refused.stdout) | {"id": "-"} == {
        "id": "-",
        "status": 404,
        "body": "Route no.such.route not found",
    }


def test_no_reply_within_the_timeout_is_a_408(meshkit: Meshkit, target: UvicornProcess) -> None:
    started = time.monotonic()
    result = meshkit(
        "call", "test.slow", "--header", "seconds=12", "--timeout", "1", "--endpoint", target.event_url
    )
    took = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.startswith("meshkit: error: 408 Request Timeout")
    assert "test.slow" in result.stderr and "timeout for 1 s" in result.stderr
    assert took < 10, f"the command took {took:.1f} s for a 1 s timeout"  # well before the handler ends


# -- no answer, or not meshkit's ----------------------------------------------------------------------------
def test_an_unreachable_port_exits_3_saying_so(meshkit: Meshkit) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/event"
    result = meshkit("call", "test.echo", "--endpoint", url)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr == f"meshkit: error: cannot reach {url}: connection refused\n"


def test_a_url_that_is_not_event_over_http_exits_5(meshkit: Meshkit, target: UvicornProcess) -> None:
    result = meshkit("call", "test.echo", "--endpoint", target.url + "/info")  # 405, JSON, no envelope
    assert result.returncode == 5
    assert result.stderr == (
        f"meshkit: error: {target.url}/info: no event envelope in the answer: is this a meshkit app?\n"
    )


# -- the mesh key -------------------------------------------------------------------------------------------
def test_a_missing_or_wrong_mesh_key_exits_4_and_the_right_one_is_admitted(
    meshkit: Meshkit, keyed: UvicornProcess
) -> None:
    call = ("call", "test.echo", "--body", '"in"', "--endpoint", keyed.event_url)
    refused = "the mesh key was refused: pass --key or set MESH_API_KEY"
    missing = meshkit(*call)
    assert missing.returncode == 4 and missing.stdout == ""
    assert missing.stderr == f"meshkit: error: {keyed.event_url}: {refused} (none was given)\n"
    wrong = meshkit(*call, "--key", "not-the-key")
    assert wrong.returncode == 4
    assert f"{refused} (the key given is not accepted)" in wrong.stderr
    assert "not-the-key" not in wrong.stderr
    assert meshkit(*call, "--key", "not-the-key", env={"MESH_API_KEY": KEY}).returncode == 4  # --key first
    right = meshkit(*call, "--key", KEY)
    assert (right.returncode, right.stdout) == (0, "in\n"), right.stderr
    from_env = meshkit(*call, env={"MESH_API_KEY": "older-key"})
    assert (from_env.returncode, from_env.stdout) == (0, "in\n"), from_env.stderr


# -- bad command lines: nothing is sent --------------------------------------------------------------------
def test_a_body_that_is_not_json_exits_2_before_sending_anything(meshkit: Meshkit) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/api/event"  # had it been sent: exit 3
    result = meshkit("call", "test.echo", "--endpoint", unreachable, "--body", "{bad")
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("usage: meshkit call")
    assert result.stderr.splitlines()[-1] == (
        "meshkit call: error: argument --body: not valid JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--body", "@/no/such/file.json"], "argument --body: cannot read /no/such/file.json"),
        (["--body", "-"], "argument --body: not valid JSON in stdin"),  # stdin is empty here
        (["--header", "novalue"], "argument --header: expected KEY=VALUE, got 'novalue'"),
        (["--header", "=v"], "argument --header: expected KEY=VALUE, got '=v'"),
        (["--timeout", "0"], "argument --timeout: expected seconds above 0"),
        (["--timeout", "soon"], "argument --timeout: not a number of seconds: 'soon'"),
        (
            ["--endpoint", "ftp://host/api/event"],
            "argument --endpoint: not an http(s) URL: 'ftp://host/api/event'",
        ),
        (["--endpoint", "http://:80"], "argument --endpoint: not an http(s) URL"),
        (["--endpoint", "http://h:99999"], "argument --endpoint: not an http(s) URL"),
        (["-Dcloud.connector=kafka"], "-D arguments are for meshkit run only"),
    ],
)
def test_a_bad_call_command_line_exits_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["call", "test.echo", *args]) == 2
    out, err = capsys.readouterr()
    assert message in err and "usage: meshkit" in err
    assert out == ""


def test_a_bad_meshkit_endpoint_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHKIT_ENDPOINT", "gopher://x")
    assert cli.main(["call", "test.echo"]) == 2
    assert capsys.readouterr().err == "meshkit: error: MESHKIT_ENDPOINT: not an http(s) URL: 'gopher://x'\n"


def test_call_options_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHKIT_ENDPOINT", raising=False)
    options = cli.parse_args(["call", "hello.world"])
    assert options == cli.CallOptions(route="hello.world", endpoint=DEFAULT_ENDPOINT)
    assert DEFAULT_ENDPOINT == "http://127.0.0.1:8080/api/event"
    given = cli.parse_args(["call", "a.b", "--endpoint", "127.0.0.1:9000", "--body", "null", "--json"])
    assert given == cli.CallOptions("a.b", "http://127.0.0.1:9000/api/event", None, json=True)
    mounted = cli.parse_args(["call", "a.b", "--endpoint", "https://gw.example.com/svc/api/event"])
    assert isinstance(mounted, cli.CallOptions)
    assert mounted.endpoint == "https://gw.example.com/svc/api/event"


def test_call_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["call", "--help"]) == 0
    out = capsys.readouterr().out
    for line in ("0  a 2xx reply", "1  an error reply", "2  a bad command line", "3  cannot reach the URL"):
        assert line in out
    assert "4  the mesh key was refused" in out and "5  the URL answered" in out
