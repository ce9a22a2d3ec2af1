"""EventEnvelope itself: its id, drawn when first read, and the bus's fast constructors."""

from __future__ import annotations

import pytest

from meshkit import EventEnvelope, decode, encode
from meshkit.core import _envelope
from meshkit.core._codec import pack
from meshkit.core._envelope import FIELDS, reply_event, request_event


def test_an_id_is_drawn_once_when_first_read_and_differs_between_events() -> None:
    first, second = EventEnvelope("a.b"), EventEnvelope("a.b")
    assert "id" not in vars(first)  # nothing drawn until asked
    assert first.id == first.id
    assert first.id and second.id and first.id != second.id
    assert vars(first)["id"] == first.id


def test_two_readers_drawing_a_new_events_id_at_once_both_get_the_one_it_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = EventEnvelope("a.b")
    seen: list[str] = []
    draw = _envelope.new_event_id
    calls = iter(range(2))

    def interleaved() -> str:  # another thread reads the id between this draw and its store
        drawn = draw()
        if next(calls, 1) == 0:
            seen.append(event.id)
        return drawn

    monkeypatch.setattr(_envelope, "new_event_id", interleaved)
    first = event.id
    assert seen == [first] and event.id == first


def test_an_id_given_or_set_is_kept() -> None:
    event = EventEnvelope("a.b", id="given")
    assert event.id == "given"
    event.id = "set"
    assert event.id == "set"


def test_a_copy_made_before_the_id_was_read_has_its_original_id() -> None:
    event = EventEnvelope("a.b", {"k": 1})
    clone = event.copy()
    assert clone.id == event.id
    assert clone == event


def test_the_wire_carries_the_drawn_id_and_a_decoded_event_keeps_it() -> None:
    event = EventEnvelope("a.b", b"x")
    decoded = decode(encode(event))
    assert decoded.id == event.id


def test_an_event_decoded_without_an_id_draws_one() -> None:
    decoded = decode(pack({"to": "a.b", "status": 200}))
    assert decoded.id and decoded.id == decoded.id


@pytest.mark.parametrize(
    ("status", "cid", "exception", "headers"),
    [(200, "c1", None, None), (500, None, "ValueError", {"h": "v"}), (408, "c2", "Expired", {})],
)
def test_reply_event_equals_the_constructor_with_the_same_arguments(
    status: int, cid: str | None, exception: str | None, headers: dict[str, str] | None
) -> None:
    fast = reply_event("inbox", b"body", headers, status, "r.s", cid, 1.5, exception)
    built = EventEnvelope(
        "inbox", b"body", headers, status=status, sender="r.s", cid=cid, exec_time=1.5, exception=exception
    )
    built.id = fast.id
    assert fast == built
    assert {n: getattr(fast, n) for n in FIELDS} == {n: getattr(built, n) for n in FIELDS}


def test_request_event_equals_the_constructor_with_the_same_arguments() -> None:
    fast = request_event("a.b", [1, 2], {"h": "v"})
    built = EventEnvelope("a.b", [1, 2], {"h": "v"}, id=fast.id)
    assert fast == built
    assert fast.status == 200 and fast.deadline is None and fast.reply_to is None
