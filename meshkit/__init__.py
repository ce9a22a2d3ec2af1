"""meshkit: functions on an event bus, a PostOffice to call them, and a service mesh with no sidecar.

from meshkit import route, PostOffice, create_app

@route("hello.world", instances=10)
async def hello(headers, body, instance):
    return body

app = create_app(name="hello-service")

What an app author uses is here. The layers underneath: meshkit.core (the event bus), meshkit.http (FastAPI),
meshkit.mesh, meshkit.connectors, meshkit.observe, meshkit.security, meshkit.config; and meshkit.testing.
"""

from meshkit.__version__ import __version__
from meshkit.config import AppConfig, ConfigError
from meshkit.core import (
    Address,
    AppError,
    CodecError,
    EventEnvelope,
    EventStream,
    EventStreamWriter,
    FunctionRegistry,
    FunctionSpec,
    Platform,
    PostOffice,
    StreamCancelled,
    SyncEventStream,
    SyncPostOffice,
    current_platform,
    decode,
    encode,
    route,
)
from meshkit.http import create_app, install, load_config

__all__ = [
    "Address",
    "AppConfig",
    "AppError",
    "CodecError",
    "ConfigError",
    "EventEnvelope",
    "EventStream",
    "EventStreamWriter",
    "FunctionRegistry",
    "FunctionSpec",
    "Platform",
    "PostOffice",
    "StreamCancelled",
    "SyncEventStream",
    "SyncPostOffice",
    "__version__",
    "create_app",
    "current_platform",
    "decode",
    "encode",
    "install",
    "load_config",
    "route",
]
