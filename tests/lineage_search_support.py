"""Varied shipped lineage for the lineage search tests (registry contract and console):
decision entries whose verdict, reason, rule, subject, action, resource and bundle version
follow the seq, so every filter has matches and misses, stored through the hub's real
ingest (and, with a witness key, cosigned as the hub cosigns them).
"""

from __future__ import annotations

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import GENESIS_PREV, Entry, Kind, encode_entry, entry_hash
from edge_agent.protocol.request import Request
from hub.core.witness import witness_accepted
from hub.registry import Registry
from hub.registry.lineage_records import LineageHit
from hub.registry.records import Accepted
from tests.lineage_sim import NOW, DeviceLogSim, accepted_batch

SUBJECTS = ("svc:camera", "svc:backup", "user:ops")
ACTIONS = ("exec", "read")
RESOURCES = ("/opt/camera/bin/capture", "/opt/camera/etc/conf", "/var/backup/db", "/bin/sh")
DIGEST = bytes(range(32))


def expected_hit(device: str, seq: int, start_time: int = NOW, step: int = 10) -> LineageHit:
    """The search hit of the entry :func:`add_varied` writes at ``seq``."""
    allowed = seq % 4 != 3
    return LineageHit(
        device=device,
        seq=seq,
        time=start_time + step * seq,
        kind="decision",
        allowed=allowed,
        reason="allowed" if allowed else "policy_denied",
        rule=f"rule-{seq % 5}" if allowed else None,
        subject=SUBJECTS[seq % 3],
        action=ACTIONS[seq % 2],
        resource=RESOURCES[seq % 4],
        bundle_version=7 if seq < 30 else 8,
    )


def add_varied(
    sim: DeviceLogSim,
    count: int,
    *,
    start_time: int = NOW,
    step: int = 10,
    digest: bytes = DIGEST,
) -> None:
    """Append ``count`` chained decision entries to ``sim``, one every ``step`` seconds,
    made under the bundle ``digest`` (versions 7 then 8, as :func:`expected_hit`)."""
    for _ in range(count):
        seq = len(sim.entries)
        hit = expected_hit(sim.device_id, seq, start_time, step)
        entry = Entry(
            seq=seq,
            time=hit.time,
            prev=entry_hash(sim.entries[-1]) if sim.entries else GENESIS_PREV,
            kind=Kind.DECISION,
            allowed=hit.allowed,
            reason=hit.reason,
            rule=hit.rule,
            bundle_digest=digest,
            bundle_version=hit.bundle_version,
            request=Request(hit.subject or "", hit.action or "", hit.resource or ""),
        )
        sim.entries.append(encode_entry(entry))


def ship(
    registry: Registry,
    sim: DeviceLogSim,
    start: int,
    stop: int,
    *,
    witness: PrivateKey | None = None,
    now: int = NOW,
) -> Accepted:
    """Ingest and store ``sim``'s entries ``start`` to ``stop - 1`` as the hub does (cosigned
    by ``witness`` when given)."""
    accepted = accepted_batch(registry, sim, start, stop)
    if witness is not None:
        accepted = witness_accepted(accepted, witness, device_key=sim.key.public, now=now)
    assert registry.store_batch(accepted, expected_size=start, received_at=now)
    return accepted
