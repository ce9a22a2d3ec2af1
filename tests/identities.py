"""A public key for hand-written hellos: a monitor admits an app only with its Ed25519 public key."""

from meshkit._identity import Identity

PUBLIC_KEY = Identity().public_key
