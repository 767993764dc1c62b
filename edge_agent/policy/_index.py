"""Resource index: which rules can match a resource string, found without scanning rules.

Rules are stored as *codes*: a deny rule's code is its index, an allow rule's code is the
rule count plus its index. The smallest code among the rules that hold is therefore the
decision (any deny beats every allow; within an effect the lowest index wins), and every
bucket is a tuple of codes in ascending order, so a decision stops at the first code of a
bucket whose condition holds.

A :class:`ResourceIndex` holds the codes of one (action, principal) pair. Every pattern is
split into its literal prefix (the whole segments before the first segment holding ``*`` or
``?``; all of it for a pattern without wildcards) and a tail matcher, and filed under its
prefix text. A decision cuts from the resource one key for each prefix length the policy
uses, plus the whole resource, and runs the tail matcher only for the patterns filed under
those keys. So the cost of a decision depends on the resource's shape and on how many
patterns share its prefixes, not on how many rules the policy has.

Tail matching is a small NFA over segments (``**`` = stay or advance, ``*`` = any one
segment, segment globs, literals): linear in resource segments times tail segments, with no
backtracking whatever the patterns; the common tails (``**`` alone, tails without ``**``)
take a shortcut.

Invariants: :func:`build_index` builds every index in one pass; nothing is mutated after it
returns. Tail matchers are built once per distinct tail and shared by every pattern, rule and
index that uses them. Matching is pure and does not depend on hash seeds or dict order
(results are codes, compared by value).
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_agent.policy._checks import GLOBSTAR

__all__ = [
    "Codes",
    "Entries",
    "FiledPattern",
    "IndexTable",
    "ResourceIndex",
    "SegmentGlob",
    "Tail",
    "build_index",
    "prepare_pattern",
]


class SegmentGlob:
    """A one-segment pattern with ``*`` (zero or more characters) and ``?`` (exactly one).

    Matching is greedy-leftmost over the pieces between stars, which is exact for this
    grammar and runs in time linear in pattern length times segment length (no backtracking).
    """

    __slots__ = ("_first", "_last", "_middle", "_min_len", "_pieces", "_plain")

    def __init__(self, segment: str) -> None:
        self._pieces = tuple(segment.split("*"))
        self._min_len = sum(len(piece) for piece in self._pieces)
        self._first = self._pieces[0]
        self._last = self._pieces[-1]
        self._middle = self._pieces[1:-1]
        self._plain = "?" not in segment and len(self._pieces) > 1
        """No ``?`` and at least one ``*``: the ends are plain prefix and suffix tests."""

    def matches(self, text: str) -> bool:
        """Whether the whole of ``text`` (one segment, no ``/``) matches this glob."""
        if self._plain:
            if (
                len(text) < self._min_len
                or not text.startswith(self._first)
                or not text.endswith(self._last)
            ):
                return False
            if not self._middle:
                return True
        return self._match_pieces(text)

    def _match_pieces(self, text: str) -> bool:
        pieces = self._pieces
        first = self._first
        if len(pieces) == 1:
            return len(text) == len(first) and _piece_at(text, 0, first)
        if len(text) < self._min_len or not _piece_at(text, 0, first):
            return False
        last = self._last
        end = len(text) - len(last)
        if not _piece_at(text, end, last):
            return False
        pos = len(first)
        for piece in self._middle:
            found = _find_piece(text, piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True


def _piece_at(text: str, pos: int, piece: str) -> bool:
    if "?" not in piece:
        return text.startswith(piece, pos)
    if pos + len(piece) > len(text):
        return False
    return all(p == "?" or p == text[pos + k] for k, p in enumerate(piece))


def _find_piece(text: str, piece: str, start: int, stop: int) -> int:
    if "?" not in piece:
        return text.find(piece, start, stop)
    for pos in range(start, stop - len(piece) + 1):
        if _piece_at(text, pos, piece):
            return pos
    return -1


_DSTAR = 0
_STAR = 1
_GLOB = 2
_LITERAL = 3

_ANYTHING = 0
_FIXED = 1
_GENERAL = 2


class Tail:
    """The wildcard tail of a pattern, matched against the resource segments after its prefix.

    ``**`` alone matches anything (``anything`` is true, so a decision skips the call); a
    tail without ``**`` matches exactly as many segments as it has, each tested in turn; any
    other runs the segment NFA.
    """

    __slots__ = ("_elements", "_fixed", "_shape", "anything")

    def __init__(self, segments: tuple[str, ...]) -> None:
        collapsed: list[str] = []
        for segment in segments:
            if not (segment == GLOBSTAR and collapsed and collapsed[-1] == GLOBSTAR):
                collapsed.append(segment)
        self._elements = tuple(_element(segment) for segment in collapsed)
        self._fixed: tuple[SegmentGlob | str | None, ...] = ()
        if collapsed == [GLOBSTAR]:
            self._shape = _ANYTHING
        elif GLOBSTAR in collapsed:
            self._shape = _GENERAL
        else:
            self._shape = _FIXED
            self._fixed = tuple(None if kind == _STAR else test for kind, test in self._elements)
        self.anything = self._shape == _ANYTHING
        """True for ``**``: every resource under the prefix matches, no test needed."""

    def matches(self, segments: list[str], start: int) -> bool:
        """Whether ``segments[start:]`` matches this tail."""
        shape = self._shape
        if shape == _ANYTHING:
            return True
        if shape == _GENERAL:
            return self._run(segments, start)
        if len(segments) - start != len(self._fixed):
            return False
        for position, test in enumerate(self._fixed, start):
            if test is None:
                continue
            if isinstance(test, str):
                if test != segments[position]:
                    return False
            elif not test.matches(segments[position]):
                return False
        return True

    def _run(self, segments: list[str], start: int) -> bool:
        elements = self._elements
        final = len(elements)
        states = self._closure({0})
        for position in range(start, len(segments)):
            segment = segments[position]
            advanced: set[int] = set()
            for state in states:
                if state == final:
                    continue
                kind, test = elements[state]
                if kind == _DSTAR:
                    advanced.add(state)
                elif (
                    kind == _STAR
                    or (kind == _LITERAL and test == segment)
                    or (kind == _GLOB and isinstance(test, SegmentGlob) and test.matches(segment))
                ):
                    advanced.add(state + 1)
            if not advanced:
                return False
            states = self._closure(advanced)
        return final in states

    def _closure(self, states: set[int]) -> set[int]:
        elements = self._elements
        pending = list(states)
        while pending:
            state = pending.pop()
            if state < len(elements) and elements[state][0] == _DSTAR and state + 1 not in states:
                states.add(state + 1)
                pending.append(state + 1)
        return states


def _element(segment: str) -> tuple[int, SegmentGlob | str]:
    if segment == GLOBSTAR:
        return _DSTAR, segment
    if segment == "*":
        return _STAR, segment
    if "*" in segment or "?" in segment:
        return _GLOB, SegmentGlob(segment)
    return _LITERAL, segment


FiledPattern = tuple[int, str, Tail]
"""A resource pattern as the index files it: (prefix segment count, prefix text, tail)."""


def prepare_pattern(
    text: str, segments: tuple[str, ...], tails: dict[tuple[str, ...], Tail]
) -> FiledPattern:
    """Split a checked pattern (``segments`` is its ``/`` split) into its literal prefix,
    the whole segments before the first one holding ``*`` or ``?``, and its tail matcher.

    A pattern without wildcards is all prefix, with the empty tail (which matches only the
    end of the resource). ``tails`` caches tail matchers across patterns (they are
    immutable), so a policy that repeats a tail such as ``/**`` builds it once; the index
    tells two patterns under one prefix apart by their tail's identity.
    """
    star, question = text.find("*"), text.find("?")
    if star < 0 and question < 0:
        length, prefix = len(segments), text
    else:
        first = question if star < 0 else star if question < 0 else min(star, question)
        cut = text.rfind("/", 0, first)
        length, prefix = (0, "") if cut < 0 else (text.count("/", 0, cut) + 1, text[:cut])
    rest = segments[length:]
    tail = tails.get(rest)
    if tail is None:
        tail = tails[rest] = Tail(rest)
    return length, prefix, tail


Codes = tuple[int, ...]
"""Rule codes in ascending order."""

Entries = tuple[tuple[Tail, Codes], ...]
"""The patterns filed under one prefix: each distinct tail with its codes."""


class ResourceIndex:
    """The codes of one (action, principal) pair.

    ``by_prefix[prefix]`` holds the patterns whose literal prefix is one or more whole
    segments (a prefix of n segments holds n - 1 slashes, so the text alone tells prefixes of
    different lengths apart; a pattern without wildcards is filed under its whole text);
    ``root`` holds the patterns whose first segment is already a wildcard.
    """

    __slots__ = ("by_prefix", "root")

    def __init__(self) -> None:
        self.by_prefix: dict[str, Entries] = {}
        self.root: Entries = ()


IndexTable = dict[str, dict[str, ResourceIndex]]
"""action -> principal -> :class:`ResourceIndex`."""


def build_index(
    rules: Iterable[tuple[int, tuple[str, ...], tuple[str, ...], tuple[FiledPattern, ...]]],
) -> IndexTable:
    """File every (code, principals, actions, patterns) under each of its actions and
    principals, in one pass.

    ``rules`` must come in ascending code order with no list holding a value twice, so every
    bucket comes out ascending without sorting.
    """
    index: IndexTable = {}
    for code, principals, actions, patterns in rules:
        single = (code,)
        for action in actions:
            by_principal = index.get(action)
            if by_principal is None:
                by_principal = index[action] = {}
            for principal in principals:
                node = by_principal.get(principal)
                if node is None:
                    node = by_principal[principal] = ResourceIndex()
                by_prefix = node.by_prefix
                for length, prefix, tail in patterns:
                    if length == 0:
                        node.root = _filed(node.root, tail, single)
                        continue
                    entries = by_prefix.get(prefix)
                    if entries is None:
                        by_prefix[prefix] = ((tail, single),)
                    elif len(entries) == 1 and entries[0][0] is tail:
                        by_prefix[prefix] = ((tail, entries[0][1] + single),)
                    else:
                        by_prefix[prefix] = _filed(entries, tail, single)
    return index


def _filed(entries: Entries, tail: Tail, single: Codes) -> Entries:
    """``entries`` with ``single`` appended to the codes of ``tail`` (added if missing)."""
    for position, (known, codes) in enumerate(entries):
        if known is tail:
            return (*entries[:position], (tail, codes + single), *entries[position + 1 :])
    return (*entries, (tail, single))
