"""``typing.NamedTuple``'s class syntax without importing :mod:`typing` or :mod:`collections`.

``edge-agent exec`` imports the socket protocol's value types before every gated program,
and importing :mod:`typing`, or :mod:`collections` (with :mod:`operator`, :mod:`reprlib` and
:mod:`keyword`, about 1.5 ms), is a measurable part of that start-up. Type checkers see
``typing.NamedTuple`` (the importing module chooses under ``TYPE_CHECKING``); at run time
this stand-in turns the same class body into what ``collections.namedtuple(name, fields,
defaults=...)`` builds, as ``typing.NamedTuple`` does: a tuple subclass without an instance
dictionary whose ``__new__`` takes the fields by position or by name (trailing ones
defaulted), a read-only property per field, ``_fields``, ``_field_defaults``, ``_make``,
``_replace``, ``_asdict``, ``__match_args__``, namedtuple's ``repr``, and pickling. Equality,
ordering and hashing are the tuple's. Only fields, trailing defaults and a docstring are
supported; anything else in the body (methods, properties) is refused rather than silently
dropped.
"""

from __future__ import annotations

from _operator import itemgetter  # operator's C half; operator.py is what costs start-up

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import ClassVar, Self

__all__ = ["NamedTuple"]

_ALLOWED = frozenset({"__module__", "__qualname__", "__doc__", "__annotations__"})


class _Record(tuple[object, ...]):
    """What every record shares; :class:`_RecordMaker` adds ``__new__`` and the fields."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _field_defaults: ClassVar[dict[str, object]] = {}

    @classmethod
    def _make(cls, iterable: Iterable[object]) -> Self:
        record = tuple.__new__(cls, iterable)
        if len(record) != len(cls._fields):
            raise TypeError(f"expected {len(cls._fields)} arguments, got {len(record)}")
        return record

    def _replace(self, **changes: object) -> Self:
        # Each field takes its change if there is one (popped), else its current value.
        record = self._make(map(changes.pop, self._fields, self))
        if changes:
            raise ValueError(f"got unexpected field names: {list(changes)!r}")
        return record

    def _asdict(self) -> dict[str, object]:
        return dict(zip(self._fields, self, strict=True))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)
        )
        return f"{type(self).__name__}({fields})"

    def __getnewargs__(self) -> tuple[object, ...]:
        return tuple(self)


class _RecordMaker(type):
    def __new__(  # returns the record class, not an instance of cls
        cls, name: str, bases: tuple[type, ...], namespace: dict[str, object]
    ) -> type:
        if not bases:
            return super().__new__(cls, name, bases, namespace)
        annotations = namespace.get("__annotations__", {})
        assert isinstance(annotations, dict)
        fields = tuple(annotations)
        extra = set(namespace) - _ALLOWED - set(fields)
        if extra:
            raise TypeError(f"{name}: only fields and a docstring, not {sorted(extra)}")
        defaults = tuple(namespace[field] for field in fields if field in namespace)
        defaulted = fields[len(fields) - len(defaults) :]
        if any(field not in namespace for field in defaulted):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        if any(field.startswith("_") for field in fields):
            raise ValueError(f"{name}: a field name may not start with an underscore")
        # Built as collections.namedtuple builds it: a real signature, so the interpreter
        # binds positional and keyword arguments and reports missing or unexpected ones. Its
        # only input is the class's field names: identifiers, from the class body's source.
        arguments = ", ".join(fields)
        new = eval(f"lambda _cls, {arguments}: _new(_cls, ({arguments},))", {"_new": tuple.__new__})
        new.__defaults__ = defaults or None
        new.__name__, new.__qualname__ = "__new__", f"{name}.__new__"
        body: dict[str, object] = {
            "__slots__": (),
            "__module__": namespace["__module__"],
            "__qualname__": namespace["__qualname__"],
            "__doc__": namespace.get("__doc__") or f"{name}({arguments})",
            "__new__": new,
            "__match_args__": fields,
            "_fields": fields,
            "_field_defaults": dict(zip(defaulted, defaults, strict=True)),
        }
        for index, field in enumerate(fields):
            body[field] = property(itemgetter(index), doc=f"Alias for field number {index}")
        return type(name, (_Record,), body)


class NamedTuple(metaclass=_RecordMaker):
    """Base of a record class: ``class Point(NamedTuple): x: int; y: int = 0``."""
