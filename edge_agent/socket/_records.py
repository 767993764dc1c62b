"""``typing.NamedTuple``'s class syntax without importing :mod:`typing` at run time.

``edge-agent exec`` imports the socket protocol's value types before every gated program,
and importing :mod:`typing` is a measurable part of that start-up. Type checkers see
``typing.NamedTuple`` (the importing module chooses under ``TYPE_CHECKING``); at run time
this stand-in turns the same class body into ``collections.namedtuple(name, fields,
defaults=...)`` with the class's docstring and module, which is what ``typing.NamedTuple``
builds too. Only fields, trailing defaults and a docstring are supported; anything else in
the body (methods, properties) is refused rather than silently dropped.
"""

from __future__ import annotations

import collections

__all__ = ["NamedTuple"]

_namedtuple = collections.namedtuple
"""Called through a name: type checkers special-case literal ``namedtuple(...)`` calls."""
_ALLOWED = frozenset({"__module__", "__qualname__", "__doc__", "__annotations__"})


class _RecordMaker(type):
    def __new__(  # returns the namedtuple class, not an instance of cls
        cls, name: str, bases: tuple[type, ...], namespace: dict[str, object]
    ) -> type:
        if not bases:
            return super().__new__(cls, name, bases, namespace)
        annotations = namespace.get("__annotations__", {})
        assert isinstance(annotations, dict)
        fields = list(annotations)
        extra = set(namespace) - _ALLOWED - set(fields)
        if extra:
            raise TypeError(f"{name}: only fields and a docstring, not {sorted(extra)}")
        defaults = [namespace[field] for field in fields if field in namespace]
        if any(field not in namespace for field in fields[len(fields) - len(defaults) :]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        made = _namedtuple(name, fields, defaults=defaults, module=str(namespace["__module__"]))
        made.__doc__ = str(namespace.get("__doc__") or made.__doc__)
        made.__qualname__ = str(namespace["__qualname__"])
        return made


class NamedTuple(metaclass=_RecordMaker):
    """Base of a record class: ``class Point(NamedTuple): x: int; y: int = 0``."""
