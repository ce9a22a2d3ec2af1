"""The fault injection itself: a cut drops what it says, one way or both, a heal undoes it, and closing
leaves no namespace and no process behind. Datagrams (UDP), so that one direction shows without the other."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.eventually import wait_until
from tests.support.netns import Host, Network, namespaces

PORT = 9999
RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    print(s.recv(100).decode(), flush=True)
"""
SEND = """
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""


def send(network: Network, source: Host, target: Host, word: str) -> None:
    argv = network.command(source, [sys.executable, "-c", SEND, target.address, str(PORT), word])
    subprocess.run(argv, check=True, timeout=10)


def listening(log: Path) -> bool:
    return "ready" in log.read_text().split()


def arrived(log: Path, word: str, target: Host) -> bool:
    """Whether ``word`` reached ``target``: a marker sent after it on the observer's link, never cut, shows
    that the receiver has read everything that came before."""
    marker = f"marker-{word}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(marker.encode(), (target.address, PORT))
    wait_until(lambda: marker in log.read_text().split(), timeout=5, what=f"{marker} at {target.name}")
    return word in log.read_text().split()


def test_a_cut_drops_what_it_says_a_heal_restores_and_closing_leaves_nothing(tmp_path: Path) -> None:
    with Network.create() as network:
        a, b = network.host("a"), network.host("b")
        logs = {h.name: tmp_path / f"{h.name}.log" for h in (a, b)}
        receivers = [
            network.popen(h, [sys.executable, "-c", RECEIVE, h.address, str(PORT)], log=logs[h.name])
            for h in (a, b)
        ]
        for log in logs.values():
            wait_until(functools.partial(listening, log), timeout=10, what=f"the receiver of {log.name}")
        send(network, a, b, "open-ab")
        send(network, b, a, "open-ba")
        assert arrived(logs["b"], "open-ab", b) and arrived(logs["a"], "open-ba", a)

        network.cut(a, b, one_way=True)  # what a sends to b is lost, nothing else
        send(network, a, b, "oneway-ab")
        send(network, b, a, "oneway-ba")
        assert not arrived(logs["b"], "oneway-ab", b)
        assert arrived(logs["a"], "oneway-ba", a)

        network.cut(a, b)  # now both ways
        send(network, b, a, "cut-ba")
        assert not arrived(logs["a"], "cut-ba", a)

        network.heal(a, b)
        send(network, a, b, "healed-ab")
        send(network, b, a, "healed-ba")
        assert arrived(logs["b"], "healed-ab", b) and arrived(logs["a"], "healed-ba", a)
        made = [a.namespace, b.namespace, network.hub]
    assert all(r.poll() is not None for r in receivers)
    assert not set(made) & set(namespaces())
