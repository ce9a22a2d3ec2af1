"""Application configuration, the way a Mercury (or Spring) user expects it.

Where a value comes from, highest precedence first:

1. ``overrides`` passed to :meth:`AppConfig.load` (programmatic: tests, ``create_app(properties=...)``),
   and the values given to :meth:`AppConfig.with_overrides`.
2. ``-Dkey=value`` arguments: the system properties set by the ``meshkit`` CLI
   (:func:`set_system_properties`), then the ``-D`` items of ``argv`` (default ``sys.argv[1:]``), which win
   over a system property of the same key. ``-Dkey`` alone means ``true``.
3. Environment variables: ``cloud.connector`` is read from ``CLOUD_CONNECTOR`` (upper case, ``.`` and ``-``
   become ``_``), looked up on every ``get``.
4. Files: the first ``application.properties`` found in ``search_paths`` (in order), over the first
   ``application.yml`` / ``application.yaml`` (flattened to dotted keys; lists are comma-joined and also
   available as ``key[0]``, ``key[1]``...).
5. The ``default`` argument of ``get``.

Values may refer to other values: ``${NAME}`` or ``${NAME:default}`` is resolved from the config key
``NAME``, then the environment variable ``NAME``, then the default; an unresolvable reference without a
default stays as written; a reference cycle is a :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
_SECRET_WORDS = ("password", "secret", "token", "api.key", "sasl", "credential", "private")
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|u|.)", re.DOTALL)
_KEY_PART = re.compile(r"(?:\\.|[^\\=:])*")
_YAML_NULL = "tag:yaml.org,2002:null"
_YAML_MERGE = "tag:yaml.org,2002:merge"
_T = TypeVar("_T")
_system_properties: dict[str, str] = {}


class ConfigError(Exception):
    """A bad configuration file, ``-D`` argument, value or reference."""


@dataclass(frozen=True)
class _Entry:
    value: str
    source: str


def set_system_properties(values: Mapping[str, str]) -> None:
    """Replace the process-wide ``-D`` properties (the CLI sets them before uvicorn starts)."""
    _system_properties.clear()
    _system_properties.update(values)


def system_properties() -> dict[str, str]:
    """A copy of the process-wide ``-D`` properties."""
    return dict(_system_properties)


def parse_define_arguments(argv: Iterable[str]) -> dict[str, str]:
    """The ``-Dkey=value`` items of ``argv`` as a dict; other items are ignored."""
    result: dict[str, str] = {}
    for item in argv:
        if not item.startswith("-D"):
            continue
        key, sep, value = item[2:].partition("=")
        key = key.strip()
        if not key or any(c.isspace() for c in key):
            raise ConfigError(f"bad -D argument {item!r}: expected -Dkey=value with a non-empty key")
        result[key] = value if sep else "true"
    return result


def is_secret_key(key: str) -> bool:
    """True for keys whose values must never be shown (passwords, tokens, SASL settings...)."""
    normal = key.lower().replace("_", ".").replace("-", ".")
    return any(word in normal for word in _SECRET_WORDS)


def masked(key: str, value: str) -> str:
    """``value``, or ``*****`` when ``key`` is a secret."""
    return "*****" if is_secret_key(key) else value


def env_name(key: str) -> str:
    """The environment variable for a key: ``cloud.connector`` -> ``CLOUD_CONNECTOR``."""
    return key.replace(".", "_").replace("-", "_").upper()


class AppConfig:
    """Read-only configuration; build it with :meth:`AppConfig.load`."""

    def __init__(
        self,
        overrides: Mapping[str, str],
        defines: Mapping[str, str],
        environ: Mapping[str, str],
        files: Mapping[str, _Entry],
    ) -> None:
        self._overrides = dict(overrides)
        self._defines = dict(defines)
        self._environ = environ
        self._files = dict(files)

    @classmethod
    def load(
        cls,
        *,
        search_paths: Sequence[str | Path] = (),
        argv: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> AppConfig:
        """Read the files in ``search_paths`` and the ``-D`` arguments; see the module docstring."""
        defines = {**_system_properties, **parse_define_arguments(sys.argv[1:] if argv is None else argv)}
        files: dict[str, _Entry] = {}
        yml = _first(search_paths, ("application.yml", "application.yaml"))
        if yml is not None:
            files.update(_parse_yaml(_read_text(yml), str(yml)))
        props = _first(search_paths, ("application.properties",))
        if props is not None:
            files.update(_parse_properties(_read_text(props), str(props)))
        return cls(overrides or {}, defines, os.environ if environ is None else environ, files)

    def with_overrides(self, values: Mapping[str, str]) -> AppConfig:
        """A new config where ``values`` take top precedence."""
        return AppConfig({**self._overrides, **values}, self._defines, self._environ, self._files)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key`` with ``${...}`` references resolved, or ``default``."""
        entry = self._lookup(key)
        return default if entry is None else self._substitute(entry.value, (key,))

    def get_int(self, key: str, default: int) -> int:
        """``key`` as an int; a value that is not an integer is a :class:`ConfigError`."""
        return self._convert(key, default, int, "an integer")

    def get_float(self, key: str, default: float) -> float:
        """``key`` as a float; a value that is not a number is a :class:`ConfigError`."""
        return self._convert(key, default, float, "a number")

    def get_bool(self, key: str, default: bool) -> bool:
        """``key`` as a bool: true/false, yes/no, 1/0, on/off (any case)."""
        value = self.get(key)
        if value is None:
            return default
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise self._bad_value(key, value, "true/false, yes/no, 1/0 or on/off")

    def get_list(self, key: str) -> list[str]:
        """``key`` split on commas, items stripped, empty items dropped."""
        value = self.get(key)
        return [] if value is None else [item.strip() for item in value.split(",") if item.strip()]

    def keys(self) -> list[str]:
        """Every key from the files, ``-D`` arguments and overrides (not every environment variable)."""
        return sorted({*self._files, *self._defines, *self._overrides})

    def source_of(self, key: str) -> str:
        """Where the value of ``key`` comes from, e.g. ``environment CLOUD_CONNECTOR`` or ``default``."""
        entry = self._lookup(key)
        return "default" if entry is None else entry.source

    def _lookup(self, key: str) -> _Entry | None:
        if key in self._overrides:
            return _Entry(self._overrides[key], "override")
        if key in self._defines:
            return _Entry(self._defines[key], "-D argument")
        name = env_name(key)
        if name in self._environ:
            return _Entry(self._environ[name], f"environment {name}")
        return self._files.get(key)

    def _convert(self, key: str, default: _T, parse: Callable[[str], _T], expected: str) -> _T:
        value = self.get(key)
        if value is None:
            return default
        try:
            return parse(value.strip())
        except ValueError:
            raise self._bad_value(key, value, expected) from None

    def _bad_value(self, key: str, value: str, expected: str) -> ConfigError:
        return ConfigError(f"{key}: expected {expected}, got {value!r} (from {self.source_of(key)})")

    def _substitute(self, text: str, stack: tuple[str, ...]) -> str:
        parts: list[str] = []
        pos = 0
        while (start := text.find("${", pos)) >= 0:
            end = _closing_brace(text, start + 2)
            if end < 0:
                break
            parts.append(text[pos:start])
            parts.append(self._reference(text[start : end + 1], stack))
            pos = end + 1
        parts.append(text[pos:])
        return "".join(parts)

    def _reference(self, literal: str, stack: tuple[str, ...]) -> str:
        name, sep, default = literal[2:-1].partition(":")
        name = name.strip()
        if not name or "{" in name:
            return literal
        if name in stack:
            chain = " -> ".join((*stack, name))
            raise ConfigError(f"{stack[0]}: reference cycle {chain}")
        entry = self._lookup(name)
        if entry is not None:
            return self._substitute(entry.value, (*stack, name))
        if name in self._environ:
            return self._environ[name]
        return self._substitute(default, stack) if sep else literal


def _closing_brace(text: str, pos: int) -> int:
    depth = 1
    for i in range(pos, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _first(search_paths: Sequence[str | Path], names: Sequence[str]) -> Path | None:
    for entry in search_paths:
        base = Path(entry)
        if base.is_file() and base.name in names:
            return base
        for name in names:
            if (base / name).is_file():
                return base / name
    return None


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line}: not valid UTF-8 (byte {data[e.start]:#04x})") from None


def _parse_properties(text: str, name: str) -> dict[str, _Entry]:
    result: dict[str, _Entry] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].lstrip()
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line):
            line = line[:-1] + (lines[i].lstrip() if i < len(lines) else "")
            i += 1
        sep = _separator(line)
        if sep < 0:
            raise ConfigError(f"{name} line {number}: expected key=value, got {line.strip()!r}")
        try:
            key, value = _unescape(line[:sep].strip()), _unescape(line[sep + 1 :].strip())
        except ValueError as e:
            raise ConfigError(f"{name} line {number}: {e}") from None
        if not key:
            raise ConfigError(f"{name} line {number}: empty key in {line.strip()!r}")
        result[key] = _Entry(value, f"{name} line {number}")
    return result


def _continues(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _separator(line: str) -> int:
    end = match.end() if (match := _KEY_PART.match(line)) else 0
    return end if end < len(line) and line[end] in "=:" else -1


def _unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "u":
            raise ValueError(f"malformed \\uXXXX escape in {text!r}")
        return chr(int(code[1:], 16)) if len(code) == 5 else _ESCAPES.get(code, code)

    return _ESCAPE.sub(replace, text)


def _parse_yaml(text: str, name: str) -> dict[str, _Entry]:
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{name}{where}: {e.problem or e.context or 'invalid YAML'}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: {e}") from None
    result: dict[str, _Entry] = {}
    for node in documents:
        if isinstance(node, yaml.ScalarNode) and node.tag == _YAML_NULL:
            continue
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {node.value!r}"
            raise ConfigError(f"{name} line {node.start_mark.line + 1}: top level must be a map, got {kind}")
        _flatten(node, "", result, name)
    return result


def _flatten(node: yaml.Node, prefix: str, out: dict[str, _Entry], name: str) -> None:
    where = f"{name} line {node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        pairs: list[tuple[yaml.Node, yaml.Node]] = node.value
        for key_node, value_node in pairs:  # merge keys (<<) first, so explicit keys win
            if key_node.tag == _YAML_MERGE:
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for item in reversed(merged):
                    if not isinstance(item, yaml.MappingNode):
                        raise ConfigError(f"{name} line {item.start_mark.line + 1}: << must merge a map")
                    _flatten(item, prefix, out, name)
        for key_node, value_node in pairs:
            if key_node.tag == _YAML_MERGE:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{name} line {key_node.start_mark.line + 1}: a key must be a plain value")
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            _flatten(value_node, key, out, name)
    elif isinstance(node, yaml.SequenceNode):
        items: list[yaml.Node] = node.value
        for index, item in enumerate(items):
            _flatten(item, f"{prefix}[{index}]", out, name)
        if all(isinstance(item, yaml.ScalarNode) for item in items):
            out[prefix] = _Entry(",".join(_scalar(item) for item in items), where)
    else:
        out[prefix] = _Entry(_scalar(node), where)


def _scalar(node: yaml.Node) -> str:
    return "" if node.tag == _YAML_NULL else str(node.value)
