"""Hosts in Linux network namespaces on one bridge, for network fault tests: links cut with nftables.

    with Network.create() as net:                  # pytest.skip with the reason where it cannot be made
        broker, app = net.host("broker"), net.host("app")
        process = net.popen(app, ["python", "-m", "..."])  # runs inside app's namespace
        net.cut(app, broker)                         # both ways
        net.cut(app, broker, one_way=True)           # only what app sends to broker is lost
        net.heal(app, broker)

Each host is a namespace with one veth (``eth0``, address ``10.A.B.N/24``) on a bridge in a hub namespace.
A cut is an nftables rule on that bridge (family ``bridge``, hook ``forward``): the packets vanish on the
way, as at a failed switch port, and the hosts see silence, never an error (a rule in a host's own output
chain would fail its sends at once with EPERM).
The test's own process reaches every host through one more veth, from the root namespace to the bridge,
at ``10.A.B.254`` (its HTTP checks and load); that link is never cut. Names carry the pid of the pytest
process, so two xdist workers never meet, and a run killed before its cleanup is swept by the next one.
Closing kills every process in the namespaces and deletes them (the root's veth goes with the hub's end).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType

import pytest

PREFIX = "mkf-"  # every namespace this module makes starts so: mkf-<pid>-<n>-<host>
OBSERVER = 254  # the root namespace's address on the bridge
_TABLE = "netfaults"
_RULES = f"""
table bridge {_TABLE} {{
    set cut {{ type ipv4_addr . ipv4_addr; }}
    chain forward {{ type filter hook forward priority 0; policy accept; ip saddr . ip daddr @cut drop; }}
}}
"""
_counter = itertools.count(1)


class NetworkError(RuntimeError):
    """A command of iproute2 or nft failed."""


def _run(*argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _inside(namespace: str, *argv: str, check: bool = True, stdin: str | None = None) -> None:
    """Run a command (nft) inside a namespace."""
    _run("ip", "netns", "exec", namespace, *argv, check=check, stdin=stdin)


@cache
def unavailable() -> str | None:
    """Why namespaces with nftables cannot be made here (None: they can), checked once by making one."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} not found: install {package} (make test does)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    try:
        nft = _run("ip", "netns", "exec", probe, "nft", "-f", "-", check=False, stdin=_RULES)
        if nft.returncode != 0:
            return f"nft cannot load bridge rules in a namespace: {nft.stderr.strip()}"
        pair = ("eth0", "netns", probe, "type", "veth", "peer", "eth1", "netns", probe)
        veth = _run("ip", "link", "add", *pair, check=False)
        if veth.returncode != 0:
            return f"cannot make a veth pair: {veth.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def require() -> None:
    """Skip the calling test, with the reason, where namespaces or nftables are not available."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")


def sweep_stale() -> None:
    """Delete namespaces left by runs whose pytest process is gone (killed before their cleanup)."""
    for name in namespaces():
        parts = name[len(PREFIX) :].split("-")
        if parts and parts[0].isdigit() and int(parts[0]) != os.getpid() and not _alive(int(parts[0])):
            _kill_inside(name)
            _run("ip", "netns", "del", name, check=False)


def namespaces() -> list[str]:
    """The namespaces this module made that exist now, of any run."""
    listed = _run("ip", "-j", "netns", "list", check=False).stdout.strip()
    entries = json.loads(listed) if listed else []
    return [str(e["name"]) for e in entries if str(e.get("name", "")).startswith(PREFIX)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str) -> None:
    """SIGKILL what still runs in a namespace this module made: only our own processes can be in there."""
    listed = _run("ip", "netns", "pids", namespace, check=False).stdout.split()
    for pid in (int(p) for p in listed if p.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200-249.x.0 that no route of the root namespace covers (another run's included)."""
    routes = json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]")
    taken = [
        ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst", "default") != "default"
    ]
    chooser = random.Random(os.getpid() * 7919 + time.monotonic_ns())
    for _ in range(200):
        subnet = ipaddress.IPv4Network(f"10.{chooser.randrange(200, 250)}.{chooser.randrange(256)}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise NetworkError("no free 10.x.y.0/24 for the test network")


@dataclass(frozen=True)
class Host:
    """A namespace on the bridge: ``namespace`` to run in, ``address`` for others to reach it."""

    name: str
    namespace: str
    address: str


class Network:
    """A bridge in a hub namespace, hosts on it, and the cuts between them; a context manager."""

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self.tag = f"{os.getpid()}-{next(_counter)}"
        self.subnet = subnet
        self.hub = f"{PREFIX}{self.tag}-hub"
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._made: list[str] = []  # namespaces, in the order made
        self._lock = threading.Lock()  # hosts may be added from several threads (nodes started side by side)
        self._closed = False

    @classmethod
    def create(cls) -> Network:
        """The hub, its bridge and the observer's link; skips the test where namespaces are unavailable."""
        require()
        sweep_stale()
        network = cls(_free_subnet())
        atexit.register(network.close)
        try:
            network._make_hub()
        except BaseException:
            network.close()
            raise
        return network

    def address(self, index: int) -> str:
        return str(self.subnet.network_address + index)

    @property
    def observer(self) -> str:
        """The test process's own address on the bridge (the root namespace)."""
        return self.address(OBSERVER)

    def _make_hub(self) -> None:
        self._add_namespace(self.hub)
        self._ip(self.hub, "link", "add", "br0", "type", "bridge")
        self._ip(self.hub, "link", "set", "br0", "up")
        _inside(self.hub, "nft", "-f", "-", stdin=_RULES)
        # the root namespace's end needs a name no other run uses (pid and count), of 15 characters at most
        outside = f"mk{self.tag.replace('-', 'x')}"[:15]
        _run("ip", "link", "add", outside, "type", "veth", "peer", "obs", "netns", self.hub)
        self._ip(self.hub, "link", "set", "obs", "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.observer}/{self.subnet.prefixlen}", "dev", outside)
        _run("ip", "link", "set", outside, "up")

    def host(self, name: str) -> Host:
        """Host ``name``; made now if new: a namespace with ``eth0`` on the bridge and its loopback up."""
        with self._lock:
            if name in self.hosts:
                return self.hosts[name]
            if len(self.hosts) >= OBSERVER - 2:
                raise NetworkError("the /24 is full")
            index = len(self.hosts) + 1
            host = Host(name, f"{PREFIX}{self.tag}-{name}", self.address(index))
            namespace, port = host.namespace, f"p{index}"  # the veth's other end, on the bridge
            self._add_namespace(namespace)
            _run(
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                namespace,
                "type",
                "veth",
                "peer",
                port,
                "netns",
                self.hub,
            )
            self._ip(self.hub, "link", "set", port, "master", "br0", "up")
            self._ip(namespace, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
            self._ip(namespace, "link", "set", "eth0", "up")
            self._ip(namespace, "link", "set", "lo", "up")
            self.hosts[name] = host  # only once it is whole: another thread may ask for it
            return host

    def _add_namespace(self, namespace: str) -> None:
        _run("ip", "netns", "add", namespace)
        self._made.append(namespace)

    @staticmethod
    def _ip(namespace: str, *argv: str) -> None:
        _run("ip", "-n", namespace, *argv)

    # -- faults ----------------------------------------------------------------------------------------------
    def cut(self, host: Host, peer: Host, *, one_way: bool = False) -> None:
        """Drop what ``host`` sends to ``peer``, and (unless ``one_way``) what ``peer`` sends to it."""
        self._nft("add", host, peer)
        if not one_way:
            self._nft("add", peer, host)

    def heal(self, host: Host, peer: Host) -> None:
        """Undo the cuts between ``host`` and ``peer``, whichever way."""
        self._nft("delete", host, peer, check=False)
        self._nft("delete", peer, host, check=False)

    def slow(self, host: Host, rate: str) -> None:
        """Limit ``host``'s link to ``rate`` (tc's units, e.g. ``256kbit``) both ways, with a token bucket
        (tbf: this kernel has no netem); what waits longer than 200 ms in its queue is dropped."""
        for namespace, device in ((host.namespace, "eth0"), (self.hub, self._port(host))):
            shape = ["tbf", "rate", rate, "burst", "16kb", "latency", "200ms"]
            _inside(namespace, "tc", "qdisc", "replace", "dev", device, "root", *shape)

    def unslow(self, host: Host) -> None:
        for namespace, device in ((host.namespace, "eth0"), (self.hub, self._port(host))):
            _inside(namespace, "tc", "qdisc", "del", "dev", device, "root", check=False)

    def _port(self, host: Host) -> str:
        index = int(ipaddress.ip_address(host.address)) - int(self.subnet.network_address)
        return f"p{index}"  # the veth's end on the bridge, as host() named it

    def _nft(self, verb: str, source: Host, target: Host, *, check: bool = True) -> None:
        pair = f"{{ {source.address} . {target.address} }}"
        _inside(self.hub, "nft", verb, "element", "bridge", _TABLE, "cut", pair, check=check)

    # -- processes -------------------------------------------------------------------------------------------
    def command(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace (``ip netns exec`` execs it: the pid is the program's)."""
        return ["ip", "netns", "exec", host.namespace, *argv]

    def popen(
        self, host: Host, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``host``, output to ``log``; killed by :meth:`close` if still running."""
        with log.open("wb") as out:
            process = subprocess.Popen(
                self.command(host, argv),
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for pytest must not reach it before the cleanup
            )
        self.processes.append(process)
        return process

    def track(self, process: subprocess.Popen[bytes]) -> None:
        """A process started elsewhere (a UvicornProcess) that :meth:`close` must not outlive."""
        self.processes.append(process)

    # -- cleanup ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Kill every process in our namespaces, then delete them; safe to call twice, never raises."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        for namespace in reversed(self._made):
            with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
                _kill_inside(namespace)  # anything a process of ours forked there
                _run("ip", "netns", "del", namespace, check=False)

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
