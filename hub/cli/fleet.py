"""What ``edge-hub fleet`` and ``edge-hub lineage show`` print, from the registry.

``fleet`` is one row per device: online, bundle version, expires in, gate state and last
signed status time (all from the device's signed status), when the hub last heard from it,
lineage size on the device / stored and acknowledged at the hub, fork flag, rejections.

"Last heard from" moves only on a fresh signed status (or a nonce-bound attestation), so a
replay cannot move it. A device not heard from for :data:`STALE_AFTER_S` is shown ``stale``,
never as the state its last status claimed: a device that lost power, or whose broker link
is gone, cannot say it went offline, and its retained "online yes" would otherwise stand.
Likewise a device whose last status said ``open`` under a bundle that has expired since is
shown ``bundle_expired``: its gate denies from that moment, whether or not it could say so.

``lineage show`` re-verifies a device's stored log from its first entry (chain, tree, and
the root of the last checkpoint the device signed) before it prints any of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import LineageError
from edge_agent.protocol.lineage_entries import GENESIS_PREV, ChainVerifier, Entry
from edge_agent.protocol.merkle import Frontier
from edge_agent.support.cli import format_duration
from edge_agent.trust.gate import GATE_OPEN
from hub.core import liveness
from hub.core.liveness import STALE_AFTER_S
from hub.registry import UNREGISTERED, FleetRow, Registry

__all__ = [
    "STALE_AFTER_S",
    "LineageView",
    "cut",
    "fleet_json",
    "fleet_lines",
    "gate_now",
    "is_stale",
    "lineage_view",
    "unregistered_counts",
]

_COLUMNS = (
    "DEVICE",
    "REGION",
    "ONLINE",
    "BUNDLE",
    "EXPIRES",
    "GATE",
    "LAST SEEN",
    "LINEAGE dev/hub",
    "FORK",
    "REJECTED",
)
_DROPPED_FIRST = ("REGION", "LINEAGE dev/hub", "EXPIRES")
"""Columns left out, in this order, while the table is wider than the terminal (``--json``
and a wider terminal have them all); then the last column is cut with an ellipsis."""
MIN_CUT = 8
"""A cut cell keeps at least this many characters."""
MIN_LAST = 12
"""Columns are left out only while the last one would be narrower than this."""


def is_stale(row: FleetRow, now: int, stale_after_s: int = STALE_AFTER_S) -> bool:
    """Whether ``row``'s device has sent no fresh signed status for ``stale_after_s``."""
    return liveness.is_stale(row.last_seen, now, stale_after_s)


def fleet_json(
    rows: list[FleetRow],
    unregistered: dict[str, int],
    now: int,
    stale_after_s: int = STALE_AFTER_S,
) -> dict[str, object]:
    """The fleet as JSON: ``online`` is true only for a device not ``stale``, ``gate`` is
    ``bundle_expired`` once the bundle its status named has expired; ``reported_online``
    and ``reported_gate`` are what its last signed status said."""
    return {
        "time": now,
        "devices": [
            {
                "device": r.device_id,
                "region": r.region,
                "groups": list(r.groups),
                "online": None if r.online is None else r.online and not stale,
                "reported_online": r.online,
                "stale": stale,
                "bundle_version": r.bundle_version,
                "expires_at": r.expires_at,
                "expires_in": None if r.expires_at is None else r.expires_at - now,
                "gate": gate_now(r, now),
                "reported_gate": r.gate,
                "status_time": r.status_time,
                "last_seen": r.last_seen,
                "lineage_device": r.device_lineage_size,
                "lineage_acked": r.lineage_size,
                "fork": r.forks > 0,
                "fork_evidence": r.forks,
                "rejections": r.rejections,
            }
            for r, stale in ((r, is_stale(r, now, stale_after_s)) for r in rows)
        ],
        "unregistered_rejections": unregistered,
    }


def fleet_lines(
    rows: list[FleetRow],
    unregistered: dict[str, int],
    now: int,
    stale_after_s: int = STALE_AFTER_S,
    *,
    width: int = 200,
) -> list[str]:
    """The fleet table, fitted to ``width`` columns: a device not heard from for
    ``stale_after_s`` reads ``stale`` (whatever its last status claimed), and ``LAST SEEN``
    says how long ago it was heard from."""
    table = [dict(zip(_COLUMNS, _cells(r, now, stale_after_s), strict=True)) for r in rows]
    lines = _fit(table, width)
    if unregistered:
        counts = ", ".join(f"{code} {n}" for code, n in sorted(unregistered.items()))
        lines.append(f"messages naming no registered device: {counts}")
    return lines


def _cells(r: FleetRow, now: int, stale_after_s: int) -> list[str]:
    online = "-" if r.online is None else ("yes" if r.online else "no")
    if r.online and is_stale(r, now, stale_after_s):
        online = "stale"
    seen = "never" if r.last_seen is None else f"{format_duration(now - r.last_seen)} ago"
    device_size = "?" if r.device_lineage_size is None else str(r.device_lineage_size)
    return [
        r.device_id,
        r.region,
        online,
        "-" if r.bundle_version is None else f"v{r.bundle_version}",
        "-" if r.expires_at is None else _expires(r.expires_at - now),
        gate_now(r, now) or "-",
        seen,
        f"{device_size}/{r.lineage_size}",
        "FORK" if r.forks else "-",
        ", ".join(f"{code} {n}" for code, n in sorted(r.rejections.items())) or "-",
    ]


def gate_now(row: FleetRow, now: int) -> str | None:
    """The gate ``row``'s device is in at ``now``: its reported gate, except that an
    ``open`` gate under a bundle past its expiry is ``bundle_expired`` (the device denies
    from that second, reachable or not)."""
    if row.gate == GATE_OPEN and row.expires_at is not None and row.expires_at <= now:
        return "bundle_expired"
    return row.gate


def _fit(table: list[dict[str, str]], width: int) -> list[str]:
    """Header and rows, each column as wide as its widest cell, narrowed to ``width``."""
    columns = list(_COLUMNS)
    widths = {c: max([len(c)] + [len(row[c]) for row in table]) for c in columns}

    last = columns[-1]

    def total(last_width: int) -> int:
        others = sum(widths[c] for c in columns if c != last)
        return others + last_width + len(columns) - 1

    for name in _DROPPED_FIRST:
        if total(min(widths[last], MIN_LAST)) <= width:
            break
        columns.remove(name)
    widths[last] = max(MIN_CUT, widths[last] - max(0, total(widths[last]) - width))
    header = {c: c for c in columns}
    return [
        _line([cut(line[c], widths[c]) for c in columns], columns, widths)
        for line in [header, *table]
    ]


def _line(cells: list[str], columns: list[str], widths: dict[str, int]) -> str:
    return " ".join(cell.ljust(widths[c]) for cell, c in zip(cells, columns, strict=True)).rstrip()


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, an ellipsis ending one that was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _expires(seconds: int) -> str:
    return "expired" if seconds <= 0 else format_duration(seconds)


def unregistered_counts(registry: Registry) -> dict[str, int]:
    """Rejections of messages that named no registered device, per code."""
    return {total.code: total.count for total in registry.rejections(UNREGISTERED)}


@dataclass(frozen=True, slots=True)
class LineageView:
    """A device's stored log, verified: its size, root and the last ``limit`` entries."""

    device: str
    size: int
    root: bytes
    checkpoint: str | None
    entries: tuple[Entry, ...]


def lineage_view(registry: Registry, device: str, limit: int) -> LineageView:
    """Verify ``device``'s stored log from entry 0 and keep its last ``limit`` entries.

    Steps: 1. every stored entry decodes strictly, has the next seq and links to the one
    before; 2. the recomputed tree has the stored size and root; 3. that root is the one the
    device signed in its last checkpoint (verified when the batch was stored).

    Raises:
        LineageError: the stored log does not verify (names the first bad seq).
        RegistryError: unreadable.
    """
    state = registry.lineage_state(device)
    verifier = ChainVerifier(Frontier(), GENESIS_PREV)
    tail: list[Entry] = []
    for stored in registry.iter_entries(device):
        entry = verifier.feed(stored.seq, stored.data)
        tail.append(entry)
        if len(tail) > limit:
            del tail[0]
    if verifier.size != state.size or verifier.frontier.root() != state.root:
        raise LineageError(
            f"the hub's copy of {device}'s log does not match its recorded tree "
            f"(size {verifier.size}, recorded {state.size})"
        )
    signed = registry.checkpoint_root(device, state.size)
    if state.size and signed != state.root:
        raise LineageError(f"the hub holds no signed checkpoint of {device} at size {state.size}")
    return LineageView(device, state.size, state.root, state.checkpoint, tuple(tail))
