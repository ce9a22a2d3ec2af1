"""Hand-written control messages: a public key for hellos (a monitor admits an app only with its Ed25519
public key), and an app's join as its peers read it."""

from typing import Any

from meshkit.security import Identity

PUBLIC_KEY = Identity().public_key


def join(origin: str, **fields: Any) -> dict[str, Any]:
    """The lambda example's join (unsigned: sign it with the app's Identity), `fields` changed or added."""
    return {
        "type": "join",
        "origin": origin,
        "name": "lambda-example",
        "version": "1.0.0",
        "personality": "APP",
        "topic": "multiplex.0001-001",
        "routes": ["hello.pojo"],
        **fields,
    }
