"""A member of the mesh cannot speak for another, even holding the mesh key and writing to the broker.

Real broker, real processes: an intruder with the mesh API key publishes forged control messages where the
apps and the monitors read them. The apps refuse every one not signed by the named app's own key, the
monitors refuse every log record not signed with their own secret, and the mesh call goes on as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshkit import AppConfig
from meshkit.devbroker import DevBroker
from meshkit.mesh._frames import EVERYONE, control_record
from meshkit.security import Identity, MeshKeys
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import LAMBDA_APP, REST_APP, Mesh, connections_of, publish_raw, serves

pytestmark = pytest.mark.kafka

API_KEY = "mesh-key-for-every-app"
MONITOR_SECRET = "only-the-monitors-know"


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


def test_an_intruder_with_the_mesh_key_cannot_drop_or_impersonate_an_app(mesh: Mesh) -> None:
    monitor = mesh.monitor({"mesh.api.key": API_KEY, "mesh.monitor.secret": MONITOR_SECRET})
    rest = mesh.app(REST_APP, {"mesh.api.key": API_KEY})
    lambda_example = mesh.app(LAMBDA_APP, {"mesh.api.key": API_KEY})
    wait_until(
        lambda: serves(rest, "hello.pojo", [lambda_example.origin]), timeout=10, what="hello.pojo at rest"
    )
    victim = lambda_example.origin
    stolen = MeshKeys(AppConfig.load(argv=[], environ={}, overrides={"mesh.api.key": API_KEY}))
    intruder = Identity()

    # group 1's control channel, read by every app of the group
    join_as_victim = {
        "type": "join",
        "origin": victim,
        "name": "lambda-example",
        "version": "evil",
        "personality": "APP",
        "topic": "multiplex.0001-031",  # the intruder's own partition: it would get the victim's requests
        "routes": ["hello.pojo"],
    }
    forged = [
        {"type": "leave", "origin": victim},  # unsigned
        stolen.sign({"type": "leave", "origin": victim}),  # signed with the mesh key
        intruder.sign_control({"type": "routes", "origin": victim, "remove": ["hello.pojo"]}),
        intruder.sign_control(join_as_victim),
        intruder.sign_control({**join_as_victim, "type": "peer"}),
    ]
    publish_raw(mesh.broker, "service.monitor", 1, [control_record(EVERYONE, m) for m in forged])
    # the monitors' log: a leave that would release the victim's virtual topic, signed with the mesh key
    release = {"type": "leave", "origin": victim, "monitor": monitor.origin, "owner": monitor.origin}
    publish_raw(mesh.broker, "service.monitor", 0, [control_record(EVERYONE, stolen.sign(release))])

    rest.wait_for_log(f"Refused a peer control message for {victim}: not signed by that app's key")
    log = rest.log()
    assert log.count(f"Refused a leave control message for {victim}") == 2
    assert f"Refused a routes control message for {victim}: not signed by that app's key" in log
    assert f"Refused a join control message for {victim}: not signed by that app's key" in log
    monitor.wait_for_log("a 'leave' message without a valid signature")

    assert serves(rest, "hello.pojo", [victim])
    seen_as = rest.get_json("/info/routes")["routing"]["nodes"][victim]
    assert seen_as["version"] != "evil" and seen_as["topic"] != "multiplex.0001-031"
    response = rest.get("/api/pojo/mesh/1")
    assert response.status_code == 200 and response.json()["origin"] == victim
    assert set(connections_of(monitor)) == {rest.origin, victim}


def test_a_monitor_without_its_secret_cannot_join_the_monitors_log(mesh: Mesh) -> None:
    """A second monitor given only the mesh key: its log records are refused by the first."""
    first = mesh.monitor({"mesh.api.key": API_KEY, "mesh.monitor.secret": MONITOR_SECRET})
    mesh.monitor({"mesh.api.key": API_KEY})
    first.wait_for_log("a 'monitor' message without a valid signature")
    assert len(first.get_json("/info")["additional_info"]["monitors"]) == 1
