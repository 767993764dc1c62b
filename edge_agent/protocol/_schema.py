"""Small typed readers for decoded CBOR maps: every schema check names the field at fault.

Each reader raises the error class its caller passes, so a bundle's schema fault is a
``BundleError`` and a root's is a ``RootError``.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.errors import EdgeGovError, EnvelopeError
from edge_agent.protocol.limits import MAX_COUNTER

__all__ = ["MAX_NAME_CHARS", "Fields", "check_counter", "check_name"]

MAX_NAME_CHARS = 128
"""Longest identifier (region, group, profile, device id, role) accepted anywhere."""

MAX_LIST_ITEMS = 4096


class Fields:
    """A decoded CBOR map whose field set is exactly ``required`` plus some of ``optional``."""

    def __init__(
        self,
        value: object,
        what: str,
        error: type[EnvelopeError],
        *,
        required: frozenset[str],
        optional: frozenset[str] = frozenset(),
    ) -> None:
        if not isinstance(value, dict):
            raise error(f"{what} must be a map")
        keys = set(value)
        missing = required - keys
        if missing:
            raise error(f"{what} lacks field(s) {', '.join(sorted(missing))}")
        unknown = keys - required - optional
        if unknown:
            names = ", ".join(sorted(repr(k) for k in unknown))
            raise error(f"{what} has unknown field(s) {names}")
        self._map: Mapping[object, object] = value
        self._what = what
        self._error = error

    def has(self, name: str) -> bool:
        return name in self._map

    def raw(self, name: str) -> object:
        return self._map[name]

    def integer(self, name: str, *, minimum: int = 0) -> int:
        """A counter field: an integer from ``minimum`` to :data:`MAX_COUNTER` (2^53-1)."""
        value = self._map[name]
        return check_counter(value, f"{self._what}.{name}", self._error, minimum=minimum)

    def optional_integer(self, name: str, *, minimum: int = 0) -> int | None:
        if self._map.get(name) is None:
            return None
        return self.integer(name, minimum=minimum)

    def byte_string(self, name: str, *, length: int | None = None) -> bytes:
        value = self._map[name]
        if not isinstance(value, bytes) or (length is not None and len(value) != length):
            size = f" of {length} bytes" if length is not None else ""
            raise self._error(f"{self._what}.{name} must be a byte string{size}")
        return value

    def name(self, name: str) -> str:
        return check_name(self._map[name], f"{self._what}.{name}", self._error)

    def names(self, name: str) -> tuple[str, ...]:
        value = self._map[name]
        if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
            raise self._error(f"{self._what}.{name} must be a list of names")
        items = tuple(check_name(v, f"{self._what}.{name}[]", self._error) for v in value)
        if len(set(items)) != len(items):
            raise self._error(f"{self._what}.{name} lists a name twice")
        return items


def check_counter(value: object, what: str, error: type[EdgeGovError], *, minimum: int = 0) -> int:
    """An integer from ``minimum`` to :data:`MAX_COUNTER`: the one bound on every version,
    epoch, time, duration, sequence number and size read from outside (limits.py says why)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_COUNTER:
        raise error(f"{what} must be an integer from {minimum} to {MAX_COUNTER} (2^53-1)")
    return value


def check_name(value: object, what: str, error: type[EdgeGovError]) -> str:
    """A non-empty printable identifier of at most MAX_NAME_CHARS characters."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_NAME_CHARS
        or not value.isprintable()
        or value.strip() != value
    ):
        raise error(f"{what} must be a non-empty printable name of at most {MAX_NAME_CHARS} chars")
    return value
