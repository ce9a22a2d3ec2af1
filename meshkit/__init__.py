"""meshkit: functions on an event bus, a PostOffice to call them, and a service mesh with no sidecar.

from meshkit import route, PostOffice, create_app

@route("hello.world", instances=10)
async def hello(headers, body, instance):
    return body

app = create_app(name="hello-service")
"""

from meshkit._app import create_app, install
from meshkit._codec import CodecError, decode, encode
from meshkit._config import AppConfig, ConfigError
from meshkit._envelope import EventEnvelope
from meshkit._functions import AppError, FunctionRegistry, FunctionSpec, route
from meshkit._platform import Platform, current_platform
from meshkit._postoffice import PostOffice, SyncPostOffice

__version__ = "0.1.0"

__all__ = [
    "AppConfig",
    "AppError",
    "CodecError",
    "ConfigError",
    "EventEnvelope",
    "FunctionRegistry",
    "FunctionSpec",
    "Platform",
    "PostOffice",
    "SyncPostOffice",
    "__version__",
    "create_app",
    "current_platform",
    "decode",
    "encode",
    "install",
    "route",
]
