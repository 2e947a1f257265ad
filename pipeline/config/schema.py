"""Typed, validated configuration: a frozen dataclass per section, built from raw YAML.

Every key is checked against the dataclass: unknown keys get a did-you-mean, wrong types and
out-of-range values name the key path and what was expected. Field bounds and choices live in the
field's metadata (:func:`spec`). A dataclass with a ``from_raw(raw, path)`` classmethod builds
itself (a model entry checks what config knows of it; its family validates the rest).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from pipeline.errors import SeqlabError


def spec(**kw) -> dict:
    """Field metadata: ge/gt/le/lt bounds and choices, checked by :func:`build`."""
    return kw


def describe(tp: Any) -> str:
    """'an integer', 'a list of a number', ...: what a value of type ``tp`` looks like."""
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {describe(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null", dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_value(value: Any, tp: Any, path: str) -> Any:
    """``value`` if it is of type ``tp`` (an int is accepted, and converted, for a float)."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise SeqlabError(f"params: {path}: expected {describe(tp)}, got {value!r}")
        return [check_value(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is not None and type(None) in typing.get_args(tp):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return check_value(value, inner, path)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif tp is dict:
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise SeqlabError(f"params: {path}: expected {describe(tp)}, got {value!r}")
    return value


def check_range(value: Any, meta: dict, path: str) -> None:
    if value is None:       # an optional field left unset (null): no range to check
        return
    if "choices" in meta and value not in meta["choices"]:
        hint = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SeqlabError(f"params: {path}: expected one of {', '.join(map(str, meta['choices']))}, "
                          f"got {value!r}{extra}")
    for key, op, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                          ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
        if key in meta and not op(value, meta[key]):
            raise SeqlabError(f"params: {path}: expected a value {word} {meta[key]}, got {value!r}")


def unknown_key(key: str, known: list[str], path: str, what: str = "") -> SeqlabError:
    hint = difflib.get_close_matches(str(key), known, n=1)
    extra = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(known)}"
    where = f"{path}.{key}" if path else str(key)
    return SeqlabError(f"params: unknown key {where!r}{what}{extra}")


def build(cls: type, raw: Any, path: str, what: str = "") -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``raw`` (``path``: its key path).

    ``what`` is added to an unknown-key error (e.g. " for family 'conv'").
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SeqlabError(f"params: {path or 'top level'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise unknown_key(unknown[0], list(fields), path, what)
    values = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        sub = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = build_section(tp, raw[name], sub)
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            if not isinstance(raw[name], dict):
                raise SeqlabError(f"params: {sub}: expected a mapping of name -> settings, got {raw[name]!r}")
            item = typing.get_args(tp)[1]
            values[name] = {str(k): build_section(item, v, f"{sub}.{k}") for k, v in raw[name].items()}
        else:
            values[name] = check_value(raw[name], tp, sub)
            check_range(values[name], dict(f.metadata), sub)
    return cls(**values)


def build_section(cls: type, raw: Any, path: str) -> Any:
    """:func:`build`, or ``cls.from_raw`` when the dataclass builds itself."""
    from_raw = getattr(cls, "from_raw", None)
    return from_raw(raw, path) if from_raw is not None else build(cls, raw, path)
