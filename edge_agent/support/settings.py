"""Strict, frozen configuration sections: what the agent's config files are checked with.

A section is a frozen dataclass deriving from :class:`Section`; a field's bounds are given
with :func:`setting`. Constructing a section checks every field (so a bound holds however the
section was made), and :func:`parse` builds one from a TOML table: an unknown key, a wrong
type or an out-of-range value is an error naming the field's dotted path, and every error is
collected before any is raised. Types are strict, as TOML gives them: an ``int`` field takes
an integer only (never ``True``, never ``1.0``), a ``float`` field an integer or a float, a
``str`` field a string, a ``Literal`` one of its values, a :class:`~pathlib.Path` a string,
a nested section a table.

Why not pydantic (which the hub uses for its own files): ``edge-agent run`` reads its config
once at start, and importing pydantic and building its validators cost the idle agent about
10 MiB of its ~47 MiB (docs/performance-profile.md, phase 2); these few flat sections need
none of it. A firmware profile is still validated with pydantic, imported only when a
profile is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["Section", "SettingsError", "parse", "setting"]

S = TypeVar("S", bound="Section")
Location = tuple[str, ...]


class SettingsError(ValueError):
    """One or more fields are invalid; ``errors`` holds (dotted path, message) pairs, the
    first of them in ``str()``."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        where, message = errors[0]
        super().__init__(f"{where}: {message} ({len(errors)} error(s) in all)")


@dataclasses.dataclass(frozen=True, slots=True)
class _Bounds:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    max_length: int | None = None


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    max_length: int | None = None,
) -> Any:
    """A field with a default and bounds: ``ge``/``gt``/``le`` on a number (NaN is out of
    every range), ``max_length`` on a string."""
    bounds = _Bounds(ge, gt, le, max_length)
    return dataclasses.field(default=default, metadata={"bounds": bounds})


class Section:
    """Base of a config section: the deriving frozen dataclass is checked on construction.

    Raises:
        SettingsError: a field has the wrong type or is out of its bounds.
    """

    __slots__ = ()

    def __post_init__(self) -> None:
        errors: list[tuple[str, str]] = []
        for name, value in _checked(type(self), _fields_of(self), (), errors).items():
            object.__setattr__(self, name, value)
        if errors:
            raise SettingsError(errors)


def _fields_of(section: Section) -> dict[str, Any]:
    """The fields of ``section`` by name (a slotted dataclass has no ``__dict__``)."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}  # type: ignore[arg-type]


def parse(cls: type[S], data: object) -> S:
    """``cls`` built from the TOML table ``data``; absent fields take their defaults.

    Raises:
        SettingsError: ``data`` is not a table, or has an unknown key, or a field has the
            wrong type or is out of its bounds (every error found, the first one named).
    """
    errors: list[tuple[str, str]] = []
    section = _section(cls, data, (), errors)
    if section is None:
        raise SettingsError(errors)
    return section


def _section(cls: type[S], data: object, loc: Location, errors: list[tuple[str, str]]) -> S | None:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        errors.append((_where(loc), f"Input should be a table of {cls.__name__}"))
        return None
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    before = len(errors)
    errors.extend(
        (_where((*loc, str(key))), "Extra inputs are not permitted")
        for key in data
        if key not in names
    )
    given = {key: value for key, value in data.items() if key in names}
    values = _checked(cls, given, loc, errors)
    if len(errors) > before:
        return None
    return cls(**values)


def _checked(
    cls: type[Section], values: dict[str, Any], loc: Location, errors: list[tuple[str, str]]
) -> dict[str, Any]:
    """``values`` converted to their fields' types (int to float, str to Path, a table to
    its section); a value that fails is left out and its error appended."""
    hints = _hints(cls)
    bounds = {f.name: f.metadata.get("bounds") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    checked = {}
    for name, value in values.items():
        where = (*loc, name)
        before = len(errors)
        converted = _value(hints[name], value, where, errors)
        if len(errors) == before and (problem := _out_of_bounds(converted, bounds[name])):
            errors.append((_where(where), problem))
        if len(errors) == before:
            checked[name] = converted
    return checked


_HINTS: dict[type[Section], dict[str, Any]] = {}


def _hints(cls: type[Section]) -> dict[str, Any]:
    """The resolved annotations of ``cls``'s fields (resolved once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _value(hint: Any, value: object, loc: Location, errors: list[tuple[str, str]]) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            attempt: list[tuple[str, str]] = []
            converted = _value(option, value, loc, attempt)
            if not attempt:
                return converted
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        errors.append((_where(loc), f"Input should be {names}"))
        return None
    if origin is Literal:
        choices = get_args(hint)
        if value in choices and type(value) is str:
            return value
        errors.append((_where(loc), "Input should be " + " or ".join(map(repr, choices))))
        return None
    if isinstance(hint, type) and issubclass(hint, Section):
        return _section(hint, value, loc, errors)
    converted = _scalar(hint, value)
    if converted is None:
        errors.append((_where(loc), f"Input should be {_type_name(hint)}"))
    return converted


def _scalar(hint: Any, value: object) -> Any:
    """``value`` as ``hint`` (int, float, str, Path, None), or ``None`` when it is not one."""
    if hint is int and type(value) is int:
        return value
    if hint is float and type(value) in (int, float):
        return float(value)  # type: ignore[arg-type]
    if hint is str and isinstance(value, str):
        return value
    if hint is Path and isinstance(value, str | Path):
        return Path(value)
    return None


def _type_name(hint: Any) -> str:
    names = {int: "a valid integer", float: "a valid number", str: "a valid string"}
    return names.get(hint, f"a valid {getattr(hint, '__name__', hint)}")


def _out_of_bounds(value: object, bounds: _Bounds | None) -> str | None:
    if bounds is None or value is None:
        return None
    if isinstance(value, str):
        if bounds.max_length is not None and len(value) > bounds.max_length:
            return f"String should have at most {bounds.max_length} characters"
        return None
    if not isinstance(value, int | float):
        return None
    if isinstance(value, float) and math.isnan(value):
        return "Input should be a finite number"
    if bounds.ge is not None and not value >= bounds.ge:
        return f"Input should be greater than or equal to {bounds.ge}"
    if bounds.gt is not None and not value > bounds.gt:
        return f"Input should be greater than {bounds.gt}"
    if bounds.le is not None and not value <= bounds.le:
        return f"Input should be less than or equal to {bounds.le}"
    return None


def _where(loc: Location) -> str:
    return ".".join(loc)
