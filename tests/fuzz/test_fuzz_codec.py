"""Target 1, the envelope decoder: any bytes give an EventEnvelope or a CodecError, never anything else.

A decoded envelope goes back on the wire (`encode`) or is refused with a CodecError, and what `encode` makes
decodes again to the same bytes (no field changes on a second trip).
"""

from __future__ import annotations

import pytest
from hypothesis import given

from meshkit import CodecError, EventEnvelope, decode, encode
from tests.fuzz import describe, fuzz_settings, fuzz_timeout, tally, wire_bytes

pytestmark = pytest.mark.timeout(fuzz_timeout(0.05))


@fuzz_settings()
@given(wire_bytes())
def test_decode_gives_an_envelope_or_a_codec_error(data: bytes) -> None:
    tally("1 decode(bytes)")
    try:
        event = decode(data)
    except CodecError:
        return
    assert isinstance(event, EventEnvelope), f"decode({describe(data)}) gave {type(event).__name__}"
    try:
        wire = encode(event)
    except CodecError:
        return
    again = decode(wire)
    assert encode(again) == wire, f"a second trip changed the envelope of {describe(data)}"
