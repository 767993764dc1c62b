"""Resource index: which rules can match a resource string, found without scanning rules.

A :class:`ResourceIndex` holds the rules of one (principal, action) pair. Patterns without
wildcards sit in a dict keyed by the exact resource. Every other pattern is split into its
literal prefix (the whole segments before the first segment holding ``*`` or ``?``) and a
wildcard suffix; it is filed under (prefix segment count, prefix text). A lookup probes, for
each prefix length the index holds, one dict key cut from the resource, and runs the suffix
matcher only for the patterns filed there. So the cost of a decision depends on the resource's
shape and on how many patterns share its prefixes, not on how many rules the policy has.

Suffix matching is a small NFA over segments (``**`` = stay or advance, ``*`` = any one
segment, segment globs, literals): linear in resource segments times suffix segments, with no
backtracking whatever the patterns.

Invariants: built once by the compiler, never mutated after :meth:`ResourceIndex.freeze`;
matching is pure and does not depend on hash seeds or dict order (results are rule indexes,
compared by value).
"""

from __future__ import annotations

from edge_agent.policy._checks import GLOBSTAR

__all__ = ["Bucket", "ResourceIndex", "SegmentGlob", "Suffix"]


class SegmentGlob:
    """A one-segment pattern with ``*`` (zero or more characters) and ``?`` (exactly one).

    Matching is greedy-leftmost over the pieces between stars, which is exact for this
    grammar and runs in time linear in pattern length times segment length (no backtracking).
    """

    __slots__ = ("_min_len", "_pieces")

    def __init__(self, segment: str) -> None:
        self._pieces = tuple(segment.split("*"))
        self._min_len = sum(len(piece) for piece in self._pieces)

    def matches(self, text: str) -> bool:
        """Whether the whole of ``text`` (one segment, no ``/``) matches this glob."""
        pieces = self._pieces
        first = pieces[0]
        if len(pieces) == 1:
            return len(text) == len(first) and _piece_at(text, 0, first)
        if len(text) < self._min_len or not _piece_at(text, 0, first):
            return False
        last = pieces[-1]
        end = len(text) - len(last)
        if not _piece_at(text, end, last):
            return False
        pos = len(first)
        for piece in pieces[1:-1]:
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


class Bucket:
    """The rules that end at one exact resource or trie node, split by effect, each list
    sorted ascending by rule index (the precedence order)."""

    __slots__ = ("allow", "deny")

    def __init__(self) -> None:
        self.allow: list[int] = []
        self.deny: list[int] = []

    def add(self, rule_index: int, deny: bool) -> None:
        (self.deny if deny else self.allow).append(rule_index)

    def freeze(self) -> None:
        if len(self.allow) > 1:
            self.allow = sorted(set(self.allow))
        if len(self.deny) > 1:
            self.deny = sorted(set(self.deny))


_DSTAR = 0
_STAR = 1
_GLOB = 2
_LITERAL = 3


class Suffix:
    """The wildcard tail of a pattern, matched against the resource segments after its prefix.

    The common tails get a constant-time test: ``**`` (anything), ``*`` (exactly one more
    segment), one segment glob; anything else runs the segment NFA.
    """

    __slots__ = ("_elements", "_shape")

    def __init__(self, segments: tuple[str, ...]) -> None:
        collapsed: list[str] = []
        for segment in segments:
            if not (segment == GLOBSTAR and collapsed and collapsed[-1] == GLOBSTAR):
                collapsed.append(segment)
        self._elements = tuple(_element(segment) for segment in collapsed)
        kinds = tuple(kind for kind, _ in self._elements)
        self._shape = kinds if kinds in ((_DSTAR,), (_STAR,), (_GLOB,)) else None

    def matches(self, segments: list[str], start: int) -> bool:
        shape = self._shape
        if shape is not None:
            kind = shape[0]
            if kind == _DSTAR:
                return True
            if len(segments) - start != 1:
                return False
            if kind == _STAR:
                return True
            glob = self._elements[0][1]
            assert isinstance(glob, SegmentGlob)
            return glob.matches(segments[start])
        return self._run(segments, start)

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


class ResourceIndex:
    """Exact resources in a dict; wildcard patterns filed by (prefix length, prefix text)."""

    __slots__ = ("_by_prefix", "_suffixes", "exact", "prefix_tables")

    def __init__(self) -> None:
        self.exact: dict[str, Bucket] = {}
        self.prefix_tables: tuple[tuple[int, dict[str, list[tuple[Suffix, Bucket]]]], ...] = ()
        self._by_prefix: dict[int, dict[str, list[tuple[Suffix, Bucket]]]] = {}
        self._suffixes: dict[tuple[int, str, tuple[str, ...]], Bucket] = {}

    def add(
        self,
        segments: tuple[str, ...],
        pattern: str,
        rule_index: int,
        deny: bool,
        shared: dict[tuple[str, ...], Suffix],
    ) -> None:
        """Index one resource pattern (already checked) for one rule.

        ``shared`` caches suffix matchers across indexes (they are immutable), so a policy
        that repeats a tail such as ``/**`` builds it once.
        """
        if "*" not in pattern and "?" not in pattern:
            bucket = self.exact.get(pattern)
            if bucket is None:
                bucket = self.exact[pattern] = Bucket()
            bucket.add(rule_index, deny)
            return
        length = next(i for i, seg in enumerate(segments) if "*" in seg or "?" in seg)
        prefix = "/".join(segments[:length])
        key = (length, prefix, segments[length:])
        bucket = self._suffixes.get(key)
        if bucket is None:
            bucket = self._suffixes[key] = Bucket()
            table = self._by_prefix.setdefault(length, {})
            tail = segments[length:]
            suffix = shared.get(tail)
            if suffix is None:
                suffix = shared[tail] = Suffix(tail)
            table.setdefault(prefix, []).append((suffix, bucket))
        bucket.add(rule_index, deny)

    def freeze(self) -> None:
        """Sort every bucket and fix the probe order; call once after the last add."""
        for bucket in self.exact.values():
            bucket.freeze()
        for bucket in self._suffixes.values():
            bucket.freeze()
        self.prefix_tables = tuple(sorted(self._by_prefix.items()))
        self._by_prefix = {}
        self._suffixes = {}

    def collect(self, resource: str, segments: list[str], out: list[Bucket]) -> None:
        """Append to ``out`` the bucket of every pattern that matches ``resource``.

        ``segments`` is ``resource.split("/")``, passed in so callers split once.
        """
        bucket = self.exact.get(resource)
        if bucket is not None:
            out.append(bucket)
        count = len(segments)
        for length, table in self.prefix_tables:
            if length > count:
                return
            entries = table.get("/".join(segments[:length]))
            if entries is None:
                continue
            for suffix, suffix_bucket in entries:
                if suffix.matches(segments, length):
                    out.append(suffix_bucket)
