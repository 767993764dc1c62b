"""The hub's inventory: ``edge-hub device list|show|remove`` and ``edge-hub revoke list``,
with what each says about trust.

Removing a device is an inventory change, not a revocation. The device leaves the
registry: the next device directory of its region (signed by the hub, what agents verify
parent receipts against) no longer lists it, and the Mosquitto ACL written after it
(``edge-hub device acl``) no longer lets it in; the hub drops what it sends as naming no
registered device. Its live state goes (last status and last seen, status history,
attestation outcome, challenges, TPM attestation key). Its shipped lineage, fork evidence
and rejection counters stay as evidence: ``edge-hub lineage show ID`` still verifies and
prints them, and registering the id again continues that log. A removed device still decides
under the bundles it holds until they expire or it is revoked: ``edge-hub revoke --device
ID`` first when it must stop deciding.

``revoke list`` shows the revocation retained on each (region, kind, value): the newest
one issued, which every device of the region fetches when it connects.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from edge_agent.errors import ConfigError, EdgeGovError
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.support.cli import format_duration, utc_text, wall_clock
from hub.cli.attest import attestation_json
from hub.cli.fleet import fleet_json
from hub.cli.hub_dir import hub_dir_of
from hub.core.directory import DEFAULT_DIRECTORY_TTL_S
from hub.hubdir.layout import HubDir
from hub.registry import DeviceRecord, IssuedRevocation, Registry
from hub.service import governance

__all__ = [
    "cmd_device_list",
    "cmd_device_remove",
    "cmd_device_show",
    "cmd_revoke_list",
    "device_json",
    "issue_directory",
]


def device_json(record: DeviceRecord) -> dict[str, object]:
    """A registered device's registration, as every ``device`` command prints it."""
    return {
        "device": record.device_id,
        "region": record.region,
        "groups": list(record.groups),
        "profile": record.profile,
        "key_id": record.public_key.key_id.hex(),
        "key_epoch": record.key_epoch,
        "added_at": record.added_at,
    }


def cmd_device_list(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    now = wall_clock()
    with hub.open_registry(create=False) as registry:
        devices = registry.devices()
        states = _states(registry, now)
    if args.json:
        listed = [device_json(d) | states.get(d.device_id, {}) for d in devices]
        print(json.dumps({"time": now, "devices": listed}, sort_keys=True))
        return 0
    if not devices:
        print("no devices registered (edge-hub device add ...)")
        return 0
    print(_row("DEVICE", "REGION", "PROFILE", "KEY", "ADDED", "STATE", "GROUPS"))
    for d in devices:
        state = states.get(d.device_id, {})
        print(
            _row(
                d.device_id,
                d.region,
                d.profile,
                d.public_key.key_id.hex()[:16],
                utc_text(d.added_at, "%Y-%m-%d"),
                _state_text(state, now),
                ",".join(d.groups) or "-",
            )
        )
    return 0


def _row(*cells: str) -> str:
    widths = (16, 8, 16, 16, 10, 16, 0)
    return " ".join(c.ljust(w) if w else c for c, w in zip(cells, widths, strict=True)).rstrip()


def _fleet_rows(registry: Registry, now: int) -> dict[str, dict[str, object]]:
    """Each registered device's row as ``edge-hub fleet --json`` states it, by id."""
    devices = fleet_json(registry.fleet(), {}, now)["devices"]
    assert isinstance(devices, list)
    return {d["device"]: d for d in devices}


def _states(registry: Registry, now: int) -> dict[str, dict[str, object]]:
    """Each registered device's liveness, by id."""
    return {
        device: {k: row[k] for k in ("online", "stale", "last_seen", "gate")}
        for device, row in _fleet_rows(registry, now).items()
    }


def _state_text(state: dict[str, object], now: int) -> str:
    seen = state.get("last_seen")
    if not isinstance(seen, int):
        return "never seen"
    ago = f"{format_duration(now - seen)} ago"
    if state.get("stale"):
        return f"stale {ago}"
    return f"{'online' if state.get('online') else 'offline'} {ago}"


def cmd_device_show(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    now = wall_clock()
    with hub.open_registry(create=False) as registry:
        shown = _shown(registry, args.device_id, now)
    if args.json:
        print(json.dumps(shown.as_json(), sort_keys=True))
        return 0
    for line in shown.lines(now):
        print(line)
    return 0


@dataclass(frozen=True, slots=True)
class _Shown:
    """Everything the hub holds of one registered device."""

    record: DeviceRecord
    fleet: dict[str, object]
    attestation: dict[str, object] | None
    tpm_ak: bool
    checkpoint: str | None
    revocations: tuple[IssuedRevocation, ...]

    def as_json(self) -> dict[str, object]:
        return (
            device_json(self.record)
            | {"public_key": self.record.public_key.to_pem()}
            | {k: v for k, v in self.fleet.items() if k not in ("device", "region", "groups")}
            | {
                "attestation": self.attestation,
                "tpm_ak": self.tpm_ak,
                "checkpoint": self.checkpoint,
                "revocations": [_revocation_json(r) for r in self.revocations],
            }
        )

    def lines(self, now: int) -> list[str]:
        r, f = self.record, self.fleet
        version = f.get("bundle_version")
        expires = f.get("expires_in")
        lines = [
            f"device       {r.device_id}",
            f"region       {r.region}",
            f"groups       {', '.join(r.groups) or '(none)'}",
            f"profile      {r.profile}",
            f"key          {r.public_key.key_id.hex()} (epoch {r.key_epoch})",
            f"added        {utc_text(r.added_at, '%Y-%m-%dT%H:%M:%SZ')}",
            f"state        {_state_text(f, now)}",
            f"gate         {f.get('gate') or '-'} (as its last signed status said)",
            f"bundle       {'-' if version is None else f'v{version}'}"
            + ("" if not isinstance(expires, int) else f", {_expiry(expires)}"),
            f"lineage      {_known(f.get('lineage_device'))} on the device, "
            f"{f.get('lineage_acked')} stored at the hub",
            f"forks        {f.get('fork_evidence')}",
            f"rejections   {_counts(f.get('rejections'))}",
            f"attestation  {_attestation_text(self.attestation)}",
            f"tpm key      {'registered' if self.tpm_ak else 'none'}",
        ]
        lines.append(f"revocations  {len(self.revocations) or 'none'}")
        lines += [f"  {_revocation_line(v)}" for v in self.revocations]
        return lines


def _expiry(seconds_left: int) -> str:
    if seconds_left > 0:
        return f"expires in {format_duration(seconds_left)}"
    return f"expired {format_duration(-seconds_left)} ago"


def _known(value: object) -> str:
    return "?" if value is None else str(value)


def _counts(value: object) -> str:
    if not isinstance(value, dict) or not value:
        return "none"
    return ", ".join(f"{code} {n}" for code, n in sorted(value.items()))


def _attestation_text(value: dict[str, object] | None) -> str:
    if value is None:
        return "never attested"
    return f"{value['state']} ({value['detail']})"


def _shown(registry: Registry, device_id: str, now: int) -> _Shown:
    record = _registered(registry, device_id)
    row = _fleet_rows(registry, now).get(device_id)
    if row is None:
        raise ConfigError(f"device {device_id!r} was removed meanwhile by another command")
    revocations = tuple(r for r in registry.current_revocations() if _names(r, record))
    return _Shown(
        record,
        row,
        attestation_json(registry.attestation(device_id), now),
        registry.tpm_ak(device_id) is not None,
        registry.lineage_state(device_id).checkpoint,
        revocations,
    )


def _names(revocation: IssuedRevocation, record: DeviceRecord) -> bool:
    """Whether ``revocation`` names ``record``'s device (itself, a group of it, its region)."""
    if revocation.region != record.region:
        return False
    kind = revocation.kind
    return (
        (kind == RevocationKind.DEVICE and revocation.value == record.device_id)
        or (kind == RevocationKind.GROUP and revocation.value in record.groups)
        or kind == RevocationKind.REGION
    )


def _registered(registry: Registry, device_id: str) -> DeviceRecord:
    record = registry.device(device_id)
    if record is None:
        raise ConfigError(
            f"device {device_id!r} is not registered (edge-hub device list shows those that are)"
        )
    return record


def cmd_device_remove(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    with hub.open_registry(create=False) as registry:
        _registered(registry, args.device_id)
        record = registry.remove_device(args.device_id)
        if record is None:
            raise ConfigError(f"device {args.device_id!r} was removed meanwhile by another command")
        directory = issue_directory(hub, registry, record.region)
        entries = registry.lineage_state(record.device_id).size
    device = record.device_id
    if args.json:
        outcome = {
            "removed": True,
            "revoked": False,
            "note": f"the device keeps deciding under its bundles until revoked: "
            f"'edge-hub revoke --device {device} --force'",
            "lineage_entries_kept": entries,
            "directory": directory,
        }
        print(json.dumps(device_json(record) | outcome, sort_keys=True))
        return 0
    print(
        f"device {device} removed: it leaves the registry and {record.region}'s device "
        f"directory ({directory})"
    )
    print(
        f"kept as evidence: its lineage ({entries} entries; edge-hub lineage show {device}), "
        "fork evidence and rejection counters"
    )
    print(
        "not revoked: it still decides under the bundles it holds; run "
        f"'edge-hub revoke --device {device} --force' to deny everything on it, and "
        "'edge-hub device acl' to keep it off a Mosquitto broker"
    )
    return 0


def issue_directory(hub: HubDir, registry: Registry, region: str) -> str:
    """Issue ``region``'s next device directory into the registry now (the running hub
    publishes it on its next round), as ``device add`` and ``device remove`` do; say what
    happened."""
    try:
        witness = hub.load_keys().witness
    except EdgeGovError:
        witness = None
    if witness is None:
        return "the running hub issues the region's device directory (no verifier key here)"
    held = governance.issue_region_directory(
        registry, witness, region=region, now=wall_clock(), ttl_s=DEFAULT_DIRECTORY_TTL_S
    )
    version = "?" if held is None else held.version
    return f"device directory of {region} at version {version} (the running hub publishes it)"


def cmd_revoke_list(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    now = wall_clock()
    with hub.open_registry(create=False) as registry:
        issued = [
            r
            for r in registry.current_revocations()
            if args.region is None or r.region == args.region
        ]
    if args.json:
        print(
            json.dumps(
                {"time": now, "revocations": [_revocation_json(r) for r in issued]},
                sort_keys=True,
            )
        )
        return 0
    if not issued:
        print("no revocations issued" + ("" if args.region is None else f" in {args.region}"))
        return 0
    print(f"{'REGION':<8} {'EPOCH':>5} {'KIND':<7} {'VALUE':<20} {'ISSUED':<20} REASON")
    for r in issued:
        when = utc_text(r.issued_at, "%Y-%m-%dT%H:%M:%SZ")
        print(f"{r.region:<8} {r.epoch:>5} {r.kind:<7} {r.value:<20} {when:<20} {r.reason or '-'}")
    return 0


def _revocation_json(revocation: IssuedRevocation) -> dict[str, object]:
    return {
        "region": revocation.region,
        "epoch": revocation.epoch,
        "kind": revocation.kind,
        "value": revocation.value,
        "reason": revocation.reason,
        "issued_at": revocation.issued_at,
    }


def _revocation_line(revocation: IssuedRevocation) -> str:
    when = utc_text(revocation.issued_at, "%Y-%m-%dT%H:%M:%SZ")
    reason = f": {revocation.reason}" if revocation.reason else ""
    return f"epoch {revocation.epoch} {revocation.kind} {revocation.value} ({when}){reason}"
