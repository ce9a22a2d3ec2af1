"""What the mesh believes, gathered from every process, and the invariants it must keep.

A view is one process's belief of who holds which virtual topic: a monitor's (``/info`` connections), an
app's of its peers (``/info/routes`` nodes) and of itself (the topic of its last ``Connected`` log line:
no endpoint shows an app its own topic). Invariants over all views together: one virtual topic is never
held by two apps, and one origin never holds two topics nor sits on two monitors.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from tests.netfaults._calls import Call
from tests.netfaults._mesh import NetMesh, NetNode
from tests.support.mesh_fixtures import (
    CALLEE_APP,
    CALLER_APP,
    duplicated_topics,
    monitor_info,
    nodes_of,
    routes_of,
)

CONNECTED = re.compile(r"meshkit\.mesh\.presence - Connected \S+, (multiplex\.\d{4}-\d{3})")
RAN = re.compile(r"^mesh\.once ran (\d+)$", re.MULTILINE)


def own_topic(app: NetNode) -> str | None:
    """The virtual topic the app took last, by its own log."""
    found = CONNECTED.findall(app.log())
    return found[-1] if found else None


def ran_twice(callees: Sequence[NetNode]) -> list[int]:
    """Marks of ``mesh.once`` requests that ran more than once, on any callee."""
    counts = Counter(int(mark) for callee in callees for mark in RAN.findall(callee.log()))
    return sorted(mark for mark, times in counts.items() if times > 1)


def ran(callees: Sequence[NetNode]) -> set[int]:
    return {int(mark) for callee in callees for mark in RAN.findall(callee.log())}


def replies_the_broker_hid(failed: Sequence[Call], callees: Sequence[NetNode]) -> list[Call]:
    """The timeouts (408) among `failed` whose request ran at a callee: its reply was lost on the way.
    Tansu hides a batch at its log's end when two callees reply to one caller at once
    (bench/broker_visibility.py), real Kafka does not; a request that never ran is not among these."""
    ran_marks = ran(callees)
    lost = [c for c in failed if c.status == 408 and c.mark in ran_marks]
    if lost:
        print(f"replies the broker hid (their requests ran): {sorted(c.mark for c in lost)}")
    return lost


@dataclass
class View:
    source: str
    topics: dict[str, str] = field(default_factory=dict)  # origin -> virtual topic
    monitors: dict[str, str] = field(default_factory=dict)  # origin -> its monitor (monitors' views only)
    problems: list[str] = field(default_factory=list)


def monitor_view(monitor: NetNode) -> View:
    view = View(monitor.host.name)
    info = monitor_info(monitor.node)
    for connection in info["connections"]:
        view.topics[connection["origin"]] = connection["topic"]
        view.monitors[connection["origin"]] = connection["monitor"]
    view.problems += [f"{monitor.host.name} lists {t} twice" for t in duplicated_topics(info)]
    return view


def app_view(app: NetNode) -> View:
    view = View(app.host.name)
    for origin, node in nodes_of(app.node).items():
        if origin != app.origin and "topic" in node:
            view.topics[origin] = node["topic"]
    mine = own_topic(app)
    if mine is not None:
        view.topics[app.origin] = mine
    return view


def conflicts(views: Sequence[View], names: dict[str, str]) -> list[str]:
    """Where the views, together, break an invariant (empty: none)."""
    holders: defaultdict[str, set[str]] = defaultdict(set)
    topics: defaultdict[str, set[str]] = defaultdict(set)
    monitors: defaultdict[str, set[str]] = defaultdict(set)
    found = [problem for view in views for problem in view.problems]
    for view in views:
        for origin, topic in view.topics.items():
            holders[topic].add(origin)
            topics[origin].add(topic)
        for origin, monitor in view.monitors.items():
            monitors[origin].add(monitor)

    def named(origins: set[str]) -> list[str]:
        return sorted(names.get(o, o) for o in origins)

    found += [f"{t} held by {named(o)}" for t, o in sorted(holders.items()) if len(o) > 1]
    found += [f"{names.get(o, o)} holds {sorted(t)}" for o, t in sorted(topics.items()) if len(t) > 1]
    found += [f"{names.get(o, o)} on monitors {named(m)}" for o, m in sorted(monitors.items()) if len(m) > 1]
    return found


@dataclass
class Mesh:
    """The processes of one test's mesh, by role."""

    monitors: list[NetNode]
    caller: NetNode
    callees: list[NetNode]

    @property
    def apps(self) -> list[NetNode]:
        return [self.caller, *self.callees]

    @property
    def names(self) -> dict[str, str]:
        return {n.origin: n.host.name for n in [*self.monitors, *self.apps]}

    def views(self) -> list[View]:
        return [*(monitor_view(m) for m in self.monitors), *(app_view(a) for a in self.apps)]

    def unhealed(self) -> list[str]:
        """What keeps the mesh from being whole: every app known to every monitor and every other app,
        the caller routing to every callee (none ejected), all views consistent. Empty: whole."""
        names = self.names
        try:
            views = self.views()
            routes = set(routes_of(self.caller.node).get("mesh.once", {}))
            ejected = {o for o, n in nodes_of(self.caller.node).items() if n.get("ejected")}
        except httpx.HTTPError as exc:
            return [f"a node did not answer: {type(exc).__name__}: {exc}"]
        every = {a.origin for a in self.apps}
        problems = conflicts(views, names)
        for view in views:
            missing = every - set(view.topics)
            extra = set(view.topics) - every
            if missing:
                problems.append(f"{view.source} does not know {sorted(names[o] for o in missing)}")
            if extra:
                problems.append(f"{view.source} lists apps that do not run: {sorted(extra)}")
        callees = {c.origin for c in self.callees}
        if routes != callees:
            problems.append(f"caller routes mesh.once to {sorted(names.get(o, o) for o in routes)}")
        if ejected & callees:
            problems.append(f"caller has {sorted(names[o] for o in ejected & callees)} out of rotation")
        return problems

    def wait_whole(self, since: float, timeout: float) -> tuple[float | None, list[str]]:
        """Poll until the mesh is whole: (seconds from ``since`` to then, []), or (None, what is still
        wrong) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self.unhealed()
            if not problems:
                return time.monotonic() - since, []
            if time.monotonic() > deadline:
                return None, problems
            time.sleep(0.2)


def build(
    netmesh: NetMesh,
    *,
    monitors: int = 2,
    monitor_properties: Mapping[str, str] | None = None,
    app_properties: Mapping[str, str] | None = None,
) -> Mesh:
    """The caller and callee a1 on m1, callee a2 on m2 (each with the other monitor second), or all on m1
    when ``monitors`` is 1; returned once whole."""
    names = [f"m{n}" for n in range(1, monitors + 1)]
    starting = [lambda name=name: netmesh.monitor(name, monitor_properties) for name in names]
    apps = [
        lambda: netmesh.app("caller", CALLER_APP, names, app_properties),
        lambda: netmesh.app("a1", CALLEE_APP, names, app_properties),
        lambda: netmesh.app("a2", CALLEE_APP, names[::-1], app_properties),
    ]
    if monitors == 1:  # apps retry until their only monitor answers: all may start at once
        started = netmesh.side_by_side(*starting, *apps)
    else:  # an app started before its first monitor answers would join the other one
        started = [*netmesh.side_by_side(*starting), *netmesh.side_by_side(*apps)]
    mesh = Mesh(started[:monitors], started[monitors], started[monitors + 1 :])
    took, problems = mesh.wait_whole(time.monotonic(), 30)
    assert took is not None, f"the mesh never became whole: {problems}"
    placed = {c["origin"]: c["monitor"] for c in monitor_info(mesh.monitors[0].node)["connections"]}
    intended = {a.origin: mesh.monitors[0 if a.host.name != "a2" else -1].origin for a in mesh.apps}
    assert placed == intended, f"apps on other monitors than meant: {placed} != {intended}"
    return mesh
