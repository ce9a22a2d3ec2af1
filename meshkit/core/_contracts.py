"""A function's contract: what it takes and returns as JSON Schema, from its annotations, and how it may be
called (instances, safe to retry, streams). The route catalog (`/info/routes?detail=true`), the `contracts`
control message (docs/protocol/control.md) and the AsyncAPI document (`/asyncapi.json`) are made of these.

A schema comes from the body parameter's and the return value's annotations through pydantic; where there is
no annotation, or one pydantic cannot describe, the schema is `{}`: any value. A streaming function's output
is the schema of one segment (what an `AsyncIterator[T]` yields; any for an EventStreamWriter).
"""

from __future__ import annotations

import collections.abc
import inspect
import logging
import typing
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter

from meshkit.core._envelope import EventEnvelope
from meshkit.core._functions import FunctionSpec, body_parameter, positional_parameters

log = logging.getLogger("meshkit.contracts")

ANY: dict[str, Any] = {}  # the JSON Schema every value satisfies
_NO_HINT = inspect.Parameter.empty
_STREAMS = (collections.abc.AsyncIterator, collections.abc.AsyncIterable, collections.abc.AsyncGenerator)


def contract(spec: FunctionSpec) -> dict[str, Any]:
    """The contract of `spec` as plain data: `input` and `output` JSON Schemas (self-contained, `$defs`
    inside), `instances`, `idempotent`, `streaming`, and `allow` (the app names that may call it) if set."""
    described = dict(_contract(spec))
    if spec.allow is not None:
        described["allow"] = sorted(spec.allow)
    return described


@lru_cache(maxsize=4096)
def _contract(spec: FunctionSpec) -> tuple[tuple[str, Any], ...]:
    body, result = contract_hints(spec)
    return (
        ("input", schema_of(body, spec.route, "input")),
        ("output", schema_of(result, spec.route, "output")),
        ("instances", spec.instances),
        ("idempotent", spec.idempotent),
        ("streaming", spec.streaming),
    )


def contract_hints(spec: FunctionSpec) -> tuple[Any, Any]:
    """The annotations of the body parameter and of what the function answers (one segment, for a stream)."""
    handler = spec.handler
    try:
        annotations = typing.get_type_hints(handler)
    except Exception:  # unresolvable forward references: no schema, rather than a wrong one
        annotations = {}
    body_param = body_parameter(positional_parameters(handler, spec.writer))
    body = annotations.get(body_param.name, _NO_HINT)
    result = annotations.get("return", _NO_HINT)
    if spec.streaming:
        result = _segment(result) if spec.writer is None else _NO_HINT
    return body, result


def _segment(hint: Any) -> Any:
    if typing.get_origin(hint) in _STREAMS:
        args = typing.get_args(hint)
        return args[0] if args else _NO_HINT
    return _NO_HINT


def schema_of(
    hint: Any, route: str = "", what: str = "", *, ref_template: str | None = None
) -> dict[str, Any]:
    """The JSON Schema of values of type `hint` (ANY when there is none, or none pydantic can make);
    `ref_template`: where references to named models point (pydantic's `#/$defs/{model}` by default)."""
    if hint is _NO_HINT or hint is Any or hint is EventEnvelope:
        return dict(ANY)
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(hint)
        if ref_template is None:
            return adapter.json_schema()
        return adapter.json_schema(ref_template=ref_template)
    except Exception as exc:  # a type pydantic cannot describe: say "any" rather than fail the catalog
        log.debug("%s: no JSON Schema for the %s annotation %r: %s", route, what, hint, exc)
        return dict(ANY)
