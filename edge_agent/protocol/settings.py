"""Strict, frozen settings: what agent.toml's sections and firmware profiles are checked with.

A section is a frozen dataclass deriving from :class:`Section`; a field's default, bounds and
own rule are given with :func:`setting`, a rule over several fields by overriding
:meth:`Section.check`. Constructing a section checks every field (so a rule holds however the
section was made), and :func:`parse` builds one from a TOML table: a missing required field,
an unknown key, a wrong type or an out-of-range value is an error naming the field's dotted
path (``measure.2.name``), and every error is collected before any is raised, in the
order of the fields (unknown keys last) whatever the order of the file, as pydantic did. Types are
strict, as TOML gives them: an ``int`` field takes an integer only (never ``True``, never
``1.0``), a ``float`` field an integer or a float, a ``str`` field a string, a ``Literal`` one
of its values, a ``tuple[X, ...]`` an array of X (kept as a tuple), a nested section a
table, ``X | None`` nothing or an X; any other class (:class:`pathlib.Path`) an instance of
it or the string it is made from.

Why not pydantic: ``edge-agent run`` reads its config
and its firmware profile once at start, and importing pydantic and building its validators
cost the idle agent about 10 MiB of its ~47 MiB (docs/performance-profile.md, phase 2);
these small sections need none of it. Pure (no I/O), because the hub checks firmware
profiles with it too (:mod:`edge_agent.protocol.firmware_profile`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = ["Section", "SettingsError", "parse", "setting"]

S = TypeVar("S", bound="Section")
Location = tuple[str, ...]
Errors = list[tuple[Location, str]]


class SettingsError(ValueError):
    """One or more fields are invalid; ``errors`` holds (location, message) pairs, the first
    of them, by its dotted path, in ``str()``."""

    def __init__(self, errors: Errors) -> None:
        self.errors = errors
        where, message = errors[0]
        super().__init__(f"{_where(where)}: {message} ({len(errors)} error(s) in all)")


@dataclasses.dataclass(frozen=True, slots=True)
class _Rules:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    check: Callable[[Any], Any] | None = None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A field (required without ``default``) and its rules: ``ge``/``gt``/``le`` on a number
    (NaN is out of every range), ``min_length``/``max_length`` on a string or an array,
    ``pattern`` a regular expression all of a string must match, and ``check`` a function of
    the typed value returning it (or its normal form) or raising :class:`ValueError` with
    what is wrong; it runs only once the other rules hold."""
    rules = _Rules(ge, gt, le, min_length, max_length, pattern, check)
    return dataclasses.field(default=default, metadata={"rules": rules})


class Section:
    """Base of a settings section: the deriving frozen dataclass is checked on construction.

    Raises:
        SettingsError: a field has the wrong type or breaks a rule, or :meth:`check` fails.
    """

    __slots__ = ()

    def __post_init__(self) -> None:
        errors: Errors = []
        for name, value in _checked(type(self), _fields_of(self), (), errors).items():
            object.__setattr__(self, name, value)
        if not errors:
            try:
                self.check()
            except ValueError as exc:
                errors.append(((), str(exc)))
        if errors:
            raise SettingsError(errors)

    def check(self) -> None:
        """A rule over several fields, run once each field holds its own rules.

        Raises:
            ValueError: what is wrong, as a sentence (located at the section itself).
        """


def _fields_of(section: Section) -> dict[str, Any]:
    """The fields of ``section`` by name (a slotted dataclass has no ``__dict__``)."""
    return {f.name: getattr(section, f.name) for f in _fields(type(section))}


def _fields(cls: type[Section]) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)  # type: ignore[arg-type]


def parse(cls: type[S], data: object) -> S:
    """``cls`` built from the TOML table ``data``; absent fields take their defaults.

    Raises:
        SettingsError: ``data`` is not a table, lacks a required field, has an unknown key,
            or a field has the wrong type or breaks a rule (every error found, the first
            one named).
    """
    errors: Errors = []
    section = _section(cls, data, (), errors)
    if section is None:
        raise SettingsError(errors)
    return section


def _section(cls: type[S], data: object, loc: Location, errors: Errors) -> S | None:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        errors.append((loc, f"Input should be a table of {cls.__name__}"))
        return None
    fields = _fields(cls)
    before = len(errors)
    values: dict[str, Any] = {}
    for f in fields:
        if f.name in data:
            values.update(_checked(cls, {f.name: data[f.name]}, loc, errors))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(((*loc, f.name), "Field required"))
    names = {f.name for f in fields}
    errors.extend(
        ((*loc, str(key)), "Extra inputs are not permitted") for key in data if key not in names
    )
    if len(errors) > before:
        return None
    try:
        return cls(**values)
    except SettingsError as exc:
        errors.extend(((*loc, *where), message) for where, message in exc.errors)
        return None


def _checked(
    cls: type[Section], values: dict[str, Any], loc: Location, errors: Errors
) -> dict[str, Any]:
    """``values`` converted to their fields' types (int to float, a table to its section,
    a check's normal form); a value that fails is left out and its error appended."""
    hints = _hints(cls)
    rules = {f.name: f.metadata.get("rules") for f in _fields(cls)}
    checked = {}
    for name, value in values.items():
        where = (*loc, name)
        before = len(errors)
        converted = _value(hints[name], value, where, errors)
        if len(errors) == before:
            converted = _ruled(converted, rules[name], where, errors)
        if len(errors) == before:
            checked[name] = converted
    return checked


_HINTS: dict[type[Section], dict[str, Any]] = {}


def _hints(cls: type[Section]) -> dict[str, Any]:
    """The resolved annotations of ``cls``'s fields (resolved once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _value(hint: Any, value: object, loc: Location, errors: Errors) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _union(get_args(hint), value, loc, errors)
    if origin is Literal:
        choices = get_args(hint)
        if value in choices and type(value) is str:
            return value
        errors.append((loc, "Input should be " + " or ".join(map(repr, choices))))
        return None
    if origin is tuple:
        return _array(get_args(hint)[0], value, loc, errors)
    if isinstance(hint, type) and issubclass(hint, Section):
        return _section(hint, value, loc, errors)
    converted = _scalar(hint, value)
    if converted is None:
        errors.append((loc, f"Input should be {_type_name(hint)}"))
    return converted


def _union(options: tuple[Any, ...], value: object, loc: Location, errors: Errors) -> Any:
    """``X | None``: nothing, or an X with X's own errors (a nested table's name its field);
    ``X | Y``: the first option that takes ``value``."""
    if value is None and type(None) in options:
        return None
    given = [o for o in options if o is not type(None)]
    if len(given) == 1:
        return _value(given[0], value, loc, errors)
    for option in given:
        attempt: Errors = []
        converted = _value(option, value, loc, attempt)
        if not attempt:
            return converted
    errors.append((loc, "Input should be " + " or ".join(map(_type_name, given))))
    return None


def _array(item: Any, value: object, loc: Location, errors: Errors) -> tuple[Any, ...] | None:
    """An array of ``item`` (a TOML array is a list) as a tuple, each item named by its index."""
    if not isinstance(value, list | tuple):
        errors.append((loc, "Input should be a valid list"))
        return None
    before = len(errors)
    items = tuple(_value(item, one, (*loc, str(i)), errors) for i, one in enumerate(value))
    return items if len(errors) == before else None


def _scalar(hint: Any, value: object) -> Any:
    """``value`` as ``hint`` (int, float, str, any other class), or ``None`` when it is not
    one."""
    if hint is int:
        return value if type(value) is int else None
    if hint is float:
        return float(value) if type(value) in (int, float) else None  # type: ignore[arg-type]
    if hint is str:
        return value if isinstance(value, str) else None
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    if isinstance(hint, type) and isinstance(value, str):
        try:
            return hint(value)
        except (TypeError, ValueError):
            return None
    return None


def _type_name(hint: Any) -> str:
    names = {int: "a valid integer", float: "a valid number", str: "a valid string"}
    return names.get(hint, f"a valid {getattr(hint, '__name__', hint)}")


def _ruled(value: object, rules: _Rules | None, loc: Location, errors: Errors) -> Any:
    """``value`` once its field's rules hold (the check's normal form), else ``None`` with
    the first broken rule appended."""
    if rules is None or value is None:
        return value
    problem = _broken(value, rules)
    if problem is None and rules.check is not None:
        try:
            return rules.check(value)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        errors.append((loc, problem))
        return None
    return value


def _broken(value: object, rules: _Rules) -> str | None:
    """The first of ``rules``' bounds that ``value`` breaks, as a sentence."""
    if isinstance(value, str | tuple):
        if rules.min_length is not None and len(value) < rules.min_length:
            return f"{_sized(value)} should have at least {_count(value, rules.min_length)}"
        if rules.max_length is not None and len(value) > rules.max_length:
            return f"{_sized(value)} should have at most {_count(value, rules.max_length)}"
        if isinstance(value, str) and rules.pattern and not re.fullmatch(rules.pattern, value):
            return f"String should match pattern '{rules.pattern}'"
        return None
    if not isinstance(value, int | float):
        return None
    if isinstance(value, float) and math.isnan(value):
        return "Input should be a finite number"
    if rules.ge is not None and not value >= rules.ge:
        return f"Input should be greater than or equal to {rules.ge}"
    if rules.gt is not None and not value > rules.gt:
        return f"Input should be greater than {rules.gt}"
    if rules.le is not None and not value <= rules.le:
        return f"Input should be less than or equal to {rules.le}"
    return None


def _sized(value: str | tuple[Any, ...]) -> str:
    return "String" if isinstance(value, str) else "List"


def _count(value: str | tuple[Any, ...], limit: int) -> str:
    unit = "character" if isinstance(value, str) else "item"
    return f"{limit} {unit}{'' if limit == 1 else 's'}, not {len(value)}"


def _where(loc: Location) -> str:
    return ".".join(loc) or "(top level)"
