"""Resource patterns compared as languages: does one pattern cover another, do two overlap.

The grammar is the engine's (docs/policy.md section 3): ``/`` separates segments, ``*``
matches zero or more characters and ``?`` exactly one within a segment, a ``**`` segment
matches zero or more whole segments, everything else is literal. Each pattern becomes a
small automaton over characters; :func:`covers` searches the product of two automata for a
resource the inner pattern matches and the outer one does not, :func:`overlap` for one both
match (and returns it, as an example an operator can read).

The answers are exact, never guesses: every character a pattern does not name behaves the
same in both automata, so the search runs over the characters the two patterns name, ``/``
and one stand-in for all others. A search that would visit more than
:data:`MAX_SEARCH_STATES` pairs of states gives up, and giving up is answered as "not
proven": :func:`covers` says False and :func:`overlap` says None. Callers (the policy lint)
claim shadowing only on a True. A :class:`SearchBudget` shared by many comparisons bounds
their total the same way: once it is spent, every search gives up.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache

__all__ = ["MAX_SEARCH_STATES", "SearchBudget", "covers", "literal_prefix", "overlap"]

MAX_SEARCH_STATES = 20_000
"""Most pairs of automaton states one comparison visits before it gives up (not proven)."""


class SearchBudget:
    """Automaton steps (one state of either pattern reading one character) a series of
    searches may take in total, the measure of their time (each search also stops at
    :data:`MAX_SEARCH_STATES` pairs); a search that would go past what is left gives up."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    @property
    def spent(self) -> bool:
        return self.left <= 0

    def charge(self, steps: int) -> None:
        self.left -= steps


_GLOBSTAR = "**"
_ANY_SEGMENT = -1
_STAND_INS = "xyzqjkXYZ0123456789_-."

_State = tuple[int, int]
"""(segment index, position in the segment's tokens), or (segment index, ``_ANY_SEGMENT``)
inside a segment a ``**`` consumes."""
_States = frozenset[_State]


def literal_prefix(pattern: str) -> tuple[str, ...]:
    """The whole segments of ``pattern`` before the first one holding ``*`` or ``?``: every
    resource the pattern matches starts with exactly these segments."""
    prefix: list[str] = []
    for segment in pattern.split("/"):
        if "*" in segment or "?" in segment:
            break
        prefix.append(segment)
    return tuple(prefix)


def covers(outer: str, inner: str, budget: SearchBudget | None = None) -> bool:
    """Whether every resource ``inner`` matches is matched by ``outer`` (proven; False when
    some resource is matched by ``inner`` alone, or when the search gave up). The search
    is charged to ``budget`` when given."""
    if outer in (inner, _GLOBSTAR):
        return True
    if not _prefixes_agree(outer, inner, covering=True):
        return False
    witness, complete = _search(outer, inner, want_both=False, budget=budget)
    return witness is None and complete


def overlap(first: str, second: str, budget: SearchBudget | None = None) -> str | None:
    """A resource both patterns match (the shortest such, in search order), or None when
    there is none or the search gave up. The search is charged to ``budget`` when given."""
    if not _prefixes_agree(first, second, covering=False):
        return None
    return _search(first, second, want_both=True, budget=budget)[0]


def _prefixes_agree(outer: str, inner: str, *, covering: bool) -> bool:
    """A quick necessary condition. Two patterns match a common resource only if their
    literal prefixes agree where both have one; ``outer`` covers ``inner`` only if its
    literal prefix is part of ``inner``'s (a literal segment where ``inner`` has a wildcard
    leaves out what that wildcard matches)."""
    a, b = literal_prefix(outer), literal_prefix(inner)
    common = min(len(a), len(b))
    if a[:common] != b[:common]:
        return False
    return not covering or len(a) <= len(b)


@lru_cache(maxsize=4096)
def _automaton(pattern: str) -> _Automaton:
    return _Automaton(pattern)


class _Automaton:
    """A pattern's automaton over characters, determinised lazily (sets of states)."""

    def __init__(self, pattern: str) -> None:
        segments = pattern.split("/")
        self.globstar = tuple(s == _GLOBSTAR for s in segments)
        self.tokens = tuple("" if s == _GLOBSTAR else s for s in segments)
        self.count = len(segments)
        self.literals = frozenset(c for c in pattern if c not in "*?/")
        self.start = self._begin(0)

    def _skips(self, index: int) -> list[int]:
        """The segment indexes reachable from ``index`` by letting ``**`` segments match
        nothing (``index`` itself first; ``count`` when the whole pattern can be done)."""
        reach = [index]
        while index < self.count and self.globstar[index]:
            index += 1
            reach.append(index)
        return reach

    def _begin(self, index: int) -> _States:
        """The states at the start of a resource segment matched from pattern segment
        ``index`` on."""
        states: set[_State] = set()
        for at in self._skips(index):
            if at == self.count:
                continue
            if self.globstar[at]:
                states.add((at, _ANY_SEGMENT))
            else:
                states.update(self._closure(at, 0))
        return frozenset(states)

    def _closure(self, index: int, position: int) -> list[_State]:
        """``(index, position)`` and the positions past the ``*`` tokens that follow it
        (a ``*`` may match nothing)."""
        tokens = self.tokens[index]
        states = [(index, position)]
        while position < len(tokens) and tokens[position] == "*":
            position += 1
            states.append((index, position))
        return states

    def step(self, states: _States, char: str) -> _States:
        """The states after reading ``char``."""
        after: set[_State] = set()
        for index, position in states:
            if char == "/":
                if position == _ANY_SEGMENT:
                    after.update(self._begin(index))
                elif position == len(self.tokens[index]):
                    after.update(self._begin(index + 1))
                continue
            if position == _ANY_SEGMENT:
                after.add((index, position))
                continue
            tokens = self.tokens[index]
            if position == len(tokens):
                continue
            token = tokens[position]
            if token == "*":
                after.update(self._closure(index, position))
            elif token == "?" or token == char:
                after.update(self._closure(index, position + 1))
        return frozenset(after)

    def accepts(self, states: _States) -> bool:
        """Whether the resource read so far is matched (all of the pattern used up)."""
        for index, position in states:
            done = position == _ANY_SEGMENT or position == len(self.tokens[index])
            if done and self.count in self._skips(index + 1):
                return True
        return False


def _search(
    first: str, second: str, *, want_both: bool, budget: SearchBudget | None
) -> tuple[str | None, bool]:
    """Breadth-first over pairs of state sets: with ``want_both`` a resource both patterns
    match, else one ``second`` matches and ``first`` does not. Returns that resource (or
    None) and whether the search was complete: it is not when it reached
    :data:`MAX_SEARCH_STATES` or spent what is left of ``budget``, or when no stand-in
    character is left for the characters neither pattern names (then a None proves
    nothing). The steps taken are charged to ``budget``."""
    found, complete, steps = _walk(
        first, second, want_both, None if budget is None else budget.left
    )
    if budget is not None:
        budget.charge(steps)
    return found, complete


def _walk(
    first: str, second: str, want_both: bool, allowed: int | None
) -> tuple[str | None, bool, int]:
    """:func:`_search`'s walk, stopped (incomplete) past ``allowed`` steps; also returns
    the steps taken: each pair of state sets visited reads each character of the alphabet
    in each state of both sets."""
    a, b = _automaton(first), _automaton(second)
    named = sorted(a.literals | b.literals)
    stand_in = next((c for c in _STAND_INS if c not in named), None)
    alphabet = [*named, "/", *([stand_in] if stand_in is not None else [])]
    start = (a.start, b.start)
    came_from: dict[tuple[_States, _States], tuple[tuple[_States, _States], str] | None] = {
        start: None
    }
    queue = deque([start])
    steps = 0
    while queue:
        pair = queue.popleft()
        left, right = pair
        if _found(a, b, left, right, want_both):
            return _spell(came_from, pair), True, steps
        steps += len(alphabet) * (len(left) + len(right))
        if allowed is not None and steps > allowed:
            return None, False, steps
        for char in alphabet:
            following = (a.step(left, char), b.step(right, char))
            if following in came_from or not following[1] or (want_both and not following[0]):
                continue
            if len(came_from) >= MAX_SEARCH_STATES:
                return None, False, steps
            came_from[following] = (pair, char)
            queue.append(following)
    return None, stand_in is not None, steps


def _found(a: _Automaton, b: _Automaton, left: _States, right: _States, want_both: bool) -> bool:
    if want_both:
        return a.accepts(left) and b.accepts(right)
    return b.accepts(right) and not a.accepts(left)


def _spell(
    came_from: dict[tuple[_States, _States], tuple[tuple[_States, _States], str] | None],
    pair: tuple[_States, _States],
) -> str:
    chars: list[str] = []
    step = came_from[pair]
    while step is not None:
        pair, char = step
        chars.append(char)
        step = came_from[pair]
    return "".join(reversed(chars))
