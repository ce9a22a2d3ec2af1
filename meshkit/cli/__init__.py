"""The ``meshkit`` command: ``run`` an app, ``call`` a route, read the ``routes`` and the ``mesh``.

    meshkit run MODULE:APP [--host H] [--port P] [--log-level L] [--app-dir D] [-Dkey=value ...]
    meshkit call ROUTE [--body JSON|@FILE|-] [--header K=V ...] [--endpoint URL] [--timeout S] [--json]
                 [--key K]
    meshkit routes APP_URL [--timeout S] [--json] [--key K]
    meshkit mesh MONITOR_URL [--timeout S] [--json] [--key K]

``run`` is in :mod:`meshkit.cli._run`; ``call`` sends one request over Event over HTTP with the PostOffice
and meshkit's own client (:mod:`meshkit.cli._call`); ``routes`` and ``mesh`` read an app's
``/info/routes`` and a presence monitor's ``/api/mesh`` (:mod:`meshkit.cli._inspect`). The exit codes
are in :data:`meshkit.cli._common.EXIT_CODES` (and ``meshkit call --help``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import typing

from meshkit import config as _config
from meshkit.__version__ import __version__
from meshkit.cli import _call, _common, _inspect, _run
from meshkit.cli._call import CallOptions
from meshkit.cli._inspect import InspectOptions
from meshkit.cli._run import DEFAULT_PORT, LOG_LEVELS, RunOptions, module_directory, resolve_port

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

Options = RunOptions | CallOptions | InspectOptions


def version() -> str:
    """The installed meshkit version (or the package's ``__version__`` in a source checkout)."""
    try:
        return importlib.metadata.version("meshkit")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshkit",
        description="Run a meshkit (FastAPI) application, call its functions, look at the mesh.",
        epilog="-Dkey=value arguments (run only) may appear anywhere; they override application.properties."
        "\n\n" + _common.EXIT_CODES.replace("exit codes:", "exit codes of call, routes and mesh:"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"meshkit {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _run.add_run(commands)
    _call.add_call(commands)
    _inspect.add_inspect(commands)
    return parser


def parse_args(argv: Sequence[str]) -> Options:
    """Parse a command line; on a bad one print the reason to stderr and raise ``SystemExit(2)``."""
    parser = _parser()
    defines = [item for item in argv if item.startswith("-D")]
    try:
        properties = _config.parse_define_arguments(defines)
    except _config.ConfigError as e:
        parser.error(str(e))
    args = parser.parse_args([item for item in argv if not item.startswith("-D")])
    if args.command == "run":
        return _run.run_options(args, properties)
    if properties:
        parser.error(f"-D arguments are for meshkit run only: {' '.join(defines)}")
    if args.command == "call":
        return _call.call_options(args)  # a bad $MESHKIT_ENDPOINT raises CliFailure (exit 2)
    return _inspect.inspect_options(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshkit`` console script; returns the exit code."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    except _common.CliFailure as e:
        print(f"meshkit: error: {e.message}", file=sys.stderr)
        return e.code
    try:
        if isinstance(options, RunOptions):
            return _run.run(options)
        if isinstance(options, CallOptions):
            return _call.call(options)
        return _inspect.inspect(options)
    except _common.CliFailure as e:
        print(f"meshkit: error: {e.message}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `meshkit routes URL | head`: the reader has gone, and that is no error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush raises nothing
        return 141  # as a shell reports a process ended by SIGPIPE


__all__ = [
    "DEFAULT_PORT",
    "LOG_LEVELS",
    "CallOptions",
    "InspectOptions",
    "Options",
    "RunOptions",
    "main",
    "module_directory",
    "parse_args",
    "resolve_port",
    "version",
]
