"""Config values from YAML and `--set key=value`: dotted overrides into nested blocks, and type checks.

`apply_overrides({"lslo": {"ranks": {"low": 8}}}, {"lslo.ranks.low": 4, "lr": 5e-4})` changes the nested
value in place of the whole block; `check_types(TrainConfig, cfg, where)` checks every field against its
annotation and names the key and the type it needs in a one-line error.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from lslo.errors import LsloError


def parse_set_items(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """`["lr=5e-4", "lslo.ranks.low=4", "valid_split=null"]` -> {key: YAML value}; later items win."""
    import yaml

    from lslo.io import load_yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise LsloError(f"{flag} {item!r}: write key=value, e.g. {flag} lr=5e-4 or {flag} lslo.ranks.low=4")
        try:
            out[key] = load_yaml(value)
        except yaml.YAMLError:  # not valid YAML: take the text as it is
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], where: str = "--set") -> dict[str, Any]:
    """A copy of `data` with each override applied; a dotted key (`lslo.ranks.low`) sets a nested value."""
    import copy

    out = copy.deepcopy(data)
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                path = ".".join(parts[: depth + 1])
                raise LsloError(f"{where} {key}=...: {path} is {child!r}, not a mapping; set {path} itself")
            node = child
        node[parts[-1]] = value
    return out


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any value"
    if origin in (Union, types.UnionType):
        names = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a mapping" + (f" of {_describe(args[0]).removeprefix('a ')} -> {_describe(args[1])}" if args and args[1] is not Any else "")
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}.get(hint, str(hint))


_MISMATCH = object()


def coerce(value: Any, hint: Any) -> Any:
    """`value` as `hint` (an int for a float, an integral float for an int), or `_MISMATCH`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if hint is type(None):
        return value if value is None else _MISMATCH
    if origin in (Union, types.UnionType):
        for arg in args:
            got = coerce(value, arg)
            if got is not _MISMATCH:
                return got
        return _MISMATCH
    if hint is bool:
        return value if isinstance(value, bool) else _MISMATCH
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISMATCH
    if hint is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _MISMATCH
    if hint is str:
        return value if isinstance(value, str) else _MISMATCH
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return _MISMATCH
        items = [coerce(v, args[0]) if args else v for v in value]
        return _MISMATCH if any(v is _MISMATCH for v in items) else items
    if origin is dict:
        if not isinstance(value, dict):
            return _MISMATCH
        if not args:
            return value
        pairs = [(coerce(k, args[0]), coerce(v, args[1])) for k, v in value.items()]
        return _MISMATCH if any(_MISMATCH in pair for pair in pairs) else dict(pairs)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_types(obj: Any, where: str = "config") -> None:
    """Check (and coerce in place) every field of a dataclass instance against its type annotation."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        got = coerce(value, hints[f.name])
        if got is _MISMATCH:
            raise LsloError(f"{where}: {f.name}={value!r} is a {type(value).__name__}; {f.name} needs {_describe(hints[f.name])}")
        setattr(obj, f.name, got)
