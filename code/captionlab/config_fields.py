"""Config fields with their constraints (``opt``) and the check of a value against its field: why a
config key fails at once, in one line naming the key, the value and what is expected (``ConfigError``)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import field
from typing import Any

from .errors import InputError
from .registry import registry_names


class ConfigError(InputError):
    """A config key or value that cannot be used; the message is one line naming the key."""


def opt(
    default: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    below: float | None = None,
    above: float | None = None,
    choices: Sequence[str] | None = None,
    registry: str | tuple[str, ...] | None = None,
    pattern: str | None = None,
    help: str = "",
) -> Any:
    """A config field with its constraints: inclusive ``min``/``max``, exclusive ``above``/``below``,
    fixed ``choices``, names from a ``registry`` (looked up when the config is checked, so models
    and formats registered later are accepted), or a regular expression ``pattern``."""
    meta = {
        "min": min,
        "max": max,
        "below": below,
        "above": above,
        "choices": choices,
        "registry": registry,
        "pattern": pattern,
        "help": help,
    }
    return field(default=default, metadata={k: v for k, v in meta.items() if v not in (None, "")})


def build(cls: type, d: Any, prefix: str) -> Any:
    """The dataclass ``cls`` from the mapping ``d``, every value checked against its field; ``prefix``
    names the section in messages ("train.")."""
    if not isinstance(d, dict):
        raise ConfigError(
            f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping of keys to values, "
            f"got {type(d).__name__} {d!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}{hint} (keys of "
                f"{prefix.rstrip('.') or 'the config'}: {', '.join(fields)})"
            )
        ftype = hints[key]
        if dataclasses.is_dataclass(ftype):
            kwargs[key] = build(ftype, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check(prefix + key, value, ftype, fields[key].metadata)
    return cls(**kwargs)


def _describe(ftype: Any, meta: typing.Mapping[str, Any]) -> str:
    """What a value must be, in words: 'an integer >= 1', 'one of: error, skip'."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    base, optional = _unwrap(ftype)
    if typing.get_origin(base) is list:
        what = f"a list of {names.get(typing.get_args(base)[0], 'values')[2:]}s" if typing.get_args(base) else "a list"
    else:
        what = names.get(base, getattr(base, "__name__", str(base)))
    bounds = [
        f"{op} {meta[k]:g}" for k, op in (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<")) if k in meta
    ]
    if bounds:
        what += " " + " and ".join(bounds)
    choices = _choices(meta)
    if choices is not None:
        what = "one of: " + ", ".join(choices)
    elif "pattern" in meta:
        what += f": {meta['help']}" if "help" in meta else f" matching {meta['pattern']}"
    return what + (" (or null)" if optional else "")


def _unwrap(ftype: Any) -> tuple[Any, bool]:
    """``int | None`` -> (int, True); ``int`` -> (int, False)."""
    if typing.get_origin(ftype) in (typing.Union, types.UnionType):
        args = typing.get_args(ftype)
        return next(a for a in args if a is not type(None)), type(None) in args
    return ftype, False


def _choices(meta: typing.Mapping[str, Any]) -> list[str] | None:
    if "choices" in meta:
        return list(meta["choices"])
    if "registry" in meta:
        names = registry_names(meta["registry"])
        return names or None  # a registry nobody has filled yet (a bare `import captionlab.config`)
    return None


def _check(key: str, value: Any, ftype: Any, meta: typing.Mapping[str, Any]) -> Any:
    def bad(reason: str = "") -> ConfigError:
        return ConfigError(f"{key} = {value!r}: expected {_describe(ftype, meta)}{reason}")

    base, optional = _unwrap(ftype)
    if value is None:
        if optional:
            return None
        raise bad()
    if typing.get_origin(base) is list:
        if not isinstance(value, list):
            raise bad()
        inner = (typing.get_args(base) or (Any,))[0]
        return [v if inner is Any else _check(f"{key}[{i}]", v, inner, {}) for i, v in enumerate(value)]
    value = _coerce(value, base, bad)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for k, ok in (
            ("min", lambda v, b: v >= b),
            ("max", lambda v, b: v <= b),
            ("above", lambda v, b: v > b),
            ("below", lambda v, b: v < b),
        ):
            if k in meta and not ok(value, meta[k]):
                raise bad()
    if isinstance(value, str):
        choices = _choices(meta)
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            raise bad(f"; did you mean {close[0]!r}?" if close else "")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise bad()
    return value


def _coerce(value: Any, base: Any, bad: Callable[..., ConfigError]) -> Any:
    """Strict: no bool for a number, no number-looking string for an int. Two conveniences only:
    ``1e-4`` (a string to YAML 1.1) is a float, and a number is accepted where free text is."""
    if base is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if base is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad() from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad()
    if base is str:
        return _text(value, bad)
    return value


def _text(value: Any, bad: Callable[..., ConfigError]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no unquoted as true/false
        raise bad("; YAML reads on, off, yes and no as true/false: quote the word")
    if isinstance(value, (int, float)):
        return str(value)
    raise bad()
