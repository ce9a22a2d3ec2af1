"""``meshkit routes APP_URL`` and ``meshkit mesh MONITOR_URL``: the real command against a real app, a real
presence monitor, a mesh of two apps, a monitor and a broker, and servers that are not meshkit's."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from meshkit.devbroker import DevBroker
from tests.cli.conftest import Meshkit
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import LAMBDA_APP, MONITOR_APP, REST_APP, Mesh
from tests.support.servers import UvicornProcess, free_port

#: path -> (status, content type, body) of the server that is not meshkit's
CANNED = {
    "/html/info/routes?detail=true": (200, "text/html", b"<html>a web page</html>"),
    "/locked/info/routes?detail=true": (401, "application/json", b'{"detail": "who are you?"}'),
    "/forbidden/api/mesh": (403, "text/plain", b"no"),
    "/broken/info/routes?detail=true": (500, "application/json", b'{"detail": "it broke"}'),
    "/other/info/routes?detail=true": (200, "application/json", b'{"something": "else"}'),
}


class _Canned(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, content_type, body = CANNED.get(self.path, (404, "text/html", b"<h1>Not Found</h1>"))
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def foreign() -> Iterator[str]:
    """A real HTTP server that is not meshkit's, answering CANNED (404 for anything else)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def monitor() -> Iterator[UvicornProcess]:
    """A presence monitor on the memory connector (no broker): no apps, itself, service.monitor."""
    properties = {"cloud.connector": "none", "monitor.heartbeat": "0.2"}
    with UvicornProcess(MONITOR_APP, properties=properties) as server:
        yield server


# -- routes -------------------------------------------------------------------------------------------------
def test_routes_prints_the_apps_routing_table(meshkit: Meshkit, target: UvicornProcess) -> None:
    origin = httpx.get(target.url + "/info", trust_env=False).json()["origin"]
    result = meshkit("routes", target.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Routing table of http-target ({origin}): 9 routes, 1 app instance"
    assert lines[2].split() == ["ROUTE", "APP", "ORIGIN", "INSTANCES", "PATH", "FLAGS"]
    rows = {line.split()[0]: line.split() for line in lines[3:12]}
    assert sorted(rows) == [
        *("test.conflict", "test.crash", "test.echo", "test.forward", "test.greeting", "test.record"),
        *("test.recorded", "test.slow", "test.time.left"),
    ]  # test.secret is private: not in the table
    assert rows["test.echo"] == ["test.echo", "http-target", "(APP)", origin, "4", "local", "-"]
    assert rows["test.slow"][4] == "4" and rows["test.conflict"][4] == "1"  # @route(instances=...)
    assert lines[13] == "App instances"
    assert lines[15].split()[:5] == [origin, "http-target", "1.0.0", "APP", "-"]
    assert lines[15].endswith("this app")
    assert result.stderr == ""


def test_routes_json_is_the_apps_own_document(meshkit: Meshkit, target: UvicornProcess) -> None:
    result = meshkit("routes", f"127.0.0.1:{target.port}/info/routes", "--json")  # scheme and path optional
    assert result.returncode == 0, result.stderr
    document = httpx.get(target.url + "/info/routes?detail=true", trust_env=False).json()
    assert json.loads(result.stdout) == document
    assert set(document) >= {"app", "origin", "routing"}


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("", 5, "{url}/info/routes?detail=true: not found (HTTP 404): is this a meshkit app?"),
        (
            "/html",
            5,
            "{url}/html/info/routes?detail=true: the answer is not JSON (HTTP 200, text/html): "
            "is this a meshkit app?",
        ),
        (
            "/other",
            5,
            "{url}/other/info/routes?detail=true: no routing table in the answer: is this a meshkit app?",
        ),
        ("/broken", 1, "{url}/broken/info/routes?detail=true answered HTTP 500: it broke"),
        (
            "/locked",
            4,
            "{url}/locked/info/routes?detail=true: the mesh key was refused: pass --key or set MESH_API_KEY "
            "(none was given)",
        ),
    ],
)
def test_routes_from_a_server_that_is_not_meshkits_fails_clearly(
    meshkit: Meshkit, foreign: str, path: str, code: int, message: str
) -> None:
    result = meshkit("routes", foreign + path)
    assert result.returncode == code
    assert result.stdout == ""
    assert result.stderr == f"meshkit: error: {message.format(url=foreign)}\n"


def test_routes_from_an_unreachable_or_a_silent_port_exits_3(meshkit: Meshkit, silent: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    refused = meshkit("routes", url)
    assert refused.returncode == 3
    assert (
        refused.stderr == f"meshkit: error: cannot reach {url}/info/routes?detail=true: connection refused\n"
    )
    started = time.monotonic()
    timed_out = meshkit("routes", silent, "--timeout", "1")
    assert timed_out.returncode == 3
    assert (
        timed_out.stderr
        == f"meshkit: error: cannot reach {silent}/info/routes?detail=true: timed out after 1 s\n"
    )
    assert time.monotonic() - started < 10


def test_routes_and_mesh_present_the_key(meshkit: Meshkit, foreign: str) -> None:
    wrong = meshkit("mesh", foreign + "/forbidden", env={"MESH_API_KEY": "k"})
    assert wrong.returncode == 4
    assert wrong.stderr.endswith(
        "the mesh key was refused: pass --key or set MESH_API_KEY (the key given is not accepted)\n"
    )


def test_a_bad_url_is_a_usage_error(meshkit: Meshkit) -> None:
    result = meshkit("routes", "ftp://127.0.0.1/")
    assert result.returncode == 2
    assert "argument APP_URL: not an http(s) URL: 'ftp://127.0.0.1/'" in result.stderr


# -- mesh ---------------------------------------------------------------------------------------------------
def test_mesh_prints_the_monitors_view(meshkit: Meshkit, monitor: UvicornProcess) -> None:
    snapshot = httpx.get(monitor.url + "/api/mesh", trust_env=False).json()
    me = snapshot["monitor"]["id"]
    result = meshkit("mesh", f"ws://127.0.0.1:{monitor.port}/ws/presence")  # a presence.url does
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"Presence monitor {me} (presence-monitor 1.0.0), connector none at memory, up "
    )
    assert lines[1] == "0 apps, 0 virtual topics (at most 288), 1 topic, 1 monitor"
    assert lines[3:5] == ["Apps", "(none)"]
    assert lines[6] == "Monitors" and lines[7].split() == ["ID", "THIS", "ALIVE", "APPS", "SEEN"]
    assert lines[8].split()[:4] == [me, "yes", "yes", "0"]
    assert lines[10:13] == ["Topics", "NAME             PARTITIONS", "service.monitor  11"]
    as_json = meshkit("mesh", monitor.url, "--json")
    assert as_json.returncode == 0
    document = json.loads(as_json.stdout)
    assert document["monitor"]["id"] == me and document["apps"] == []
    assert set(document) >= {"time", "monitor", "totals", "limits", "apps", "monitors", "topics", "events"}


def test_mesh_against_an_app_says_it_is_not_a_monitor(meshkit: Meshkit, target: UvicornProcess) -> None:
    result = meshkit("mesh", target.url)
    assert result.returncode == 5
    assert result.stderr == (
        f"meshkit: error: {target.url}/api/mesh: not found (HTTP 404): is this a presence monitor?\n"
    )


# -- a mesh: a monitor, two apps, a broker ------------------------------------------------------------------
@pytest.mark.kafka
def test_routes_and_mesh_show_a_mesh_of_two_apps(meshkit: Meshkit, kafka_broker: DevBroker) -> None:
    with Mesh(kafka_broker) as mesh:
        monitor = mesh.monitor()
        rest = mesh.app(REST_APP)
        lambda_example = mesh.app(LAMBDA_APP)

        def described() -> bool:  # the lambda example's contracts reached the REST example
            catalog = rest.get_json("/info/routes?detail=true").get("catalog", {})
            served = catalog.get("hello.pojo", {}).get("instances", {})
            return served.get(lambda_example.origin, {}).get("instances") is not None

        wait_until(
            described, timeout=15, what="hello.pojo of the lambda example in the REST example's catalog"
        )
        result = meshkit("routes", rest.url)
        assert result.returncode == 0, result.stderr
        rows = [line.split() for line in result.stdout.splitlines()]
        assert rows[0][:5] == ["Routing", "table", "of", "rest-example", f"({rest.origin}):"]
        pojo = [row for row in rows if row[:1] == ["hello.pojo"]]
        assert pojo == [
            ["hello.pojo", "lambda-example", "(APP)", lambda_example.origin, "10", "broker", "idempotent"]
        ]
        (tokens,) = [row for row in rows if row[:1] == ["hello.tokens"]]
        assert tokens[3:] == [lambda_example.origin, "20", "broker", "streaming"]
        world = {row[3]: row for row in rows if row[:1] == ["hello.world"]}
        assert set(world) == {rest.origin, lambda_example.origin}  # two apps serve it
        assert world[rest.origin][4:] == ["10", "local", "idempotent"]
        assert world[lambda_example.origin][4:] == ["20", "broker", "idempotent"]
        instances = {row[0]: row for row in rows if row[:1] in ([rest.origin], [lambda_example.origin])}
        assert instances[lambda_example.origin][1:3] == ["lambda-example", "1.0.0"]
        assert instances[lambda_example.origin][4].startswith("multiplex.0001-")  # its virtual topic
        assert instances[rest.origin][-2:] == ["this", "app"]

        def both_apps() -> dict[str, list[str]] | None:
            shown = meshkit("mesh", monitor.url)
            assert shown.returncode == 0, shown.stderr
            apps = {row[3]: row for row in map(str.split, shown.stdout.splitlines()) if len(row) > 4}
            return apps if {rest.origin, lambda_example.origin} <= set(apps) else None

        apps = wait_until(both_apps, timeout=10, interval=0.5, what="both apps in meshkit mesh")
        assert apps[lambda_example.origin][:3] == ["lambda-example", "1.0.0", "APP"]
        assert apps[lambda_example.origin][4].startswith("multiplex.0001-")
        assert apps[rest.origin][0] == "rest-example"
        assert apps[lambda_example.origin][4] != apps[rest.origin][4]  # a virtual topic each
