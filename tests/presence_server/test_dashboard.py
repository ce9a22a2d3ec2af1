"""The mesh dashboard of the presence monitor: the page at `/`, its data at `/api/mesh`.

The browser test opens the page in Debian's headless Chromium (driven by Selenium through Debian's
chromedriver; `make browser` installs both) while a real monitor and the two example apps run on the Tansu
broker, and keeps screenshots in the test's tmp_path. With ``MESHKIT_UPDATE_SCREENSHOT=1`` the screenshot
also replaces ``docs/dashboard.png`` (the README's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from meshkit.connectors.memory import MemoryBroker, MemoryConnector
from meshkit.devbroker import DevBroker
from meshkit.mesh import MONITOR_TOPIC
from meshkit.mesh._frames import EVERYONE, control_record, event_records
from presence_server.dashboard import RouteBook
from tests.support.eventually import eventually, wait_until
from tests.support.identities import PUBLIC_KEY
from tests.support.servers import REPO, UvicornProcess

MONITOR_APP = "presence_server.main:app"
REST_APP = "example_services.rest_example.main:app"
LAMBDA_APP = "example_services.lambda_example.main:app"

CHROMIUM = Path(os.environ.get("MESHKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MESHKIT_CHROMEDRIVER", "/usr/bin/chromedriver"))
# No network here: without the background-networking flags Chromium keeps opening refused connections.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--hide-scrollbars",
    "--window-size=1360,900",
)
SCREENSHOT = REPO / "docs" / "dashboard.png"
ORIGIN_A = "20261125" + "a1" * 16
ORIGIN_B = "20261125" + "b2" * 16
ORIGIN_C = "20261125" + "c3" * 16


# -- the page and its JSON from a real monitor (memory connector, no broker) ---------------------------------
@pytest.fixture(scope="module")
def standalone_monitor() -> Iterator[UvicornProcess]:
    properties = {"cloud.connector": "none", "monitor.heartbeat": "0.2"}
    with UvicornProcess(MONITOR_APP, properties=properties) as monitor:
        yield monitor


def test_the_page_is_one_self_contained_html_file(standalone_monitor: UvicornProcess) -> None:
    response = httpx.get(standalone_monitor.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<title>meshkit mesh</title>" in page
    # nothing from elsewhere: no URL with a scheme or a host, no stylesheet, script or font to fetch
    assert not re.search(r"(?i)https?:|wss?:|//[a-z0-9]", page)
    assert not re.search(r"(?i)<(script|link|img|iframe)[^>]*\s(src|href)=\"(?!data:)", page)
    assert "@import" not in page and "url(" not in page
    # data goes into the DOM as text only
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page
    # the Content-Security-Policy allows exactly the page's own inline script and style
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
    for tag in ("script", "style"):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy


async def test_api_mesh_shows_connections_monitors_and_joins_and_leaves(
    standalone_monitor: UvicornProcess,
) -> None:
    def mesh() -> dict[str, Any]:
        response = httpx.get(standalone_monitor.url + "/api/mesh")
        assert response.status_code == 200
        data: dict[str, Any] = response.json()
        return data

    before = mesh()
    assert set(before) >= {"time", "monitor", "totals", "apps", "monitors", "topics", "events"}
    assert before["monitor"]["name"] == "presence-monitor" and before["monitor"]["connector"] == "none"
    (me,) = before["monitors"]
    assert me["me"] and me["alive"] and me["id"] == before["monitor"]["id"]
    assert before["totals"]["monitors"] == 1
    assert {"name": MONITOR_TOPIC, "partitions": 11} in before["topics"]

    hello = {"type": "hello", "name": "orders <b>&amp;</b>", "version": "2.1.0", "personality": "APP"}
    hello |= {"group": 1, "created": "2026-11-25T10:00:00.000Z", "key": PUBLIC_KEY}
    url = f"ws://127.0.0.1:{standalone_monitor.port}/ws/presence/{ORIGIN_A}"
    async with connect(url) as ws:
        await ws.send(json.dumps(hello))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready"
        shown = await asyncio.to_thread(
            wait_until,
            lambda: mesh()["apps"],
            timeout=5,
            interval=0.1,
            what="the app in /api/mesh",
            describe=mesh,
        )
        (app,) = shown
        assert app["name"] == "orders <b>&amp;</b>"  # as the app said it; the page puts it in as text
        assert (app["origin"], app["topic"], app["type"], app["group"]) == (
            ORIGIN_A,
            ready["topic"],
            "APP",
            1,
        )
        assert app["monitor"] == me["id"] and app["version"] == "2.1.0"
        assert app["routes"] is None  # no join on the group's partition: nothing announced to show
        data = mesh()
        assert data["totals"]["apps"] == 1 and data["totals"]["virtual_topics"] == 1
        join = await asyncio.to_thread(
            wait_until,
            lambda: [e for e in mesh()["events"] if e["kind"] == "join" and e["origin"] == ORIGIN_A],
            timeout=5,
            interval=0.1,
            what="a join event",
            describe=mesh,
        )
        assert join[0]["text"] == f"joined on {ready['topic']}"
    gone = await asyncio.to_thread(
        wait_until,
        lambda: [e for e in mesh()["events"] if e["kind"] == "leave" and e["origin"] == ORIGIN_A],
        timeout=5,
        interval=0.1,
        what="a leave event",
        describe=mesh,
    )
    assert gone[0]["name"] == "orders <b>&amp;</b>" and "left" in gone[0]["text"]
    after = mesh()
    assert after["apps"] == [] and after["events"][0]["kind"] == "leave"  # newest first


async def test_the_route_book_reads_joins_and_route_changes_and_skips_bad_records() -> None:
    broker = MemoryBroker()
    connector = MemoryConnector(broker=broker)
    await connector.start()
    changes: list[tuple[str, list[str], list[str]]] = []
    book = RouteBook(
        connector, 2, on_change=lambda o, a, r: changes.append((o, a, r)), verify=lambda m: "forged" not in m
    )
    await book.start()
    try:

        def send(group: int, record: bytes) -> None:
            broker.publish(MONITOR_TOPIC, group, record)

        send(1, b"\x00 not msgpack")
        send(1, event_records(ORIGIN_A, b"an event for someone")[0])
        send(2, control_record(EVERYONE, {"type": "join", "origin": ORIGIN_B, "routes": "not a list"}))
        send(2, control_record(EVERYONE, {"type": "join", "origin": ORIGIN_B, "routes": ["x"], "forged": 1}))
        send(2, control_record(EVERYONE, {"type": "routes", "origin": ORIGIN_B, "add": ["partial"]}))
        join_a = {"type": "join", "origin": ORIGIN_A, "name": "a", "routes": ["r1"], "direct": "ws://a:1/d"}
        send(1, control_record(EVERYONE, join_a))
        send(1, control_record(EVERYONE, {"type": "routes", "origin": ORIGIN_A, "add": ["r2", "r1"]}))
        send(1, control_record(EVERYONE, {"type": "routes", "origin": ORIGIN_A, "remove": ["r1"]}))
        r2 = {"input": {"type": "integer"}, "output": {}, "instances": 3, "idempotent": True}
        send(1, control_record(EVERYONE, {"type": "contracts", "origin": ORIGIN_A, "contracts": "garbage"}))
        send(1, control_record(EVERYONE, {"type": "contracts", "origin": ORIGIN_A, "contracts": {"r2": r2}}))
        send(1, control_record(EVERYONE, {"type": "contracts", "origin": ORIGIN_A, "contracts": {"r2": []}}))
        send(2, control_record(EVERYONE, {"type": "contracts", "origin": ORIGIN_B, "contracts": {"x": r2}}))
        send(2, control_record(EVERYONE, {"type": "join", "origin": ORIGIN_C, "routes": ["marker"]}))
        # each partition's last record read: what came before it on that partition has been applied
        await eventually(lambda: book.routes_of(ORIGIN_A) == ["r2"], what="A's last route change")
        await eventually(lambda: book.routes_of(ORIGIN_C) == ["marker"], what="the marker on partition 2")
        assert book.routes_of(ORIGIN_B) is None  # bad join, forged join, routes without a join
        assert (book.path_of(ORIGIN_A), book.path_of(ORIGIN_C), book.path_of(ORIGIN_B)) == (
            "direct ws://a:1/d",
            "broker",
            None,
        )
        assert changes == [(ORIGIN_A, ["r2"], []), (ORIGIN_A, [], ["r1"])]
        # the good contracts message counts, the garbage around it changes nothing; none without a join
        assert book.contract_of(ORIGIN_A, "r2") == {**r2, "streaming": False}
        assert book.contract_of(ORIGIN_A, "r1") is None and book.contract_of(ORIGIN_B, "x") is None
        send(1, control_record(EVERYONE, {"type": "leave", "origin": ORIGIN_A}))
        await eventually(lambda: book.routes_of(ORIGIN_A) is None, what="A's leave")
    finally:
        await book.stop()
        await connector.close()


# -- the page in a real browser, on a real mesh -------------------------------------------------------------
def _chromium(tmp_path: Path) -> Any:
    """Selenium's Chrome driver on Debian's chromium; a missing piece fails the test (make installs it)."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("selenium is not installed: `make venv` (pip install -e '.[dev]') installs it")
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(binary, os.X_OK):
            pytest.fail(
                f"{binary} not found: the dashboard test needs Debian's {package}. `make browser` installs "
                "it (apt-get install chromium chromium-driver); `make test` does that first."
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = webdriver.ChromeService(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    return webdriver.Chrome(options=options, service=service)


def _shown_apps(driver: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = driver.execute_script(
        """return Array.from(document.querySelectorAll('#apps-body tr')).map((tr) => ({
             name: tr.dataset.name, origin: tr.dataset.origin,
             path: tr.querySelector('.path').textContent,
             routes: Array.from(tr.querySelectorAll('.chip')).map((c) => c.textContent)}));"""
    )
    return rows


def _shown_events(driver: Any) -> list[dict[str, str]]:
    events: list[dict[str, str]] = driver.execute_script(
        """return Array.from(document.querySelectorAll('#events li')).map((li) => ({
             kind: li.dataset.kind, origin: li.dataset.origin, text: li.textContent}));"""
    )
    return events


def _screenshot(driver: Any, path: Path) -> Path:
    """The whole page down to its footer, not only the window."""
    width, height = driver.execute_script(
        """const bottom = document.querySelector('footer').getBoundingClientRect().bottom + window.scrollY;
           return [document.documentElement.clientWidth, Math.ceil(bottom)];"""
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@pytest.mark.kafka
def test_the_dashboard_shows_apps_join_and_leave_in_a_headless_browser(
    kafka_broker: DevBroker, tmp_path: Path
) -> None:
    driver = _chromium(tmp_path)
    with contextlib.ExitStack() as stack:
        stack.callback(driver.quit)
        monitor = stack.enter_context(
            UvicornProcess(
                MONITOR_APP,
                properties={"cloud.connector": "kafka", "bootstrap.servers": kafka_broker.bootstrap},
            )
        )
        app_properties = {
            "cloud.connector": "kafka",
            "bootstrap.servers": kafka_broker.bootstrap,
            "presence.url": f"ws://127.0.0.1:{monitor.port}/ws/presence",
        }
        rest = stack.enter_context(UvicornProcess(REST_APP, properties=app_properties))
        lambda_example = stack.enter_context(
            UvicornProcess(LAMBDA_APP, properties={**app_properties, "mesh.transport": "direct"})
        )
        lambda_origin = httpx.get(lambda_example.url + "/info").json()["origin"]
        rest_origin = httpx.get(rest.url + "/info").json()["origin"]

        def state() -> str:
            with contextlib.suppress(Exception):
                _screenshot(driver, tmp_path / "dashboard-failure.png")
            mesh = httpx.get(monitor.url + "/api/mesh").text
            return (
                f"page apps: {_shown_apps(driver)}\npage events: {_shown_events(driver)}\n/api/mesh: {mesh}\n"
                f"monitor log:\n{monitor.log_tail()}\nscreenshot: {tmp_path / 'dashboard-failure.png'}"
            )

        driver.get(monitor.url + "/")
        assert driver.title == "meshkit mesh"

        def both_apps_with_routes() -> bool:
            shown = {a["origin"]: a for a in _shown_apps(driver)}
            lam, web = shown.get(lambda_origin), shown.get(rest_origin)
            return bool(
                lam
                and web
                and lam["name"] == "lambda-example"
                and {"hello.world", "hello.pojo"} <= set(lam["routes"])
                and re.fullmatch(r"direct tcp://127\.0\.0\.1:\d+", lam["path"]) is not None
                and web["name"] == "rest-example"
                and "hello.world" in web["routes"]
                and web["path"] == "broker"
            )

        wait_until(
            both_apps_with_routes,
            timeout=30,
            interval=0.1,
            what="both apps with their routes on the page",
            describe=state,
        )
        wait_until(
            lambda: len([e for e in _shown_events(driver) if e["kind"] == "join"]) >= 2,
            timeout=5,
            interval=0.1,
            what="two joins in the events feed",
            describe=state,
        )
        totals = driver.execute_script("return document.getElementById('total-apps').textContent")
        assert totals == "2"
        # a route's contract when its chip is clicked
        chip = driver.find_element(
            "css selector", f'#apps-body tr[data-origin="{lambda_origin}"] .chip[data-route="hello.pojo"]'
        )
        chip.click()

        def contract_shown() -> str:
            shown: str = driver.execute_script(
                """const panel = document.getElementById('contract');
                   return panel.hidden || document.getElementById('contract-body').hidden ? '' :
                     panel.textContent;"""
            )
            return shown

        shown = wait_until(
            contract_shown, timeout=10, interval=0.1, what="hello.pojo's contract", describe=state
        )
        assert "hello.pojo" in shown and "lambda-example" in shown and "safe to retry" in shown
        output = driver.find_element("id", "contract-output").text
        assert '"title": "PoJo"' in output and driver.find_element("id", "contract-input").text == "any"
        missing = httpx.get(monitor.url + "/api/contract", params={"origin": rest_origin, "route": "no.such"})
        assert missing.status_code == 404 and "no.such" in missing.json()["detail"]
        assert "Live" in driver.find_element("id", "status").text
        shot = _screenshot(driver, tmp_path / "dashboard.png")
        print(f"dashboard screenshot: {shot}")
        if os.environ.get("MESHKIT_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)
            print(f"README screenshot updated: {SCREENSHOT}")

        lambda_example.stop()
        wait_until(
            lambda: [a["origin"] for a in _shown_apps(driver)] == [rest_origin],
            timeout=15,
            interval=0.1,
            what="the lambda example gone from the page",
            describe=state,
        )
        left = wait_until(
            lambda: [
                e for e in _shown_events(driver) if e["kind"] == "leave" and e["origin"] == lambda_origin
            ],
            timeout=5,
            interval=0.1,
            what="a 'left' event for the lambda example",
            describe=state,
        )
        assert "lambda-example" in left[0]["text"] and "left" in left[0]["text"]
        assert driver.execute_script("return document.getElementById('total-apps').textContent") == "1"
        after = _screenshot(driver, tmp_path / "dashboard-after-leave.png")
        print(f"dashboard screenshot after the lambda example left: {after}")
