"""The seed's walk-through ("service mesh with Kafka"), run for real and narrated on stdout.

    python scripts/demo.py run    # make demo: steps 1-7, then everything is stopped again
    python scripts/demo.py up     # make demo-up: steps 1-4, left running for you to explore
    python scripts/demo.py down   # make demo-down: stop what `up` started (recorded in .demo/pids)

Each process logs to .demo/<name>.log. A busy port (9092, 8080, 8083, 8085) is replaced by a free one and
passed on with -D arguments. Every wait is bounded; on a failure the script says what failed, shows the tail
of the relevant log, stops what it started and exits non-zero. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import DEVNULL
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"
PIDS = DEMO_DIR / "pids"
_PROC = Path("/proc/self").exists()  # Linux: check that a recorded pid still runs meshkit
HOST = "127.0.0.1"
T = TypeVar("T")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never via a proxy
_RUN = ["-m", "meshkit.cli", "run"]
_MESH = ["-Dcloud.connector=kafka", "-Dmandatory.health.dependencies=cloud.connector.health"]


class DemoError(RuntimeError):
    """A step failed; `proc` is the process whose log explains it (None: show every log)."""

    def __init__(self, message: str, proc: Proc | None = None) -> None:
        super().__init__(message)
        self.proc = proc


@dataclass
class Proc:
    """A process started by the demo, in a session (and process group) of its own."""

    name: str
    port: int
    args: list[str]
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return DEMO_DIR / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        say(f"$ python {' '.join(self.args)}")
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "NO_PROXY": HOST}
        cmd = [sys.executable, *self.args]
        with self.log.open("wb") as out:
            # A session of its own: Ctrl-C on `make demo` is handled (in order) here, and `up` can exit.
            self.popen = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdin=DEVNULL, stdout=out, stderr=out, start_new_session=True
            )

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def lines(self) -> list[str]:
        return self.log.read_text("utf-8", "replace").splitlines() if self.log.exists() else []

    def grep(self, *needles: str) -> list[str]:
        return [line for line in self.lines() if any(n in line for n in needles)]

    def show(self, *needles: str) -> None:
        """Print the log lines holding any of `needles`, without the time stamp and logger name."""
        for line in self.grep(*needles):
            say(f"[{self.name}] {line.split(' - ', 1)[-1].strip()}")


def step(number: int, title: str, why: str) -> None:
    print(f"\nStep {number}. {title}\n  ({why})", flush=True)


def say(text: str) -> None:
    print("  " + text.replace("\n", "\n  "), flush=True)


def pick_port(preferred: int, what: str, taken: set[int]) -> int:
    """`preferred` if nothing listens there, else a free port (not one in `taken`)."""
    for candidate in [preferred] + [0] * 10:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT from a past run is fine
            try:
                sock.bind((HOST, candidate))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
        if port not in taken:
            break
    else:
        raise DemoError(f"no free port for the {what}")
    if port != preferred:
        say(f"note: port {preferred} ({what}) is busy, using {port} instead")
    taken.add(port)
    return port


def get(url: str) -> tuple[int, Any]:
    """(status, JSON or text body); raises OSError when nothing answers."""
    try:
        with _DIRECT.open(url, timeout=5) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_for(what: str, check: Callable[[], T], timeout: float, proc: Proc | None = None) -> T:
    """Poll `check` until it returns something truthy; fail if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        result: T | None = None
        try:
            result = check()
        except OSError:  # not answering yet
            pass
        if result:
            return result
        if proc is not None and proc.exit_code() is not None:
            raise DemoError(f"{proc.name} exited with code {proc.exit_code()} while waiting for {what}", proc)
        if time.monotonic() > deadline:
            raise DemoError(f"gave up after {timeout:.0f} s waiting for {what}", proc)
        time.sleep(0.2)


def body_if_ok(url: str) -> Callable[[], Any]:
    def check() -> Any:
        status, body = get(url)
        return body if status == 200 else None

    return check


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, name: str, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGINT (as Ctrl-C), then SIGTERM, then SIGKILL to what is left of its process group; all bounded."""
    for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while (popen.poll() is None) if popen is not None else alive(pid):
            if time.monotonic() > deadline:
                say(f"{name} (pid {pid}) did not stop on {sig.name} within {grace:.0f} s")
                break
            time.sleep(0.1)
        else:
            break
    try:
        os.killpg(pid, signal.SIGKILL)  # e.g. a Tansu left behind by a killed devbroker
    except (ProcessLookupError, PermissionError):
        pass
    if popen is not None:
        popen.wait(timeout=5)


def stop_all(procs: list[Proc]) -> None:
    for proc in reversed(procs):
        if proc.popen is not None and proc.popen.poll() is None:
            stop_pid(proc.popen.pid, proc.name, proc.popen)
            say(f"stopped {proc.name} (exit code {proc.popen.returncode})")


def routes_of(app: Proc) -> dict[str, dict[str, str]]:
    status, body = get(app.url + "/info/routes")
    return body["routing"]["routes"] if status == 200 else {}


def start_up(procs: list[Proc]) -> tuple[Proc, Proc, Proc, Proc]:
    """Steps 1-4. Each process is added to `procs` as it starts, so that a failure can stop it."""
    taken: set[int] = set()
    step(1, "Start a Kafka-compatible broker (Tansu, in memory)", "`make kafka` runs it alone, on 9092")
    kafka_port = pick_port(9092, "Kafka", taken)
    kafka = Proc("kafka", kafka_port, ["-m", "meshkit.devbroker", "--port", str(kafka_port)])
    procs.append(kafka)
    kafka.start()
    wait_for("the broker", lambda: kafka.grep("broker on"), 40, kafka)
    say(f"broker ready on {HOST}:{kafka_port}")
    common = [] if kafka_port == 9092 else [f"-Dbootstrap.servers={HOST}:{kafka_port}"]

    step(2, "Start the presence monitor", "the minimalist control plane: one virtual topic per app instance")
    monitor_port = pick_port(8080, "presence monitor", taken)
    monitor = Proc("presence-monitor", monitor_port, [*_RUN, "presence_server.main:app"])
    monitor.args += ["--port", str(monitor_port), *common]
    procs.append(monitor)
    monitor.start()
    wait_for("the monitor's /health to be UP", body_if_ok(monitor.url + "/health"), 40, monitor)
    monitor.show("partition 0 ready", "Registered monitor")

    step(3, "Start the REST example and the lambda example", "cloud.connector=kafka puts them in the mesh")
    rest_port = pick_port(8083, "REST example", taken)
    lambda_port = pick_port(8085, "lambda example", taken)
    if monitor_port != 8080:
        common.append(f"-Dpresence.url=ws://{HOST}:{monitor_port}/ws/presence")
    rest = Proc("rest-example", rest_port, [*_RUN, "example_services.rest_example.main:app"])
    lambda_app = Proc("lambda-example", lambda_port, [*_RUN, "example_services.lambda_example.main:app"])
    endpoint = (
        [] if lambda_port == 8085 else [f"-Dlambda.example.endpoint=http://{HOST}:{lambda_port}/api/event"]
    )
    for app in (rest, lambda_app):  # one after the other, as in the seed
        app.args += ["--port", str(app.port), *_MESH, *common, *(endpoint if app is rest else [])]
        procs.append(app)
        app.start()
        wait_for(f"{app.name}'s /health to be UP", body_if_ok(app.url + "/health"), 40, app)
        app.show("Connected", "Subscribed", "multiplex.")

    step(4, "Call the lambda example from the REST example", "same PostOffice call, mesh or Event over HTTP")
    say("waiting for hello.pojo in the REST example's distributed routing table (/info/routes) ...")
    wait_for("hello.pojo in the REST example's routes", lambda: "hello.pojo" in routes_of(rest), 40, rest)
    lambda_origin = get(lambda_app.url + "/info")[1]["origin"]
    for path, how in (("mesh", "through the service mesh (Kafka)"), ("http", "by Event over HTTP, no mesh")):
        url = f"{rest.url}/api/pojo/{path}/1"
        pojo = wait_for(f"200 from GET {url}", body_if_ok(url), 15)
        say(f"GET {url}  ->  200, {how}:\n" + json.dumps(pojo, indent=2))
        if pojo.get("origin") != lambda_origin:
            raise DemoError(f"the PoJo's origin is not the lambda example's ({lambda_origin})", rest)
    say(f"origin {lambda_origin} is the lambda example's: the mesh found it by route name alone")
    url = f"{rest.url}/api/tokens/mesh?text=a%20stream%20of%20words%20through%20the%20mesh"
    status, text = get(url)
    if status != 200 or not isinstance(text, str) or "data: mesh" not in text:
        raise DemoError(f"GET {url} answered {status}: {text!r}", rest)
    words = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    say(f"GET {url}  ->  200, hello.tokens streamed through the mesh as Server-Sent Events: {words}")
    return kafka, monitor, rest, lambda_app


def inspect(monitor: Proc, rest: Proc, lambda_app: Proc) -> None:
    step(5, "Look at the mesh", "the monitor's /info, everyone's /health, the discovery in the logs")
    extra = get(monitor.url + "/info")[1]["additional_info"]
    say(f"GET {monitor.url}/info  ->  additional_info.total = {json.dumps(extra['total'])}")
    say("  topics: " + "; ".join(extra["topics"]))
    for virtual in extra["virtual_topics"]:
        say(f"  virtual topic: {virtual}")
    for conn in extra["connections"]:
        say(f"  connection: {conn['name']} ({conn['type']}), {conn['topic']}, since {conn['created']}")
    for proc in (monitor, rest, lambda_app):
        status, health = get(proc.url + "/health")
        checks = "; ".join(f"{u['route']}: {u.get('message')}" for u in health.get("upstream", []))
        say(f"GET {proc.url}/health  ->  {status} {health.get('status')} ({checks})")
    say("real-time service discovery, coordinated by the presence monitor:")
    monitor.show(" joined (")
    for app in (lambda_app, rest):
        app.show(" joins (", ") registered")


def stop_lambda(monitor: Proc, rest: Proc, lambda_app: Proc) -> None:
    step(6, "Press Ctrl-C on the lambda example (SIGINT)", "the mesh drops its routes and frees its topic")
    assert lambda_app.popen is not None
    origin = get(lambda_app.url + "/info")[1]["origin"]
    stop_pid(lambda_app.popen.pid, lambda_app.name, lambda_app.popen)
    say(f"lambda example stopped (exit code {lambda_app.popen.returncode})")
    wait_for("`unregistered` in the REST example's log", lambda: rest.grep("unregistered"), 20, rest)
    wait_for("`released by` in the monitor's log", lambda: monitor.grep("released by"), 20, monitor)
    rest.show(" left (", "unregistered")
    monitor.show(" left", "released by")
    routes = routes_of(rest)
    say(f"GET {rest.url}/info/routes  ->  routes {json.dumps(routes)}")
    if any(origin in origins for origins in routes.values()):
        raise DemoError("the lambda example's routes are still in the REST example's routing table", rest)
    status, body = get(rest.url + "/api/pojo/mesh/1")
    say(f"GET {rest.url}/api/pojo/mesh/1  ->  {status} {json.dumps(body)}")


def recorded() -> list[tuple[int, str]]:
    """(pid, name) from .demo/pids, for the processes still alive that are ours (meshkit, own group)."""
    result = []
    for line in PIDS.read_text().splitlines() if PIDS.exists() else []:
        pid_text, _, name = line.partition(" ")
        try:
            pid = int(pid_text)
            ours = not _PROC or b"meshkit." in Path(f"/proc/{pid}/cmdline").read_bytes()
            if ours and alive(pid) and os.getpgid(pid) == pid:
                result.append((pid, name))
        except (ValueError, OSError):
            continue
    return result


def down() -> int:
    running = recorded()
    if not running:
        say("nothing to stop (no live process recorded in .demo/pids)")
    for pid, name in reversed(running):
        stop_pid(pid, name)
        say(f"stopped {name} (pid {pid})")
    PIDS.unlink(missing_ok=True)
    return 0


def explore(kafka: Proc, monitor: Proc, rest: Proc, lambda_app: Proc) -> None:
    procs = (kafka, monitor, rest, lambda_app)
    PIDS.write_text("".join(f"{p.popen.pid} {p.name}\n" for p in procs if p.popen is not None))
    print(f"\nThe mesh is up and stays up (broker on {HOST}:{kafka.port}). Things to visit:")
    tokens = f"{rest.url}/api/tokens/mesh?text=hello%20mesh"
    for url in (f"{rest.url}/api/pojo/mesh/1", f"{rest.url}/api/pojo/http/1", tokens, f"{monitor.url}/info"):
        say(url)
    for path in ("/health", "/info/routes", "/env", "/livenessprobe", "/info/lib"):
        say("   ".join(f"{p.url}{path}" for p in (monitor, rest, lambda_app)))
    print("Logs: .demo/<name>.log   Stop everything with: make demo-down")


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "run"
    if mode not in ("run", "up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    DEMO_DIR.mkdir(exist_ok=True)
    if mode == "down":
        return down()
    if recorded():
        print("A `make demo-up` is still running (see .demo/pids): `make demo-down` first.", file=sys.stderr)
        return 1
    print("meshkit demo: a minimalist service mesh over Kafka (the seed's walk-through)")
    print("Each process logs to .demo/<name>.log")
    procs: list[Proc] = []
    try:
        kafka, monitor, rest, lambda_app = start_up(procs)
        if mode == "up":
            explore(kafka, monitor, rest, lambda_app)
            return 0
        inspect(monitor, rest, lambda_app)
        stop_lambda(monitor, rest, lambda_app)
        step(7, "Stop everything", "Ctrl-C to each process, in reverse order")
        stop_all(procs)
        print("\nDemo finished: every process it started has stopped.")
        return 0
    except (DemoError, OSError, LookupError, TypeError, AttributeError) as exc:
        print(f"\nDEMO FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        culprit = getattr(exc, "proc", None)
        for proc in [culprit] if culprit is not None else procs:
            tail = "\n".join("    | " + line for line in proc.lines()[-25:]) or "    | (empty)"
            print(f"  last lines of .demo/{proc.log.name}:\n{tail}", file=sys.stderr)
        stop_all(procs)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the demo started", file=sys.stderr)
        stop_all(procs)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
