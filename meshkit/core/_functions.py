"""Declaring functions: `@route(...)`, route-name rules, and what the bus needs to know about a handler."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from meshkit.core._writer import EventStreamWriter

Handler = Callable[..., Any]

_ROUTE_NAME = re.compile(r"^[a-z0-9_\-]+(\.[a-z0-9_\-]+)+$")


def validate_route_name(name: object) -> str:
    if not isinstance(name, str) or not _ROUTE_NAME.match(name):
        raise ValueError(
            f"Invalid route name {name!r}: use lowercase letters, digits, '.', '_' or '-', "
            "with at least one '.' (for example 'hello.world')"
        )
    return name


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A function as the event bus sees it."""

    route: str
    handler: Handler
    instances: int
    private: bool
    is_async: bool
    arity: int  # 1: (body), 2: (headers, body), 3: (headers, body, instance)
    body_model: type[BaseModel] | None
    max_queue: int | None = None  # events waiting beyond this are refused with 503 (None: `max.queue`)
    idempotent: bool = False  # safe to run twice: a caller may send a request again to another instance
    streaming: bool = False  # answers with a stream of segments (an async generator, or a writer)
    writer: str | None = None  # the keyword parameter that takes the EventStreamWriter, if any
    allow: frozenset[str] | None = None  # the app names that may call it from outside (None: any)

    @property
    def module(self) -> str:
        return str(getattr(self.handler, "__module__", "") or "")

    @property
    def qualified_name(self) -> str:
        return f"{self.module}.{getattr(self.handler, '__qualname__', '?')}"


def make_spec(
    route: str,
    handler: Handler,
    *,
    instances: int = 1,
    private: bool = False,
    max_queue: int | None = None,
    idempotent: bool = False,
    allow: Iterable[str] | None = None,
) -> FunctionSpec:
    validate_route_name(route)
    allowed = _allowed(route, allow)
    if isinstance(instances, bool) or not isinstance(instances, int) or not 1 <= instances <= 1000:
        raise ValueError(
            f"instances for route '{route}' must be an integer from 1 to 1000, got {instances!r}"
        )
    if max_queue is not None and (
        isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0
    ):
        raise ValueError(f"max_queue for route '{route}' must be a non-negative integer, got {max_queue!r}")
    if not callable(handler):
        raise TypeError(f"handler for route '{route}' is not callable")
    hints = _hints(handler)
    writer = next((n for n, hint in hints.items() if n != "return" and _is_writer(hint)), None)
    params = positional_parameters(handler, writer)
    if not 1 <= len(params) <= 3:
        raise TypeError(
            f"handler for route '{route}' must take (headers, body, instance), (headers, body) or (body); "
            f"it takes {len(params)} positional parameters"
        )
    body_param = body_parameter(params)
    generator = inspect.isasyncgenfunction(handler)
    if generator and writer is not None:
        raise TypeError(f"handler for route '{route}' yields its segments: it takes no EventStreamWriter")
    if writer is not None and not inspect.iscoroutinefunction(handler):
        raise TypeError(f"handler for route '{route}' takes an EventStreamWriter: it must be 'async def'")
    if inspect.isgeneratorfunction(handler):
        raise TypeError(
            f"handler for route '{route}' is a plain generator: stream with 'async def' + 'yield'"
        )
    return FunctionSpec(
        route=route,
        handler=handler,
        instances=instances,
        private=private,
        is_async=generator or inspect.iscoroutinefunction(handler),
        arity=len(params),
        body_model=_body_model(hints.get(body_param.name)),
        max_queue=max_queue,
        idempotent=bool(idempotent),
        streaming=generator or writer is not None,
        writer=writer,
        allow=allowed,
    )


def _allowed(route: str, allow: Iterable[str] | None) -> frozenset[str] | None:
    if allow is None:
        return None
    if isinstance(allow, str):  # allow="a" would be the names "a" one letter each
        raise TypeError(f"allow for route '{route}' is a list of application names, not one string")
    names = frozenset(allow)
    if not all(isinstance(n, str) and n.strip() == n and 0 < len(n) <= 200 for n in names):
        raise ValueError(
            f"allow for route '{route}' must list application names, got {sorted(map(repr, names))}"
        )
    return names


def positional_parameters(handler: Handler, writer: str | None) -> list[inspect.Parameter]:
    """The handler's positional parameters but its EventStreamWriter: (headers, body, instance) or fewer."""
    return [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != writer
    ]


def body_parameter(params: list[inspect.Parameter]) -> inspect.Parameter:
    """Of `positional_parameters`, the one that takes the event's body: (body) or (headers, body, ...)."""
    return params[0] if len(params) == 1 else params[1]


def _hints(handler: Handler) -> dict[str, Any]:
    try:
        return typing.get_type_hints(handler)
    except Exception:  # unresolvable forward references: read the annotations as written
        return dict(getattr(handler, "__annotations__", {}) or {})


def _is_writer(hint: object) -> bool:
    if isinstance(hint, str):  # an annotation that could not be resolved: by its name
        return hint == "EventStreamWriter" or hint.endswith(".EventStreamWriter")
    return hint is EventStreamWriter


def _body_model(hint: object) -> type[BaseModel] | None:
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint
    return None


class FunctionRegistry:
    """Functions declared with `@registry.route(...)`; a Platform registers them when it starts.

    Two modules may declare the same route (two apps in one code base); a platform refuses to run both.
    """

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], FunctionSpec] = {}

    def route(
        self,
        name: str,
        *,
        instances: int = 1,
        private: bool = False,
        max_queue: int | None = None,
        idempotent: bool = False,
        allow: Iterable[str] | None = None,
    ) -> Callable[[Handler], Handler]:
        validate_route_name(name)
        _allowed(name, allow)

        def decorate(handler: Handler) -> Handler:
            spec = make_spec(
                name,
                handler,
                instances=instances,
                private=private,
                max_queue=max_queue,
                idempotent=idempotent,
                allow=allow,
            )
            self.add(spec)
            return handler

        return decorate

    def add(self, spec: FunctionSpec) -> None:
        # keyed by function too: re-importing a module (reload) replaces its declarations
        self._specs[(spec.route, spec.qualified_name)] = spec

    def select(self, packages: Iterable[str] = ()) -> list[FunctionSpec]:
        """The functions declared in these packages and their sub-modules (all when none is named)."""
        wanted = tuple(packages)
        return [
            spec
            for spec in self._specs.values()
            if not wanted or any(spec.module == p or spec.module.startswith(p + ".") for p in wanted)
        ]

    def __iter__(self) -> Iterator[FunctionSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)


#: the registry `@route` writes to
default_registry = FunctionRegistry()


def route(
    name: str,
    *,
    instances: int = 1,
    private: bool = False,
    max_queue: int | None = None,
    idempotent: bool = False,
    allow: Iterable[str] | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a function on the event bus: ``@route("hello.world", instances=10)``.

    The handler takes ``(headers, body, instance)`` (or ``(headers, body)``, or ``(body)``), may be
    ``async def`` or plain ``def`` (run in a thread), and returns the reply body or an EventEnvelope.
    Events beyond `instances` wait in order; more than `max_queue` waiting (default: the `max.queue`
    setting) are refused at once with a 503, so an overload costs callers an error, not the app's memory.
    `idempotent=True` says running it twice for one request does no harm (a read, or a write keyed by the
    request): a caller whose instance left, died or refused for overload then sends the request again to
    another instance, within the request's deadline and the caller's retry budget. Otherwise never twice.
    An ``async def`` that ``yield``s, or one with a parameter annotated ``EventStreamWriter``, streams:
    callers read it with ``PostOffice.stream`` (docs/protocol/streams.md), and each stream holds one
    instance while it runs.
    `allow=["rest-example"]` lets only those apps call it from outside the process, each proven by its
    vouched identity (docs/protocol/access.md); any other caller gets 403. Its own app (any instance of it)
    may always call it.
    """
    return default_registry.route(
        name,
        instances=instances,
        private=private,
        max_queue=max_queue,
        idempotent=idempotent,
        allow=allow,
    )
