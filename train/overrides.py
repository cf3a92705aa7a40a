"""Settings given as text, ``field.path=value``, applied to a frozen config: what ``sweep --set`` takes.

A value is read as the field's type says (int, float, bool, text, a path, one of a Literal's choices,
``none`` for an optional field, a JSON list for a tuple); a grid gives several values separated by
commas (``sac.feature_shift=0,1``; commas inside ``[...]`` belong to a list). Importable without torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

Config = TypeVar("Config")

Override = tuple[str, str]
"""``(field.path, value text)``."""


def split_values(text: str) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``; commas inside brackets do not split (``"[1,2],[3]"`` -> two values)."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [v.strip() for v in values]


def parse_grid(items: typing.Sequence[str]) -> tuple[tuple[Override, ...], list[tuple[Override, ...]]]:
    """``field=value`` items -> (the settings every trial has, one tuple of settings per grid point).

    An item with one value is fixed; items with several values span the grid (their product, in the
    order given). No grid item gives one grid point with no settings.
    """
    fixed: list[Override] = []
    axes: list[list[Override]] = []
    seen: set[str] = set()
    for item in items:
        path, sep, text = item.partition("=")
        path = path.strip()
        if not sep or not path:
            raise ValueError(f"--set {item!r}: write FIELD=VALUE or FIELD=V1,V2 (e.g. sac.feature_shift=0,1)")
        if path in seen:
            raise ValueError(f"--set gives {path} twice; give its values once, separated by commas")
        seen.add(path)
        values = split_values(text)
        if any(v == "" for v in values):
            raise ValueError(f"--set {item!r}: an empty value; give {path}=VALUE or {path}=V1,V2")
        if len(values) == 1:
            fixed.append((path, values[0]))
        else:
            axes.append([(path, v) for v in values])
    return tuple(fixed), [tuple(point) for point in itertools.product(*axes)]


def apply_overrides(config: Config, overrides: typing.Iterable[Override]) -> Config:
    """``config`` with every override applied at once, whatever order they were given in.

    Each dataclass level is replaced in one step, so its validation sees all of its new values together.
    """
    return _apply(config, [(path, path, text) for path, text in overrides])


def _apply(config: Any, items: list[tuple[str, str, str]]) -> Any:
    """Apply ``(path below this level, full path, text)`` items to ``config``, one ``replace`` for this level."""
    if not items:
        return config
    names = [f.name for f in dataclasses.fields(config)]
    hints = typing.get_type_hints(type(config))
    leaves: dict[str, Any] = {}
    nested: dict[str, list[tuple[str, str, str]]] = {}
    for path, full, text in items:
        head, _, rest = path.partition(".")
        if head not in names:
            raise ValueError(f"{full}: {type(config).__name__} has no field {head!r}; its fields: {', '.join(names)}")
        current = getattr(config, head)
        if rest:
            if not dataclasses.is_dataclass(current):
                raise ValueError(f"{full}: {head} is a single setting, not a group of them")
            nested.setdefault(head, []).append((rest, full, text))
        elif dataclasses.is_dataclass(current):
            fields = ", ".join(f"{full}.{f.name}" for f in dataclasses.fields(current))
            raise ValueError(f"{full} is a group of settings; set its fields: {fields}")
        else:
            leaves[head] = coerce(text, hints[head], full)
    changes = {**leaves, **{head: _apply(getattr(config, head), sub) for head, sub in nested.items()}}
    return dataclasses.replace(config, **changes)


def coerce(text: str, hint: Any, name: str) -> Any:
    """``text`` as a value of type ``hint``; a ``ValueError`` naming ``name`` and what it takes otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        errors = []
        for option in options:
            try:
                return coerce(text, option, name)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        if text not in [str(a) for a in args]:
            raise ValueError(f"{name} is {text!r}; choose one of {', '.join(str(a) for a in args)}")
        return next(a for a in args if str(a) == text)
    if hint is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{name} is {text!r}; give true or false")
        return lowered in ("true", "1", "yes")
    if hint is int:
        try:
            number = float(text.replace("_", ""))
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            raise ValueError(f"{name} is {text!r}; give a whole number")
        return int(number)
    if hint is float:
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise ValueError(f"{name} is {text!r}; give a number") from None
    if hint is str:
        return text
    if hint is Path:
        return Path(text)
    if origin is tuple:
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if not isinstance(items, list):
            raise ValueError(f"{name} is {text!r}; give a list, e.g. [256,256]")
        element = args[0] if args else str
        return tuple(coerce(str(item), element, name) for item in items)
    raise ValueError(f"{name} cannot be set from text (its type is {hint})")
