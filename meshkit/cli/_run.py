"""``meshkit run MODULE:APP [--host H] [--port P] [--log-level L] [--app-dir D] [-Dkey=value ...]``.

``-D`` arguments may appear anywhere on the command line. They become process-wide system properties
(:func:`meshkit.config.set_system_properties`) before uvicorn starts, so ``AppConfig.load()`` inside the
app sees them even though uvicorn's own argument parser would reject them. Without ``--port`` the port is
``server.port`` from the app's configuration (its package directory's ``application.properties``/``.yml``,
the environment and the ``-D`` arguments), else 8080. With ``server.ssl.certfile`` (and
``server.ssl.keyfile``) it serves HTTPS and WSS; ``server.ssl.client.auth`` with ``server.ssl.ca`` asks
clients for certificates.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshkit.config import AppConfig, ConfigError, set_system_properties

DEFAULT_PORT = 8080
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(frozen=True)
class RunOptions:
    """What ``meshkit run`` was asked to do."""

    app: str
    host: str = "127.0.0.1"
    port: int | None = None
    log_level: str = "info"
    app_dir: str = "."
    properties: dict[str, str] = field(default_factory=dict)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _app_string(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise argparse.ArgumentTypeError(f"expected MODULE:APP (e.g. example.main:app), got {text!r}")
    return text


def add_run(commands: Any) -> None:
    """The ``run`` subcommand on ``commands`` (argparse's subparsers action)."""
    run = commands.add_parser(
        "run",
        help="run MODULE:APP with uvicorn",
        description="Run a meshkit (FastAPI) application with uvicorn.",
        epilog="-Dkey=value arguments may appear anywhere; they override application.properties.",
    )
    run.add_argument("app", type=_app_string, metavar="MODULE:APP", help="e.g. example_services.rest:app")
    run.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=None, help="default: server.port from config, else 8080")
    run.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="default info")
    run.add_argument("--app-dir", default=".", help="directory put on sys.path first (default .)")


def run_options(args: argparse.Namespace, properties: dict[str, str]) -> RunOptions:
    return RunOptions(args.app, args.host, args.port, args.log_level, args.app_dir, properties)


def module_directory(module: str) -> Path | None:
    """The directory of ``module``'s source file, found without running the module itself."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin).parent


def resolve_port(options: RunOptions, directory: Path | None) -> int:
    """``--port``, else ``server.port`` from the configuration in ``directory``, else 8080."""
    if options.port is not None:
        return options.port
    return _config(directory).get_int("server.port", DEFAULT_PORT)


def _config(directory: Path | None) -> AppConfig:
    return AppConfig.load(search_paths=[directory] if directory else [], argv=[])


def run(options: RunOptions) -> int:
    """Serve the app (returns when uvicorn stops); 2 when its module, its port or its certificates
    cannot be found."""
    app_dir = str(Path(options.app_dir).resolve())
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    module = options.app.partition(":")[0]
    directory = module_directory(module)
    if directory is None:
        print(f"meshkit: error: cannot find module {module!r} (from {app_dir})", file=sys.stderr)
        return 2
    set_system_properties(options.properties)
    from meshkit.security import server_tls  # ssl: loaded to run, not to parse

    try:
        port = resolve_port(options, directory)
        tls = server_tls(_config(directory))  # a missing certificate is said here, before uvicorn starts
    except ConfigError as e:
        print(f"meshkit: error: {e}", file=sys.stderr)
        return 2
    # where the app serves, for what defaults to it (the direct path's address, mesh.direct.address)
    set_system_properties({**options.properties, "server.host": options.host, "server.port": str(port)})

    from meshkit.http import serve  # here, so that parsing and the tests never need a server

    extra = {"tls": tls} if tls else {}  # plain HTTP: the call as it was before TLS
    serve(options.app, host=options.host, port=port, log_level=options.log_level, **extra)
    return 0
