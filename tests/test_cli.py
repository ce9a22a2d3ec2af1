"""The ``meshkit`` command line: ``meshkit run MODULE:APP [--host] [--port] [--log-level] [-Dkey=value ...]``.

-D arguments may appear anywhere; bad command lines exit 2 with the reason on stderr.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshkit import cli
from meshkit.config import ConfigError, set_system_properties, system_properties
from tests.support.eventually import wait_until
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """main() puts --app-dir on sys.path and sets system properties: undo both after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    set_system_properties({})
    yield
    set_system_properties({})


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace meshkit.http.serve (uvicorn, draining on SIGTERM) so main() can be followed to the end
    without starting a server."""
    import meshkit.http

    calls: list[dict[str, Any]] = []

    def fake_serve(app: str, **kwargs: Any) -> None:
        calls.append({"app": app, **kwargs, "system_properties": system_properties()})

    monkeypatch.setattr(meshkit.http, "serve", fake_serve)
    return calls


def make_app_module(directory: Path, module: str, properties: str | None = None) -> None:
    (directory / f"{module}.py").write_text("app = None\n", encoding="utf-8")
    if properties is not None:
        (directory / "application.properties").write_text(properties, encoding="utf-8")


# --- parsing -----------------------------------------------------------------------------------------------


def test_run_defaults() -> None:
    options = cli.parse_args(["run", "example_services.rest:app"])
    assert options == cli.RunOptions(app="example_services.rest:app")
    assert (options.host, options.port, options.log_level) == ("127.0.0.1", None, "info")
    assert options.properties == {}


def test_d_arguments_may_appear_anywhere_on_the_command_line() -> None:
    options = cli.parse_args(
        [
            *["-Dcloud.connector=kafka", "run", "-Dquery=a=b", "svc.main:app", "--port", "8083", "-Dflag"],
            *["--host", "0.0.0.0", "--log-level", "debug"],
        ]
    )
    assert options.app == "svc.main:app"
    assert (options.host, options.port, options.log_level) == ("0.0.0.0", 8083, "debug")
    assert options.properties == {"cloud.connector": "kafka", "query": "a=b", "flag": "true"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["serve", "svc:app"], "invalid choice: 'serve'"),
        (["run"], "the following arguments are required: MODULE:APP"),
        (["run", "svc.main"], "expected MODULE:APP (e.g. example.main:app), got 'svc.main'"),
        (["run", "svc.main:"], "expected MODULE:APP"),
        (["run", "svc:app", "--port", "http"], "not a port number: 'http'"),
        (["run", "svc:app", "--port", "70000"], "port out of range 0-65535: 70000"),
        (["run", "svc:app", "--log-level", "loud"], "invalid choice: 'loud'"),
        (["run", "svc:app", "--workers", "2"], "unrecognized arguments: --workers 2"),
        (["run", "svc:app", "-D=x"], "bad -D argument '-D=x': expected -Dkey=value with a non-empty key"),
        (["run", "svc:app", "-D"], "bad -D argument '-D'"),
    ],
)
def test_a_bad_command_line_exits_2_with_the_reason_on_stderr(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], uvicorn_calls: list[dict[str, Any]]
) -> None:
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err
    assert "usage: meshkit" in err
    assert out == ""
    assert uvicorn_calls == []
    assert system_properties() == {}


def test_version_prints_the_installed_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.8.7" if name == "meshkit" else "")
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "meshkit 9.8.7\n"


def test_version_falls_back_to_the_package_version_in_a_source_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(cli, "__version__", "1.2.3")  # the package's own version, as a checkout has it
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "meshkit 1.2.3\n"


# --- what run does before uvicorn starts -------------------------------------------------------------------


def test_run_sets_system_properties_and_takes_the_port_from_the_apps_properties(
    tmp_path: Path, uvicorn_calls: list[dict[str, Any]]
) -> None:
    make_app_module(tmp_path, "cli_props_app", "server.port=8093\ncloud.connector=none\n")
    argv = ["run", "cli_props_app:app", "--app-dir", str(tmp_path), "-Dcloud.connector=kafka"]
    assert cli.main(argv) == 0
    assert uvicorn_calls == [
        {
            "app": "cli_props_app:app",
            "host": "127.0.0.1",
            "port": 8093,
            "log_level": "info",
            # where it serves, for what defaults to it (the direct path's address)
            "system_properties": {
                "cloud.connector": "kafka",
                "server.host": "127.0.0.1",
                "server.port": "8093",
            },
        }
    ]


def test_the_port_option_beats_server_port_and_8080_is_the_last_resort(
    tmp_path: Path, uvicorn_calls: list[dict[str, Any]]
) -> None:
    with_props, without = tmp_path / "with_props", tmp_path / "without"
    with_props.mkdir()
    without.mkdir()
    make_app_module(with_props, "cli_port_app", "server.port=8093\n")
    make_app_module(without, "cli_noport_app")
    assert cli.main(["run", "cli_port_app:app", "--app-dir", str(with_props), "--port", "9001"]) == 0
    assert cli.main(["run", "cli_noport_app:app", "--app-dir", str(without)]) == 0
    assert [call["port"] for call in uvicorn_calls] == [9001, 8080]


def test_a_d_argument_or_the_environment_can_choose_the_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uvicorn_calls: list[dict[str, Any]]
) -> None:
    make_app_module(tmp_path, "cli_dport_app", "server.port=8093\n")
    monkeypatch.setenv("SERVER_PORT", "8094")
    assert cli.main(["run", "cli_dport_app:app", "--app-dir", str(tmp_path)]) == 0
    assert cli.main(["run", "cli_dport_app:app", "--app-dir", str(tmp_path), "-Dserver.port=8095"]) == 0
    assert [call["port"] for call in uvicorn_calls] == [8094, 8095]


def test_resolve_port_reads_the_given_directory(tmp_path: Path) -> None:
    (tmp_path / "application.yml").write_text("server:\n  port: 8096\n", encoding="utf-8")
    assert cli.resolve_port(cli.RunOptions(app="x:app"), tmp_path) == 8096
    assert cli.resolve_port(cli.RunOptions(app="x:app", port=1234), tmp_path) == 1234
    assert cli.resolve_port(cli.RunOptions(app="x:app"), None) == 8080
    (tmp_path / "application.yml").write_text("server:\n  port: eighty\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server\.port"):
        cli.resolve_port(cli.RunOptions(app="x:app"), tmp_path)


def test_a_bad_server_port_in_the_apps_properties_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uvicorn_calls: list[dict[str, Any]]
) -> None:
    make_app_module(tmp_path, "cli_badport_app", "server.port=eighty\n")
    assert cli.main(["run", "cli_badport_app:app", "--app-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "meshkit: error: server.port: expected an integer, got 'eighty'" in err
    assert uvicorn_calls == []


def test_a_bad_line_in_the_apps_properties_exits_2_naming_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uvicorn_calls: list[dict[str, Any]]
) -> None:
    make_app_module(tmp_path, "cli_badline_app", "a=1\noops\n")
    assert cli.main(["run", "cli_badline_app:app", "--app-dir", str(tmp_path)]) == 2
    assert "application.properties line 2: expected key=value, got 'oops'" in capsys.readouterr().err
    assert uvicorn_calls == []


def test_a_module_that_cannot_be_found_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uvicorn_calls: list[dict[str, Any]]
) -> None:
    assert cli.main(["run", "no_such_module_here:app", "--app-dir", str(tmp_path)]) == 2
    assert "meshkit: error: cannot find module 'no_such_module_here'" in capsys.readouterr().err
    assert uvicorn_calls == []


def test_module_directory_is_the_directory_of_the_module_file() -> None:
    assert cli.module_directory("meshkit.config._config") == REPO / "meshkit" / "config"
    assert cli.module_directory("no_such_package.inner") is None


# --- one real run ------------------------------------------------------------------------------------------


def test_a_real_run_passes_d_arguments_to_the_app(tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "GREETING_TEXT"}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "meshkit.cli", "run", "tests.support.cli_app:app", "--port", str(port)]
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "-Dgreeting.text=hi"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:

            def answer() -> str | None:
                assert process.poll() is None, f"meshkit run exited early:\n{log.read_text()}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                        text: str = response.read().decode()
                        return text
                except (urllib.error.URLError, ConnectionError):
                    return None

            got = wait_until(
                answer, timeout=30, interval=0.1, what="an answer to GET /", describe=log.read_text
            )
            assert got == "hi", log.read_text()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
