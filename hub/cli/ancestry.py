"""``edge-hub lineage ancestry DEVICE SEQ [--json] [--export chain.cbor]``: a decision's chain
of parents across devices, each link checked in the logs the hub holds.

The walk is :func:`hub.core.ancestry.walk_ancestry`: every link stored, the leaf its child
cited, proven in a checkpoint the hub's witness cosigned, and each decision that cited a
parent checked against the parent entry itself and re-decided under the bundle it names
(from the registry, verified under the hub's trust root) with the parent's verified facts; a
parent not shipped yet is shown as such (not an error). ``--export`` writes the chain file
``edge-verify chain`` checks offline (:mod:`edge_agent.protocol.chain`): the decision it was
exported for, the signed device directory version its children recorded (the region's
current one for a decision without a parent) and one receipt per link, signed by the hub's
witness key (:func:`hub.core.receipts.hub_receipt`, as ``edge-hub lineage receipt``); the
file is verified against the hub's trust root before it is written, and only a chain proven
to its root is exported. ``--export`` writes a new
file, or replaces a regular one only with ``--force`` (:func:`edge_agent.support.cli.write_out`:
a device, FIFO, symlink or directory at the path is never replaced).

Exit codes: 0 when no link failed (a chain still waiting for a parent's log included), 1 when
a link failed (named) or an export was refused, 2 for an unknown device or entry, a SEQ that
is not a number, or an export path refused. With ``--json`` every outcome is one JSON object
on stdout, errors included: the walk (when there was one) with ``ok`` and ``error`` (``null``,
or its ``code`` and ``message``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge_agent.errors import BundleError, ChainError, ConfigError, EdgeGovError, LineageError
from edge_agent.policy.bundle import compile_bundle_policy
from edge_agent.policy.compiler import CompiledPolicy
from edge_agent.protocol.bundle import claimed_region, verify_bundle
from edge_agent.protocol.chain import MAX_CHAIN_LINKS, encode_chain, verify_chain
from edge_agent.protocol.lineage_entries import Entry
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.cli import counter_arg, utc_text, wall_clock
from hub.cli.hub_dir import hub_dir_of
from hub.cli.out import write_hub_out
from hub.core.ancestry import Ancestry, Link, PolicyOf, walk_ancestry
from hub.core.directory import DEFAULT_DIRECTORY_TTL_S
from hub.core.receipts import hub_receipt
from hub.hubdir.layout import HubKeys
from hub.registry import Registry
from hub.service.publish import issue_directories

__all__ = ["ancestry_json", "cmd_ancestry", "export_chain", "policies"]


def export_chain(
    registry: Registry, keys: HubKeys, walked: Ancestry, *, now: int
) -> tuple[bytes, int]:
    """The chain file of ``walked`` and the directory version it carries: the version every
    child of the chain recorded verifying its parent with (the region's current directory,
    a new version issued first if one is due, for a chain of one link) and each link's
    receipt signed by the hub's witness key, verified against the hub's root before it is
    returned.

    Raises:
        LineageError: the chain is not proven to its root, its children recorded different
            directory versions (a chain file carries one), or the hub holds no verifier key.
        ConfigError, RegistryError: as :func:`hub.core.receipts.hub_receipt`.
    """
    witness = keys.witness
    if witness is None:
        raise LineageError(
            "the hub holds no verifier key of its trust root: it signs the directory and the "
            "links' receipts with it"
        )
    if not walked.verified:
        last = walked.links[-1]
        raise LineageError(
            f"only a chain proven to its root is exported; {last.device} {last.seq}: "
            f"{last.status}: {walked.end}"
        )
    device = registry.device(walked.links[0].device)
    if device is None:
        raise ConfigError(f"device {walked.links[0].device!r} is not registered")
    issue_directories(registry, key=witness, now=now, ttl_s=DEFAULT_DIRECTORY_TTL_S)
    directory = _cited_directory(registry, device.region, walked)
    witnesses = tuple(keys.root.role(Role.VERIFIER).keys.values())
    receipts = [
        hub_receipt(registry, link.device, link.seq, witness=witness, witnesses=witnesses, now=now)[
            0
        ]
        for link in walked.links
    ]
    child = (walked.links[0].device, walked.links[0].seq)
    data = encode_chain(child, directory[1], receipts)
    try:
        verify_chain(data, root=keys.root, child=child)
    except ChainError as exc:
        raise LineageError(
            f"the chain does not verify under the hub's own trust root (link {exc.link}, step "
            f"'{exc.step}'): {exc}"
        ) from exc
    return data, directory[0]


def _cited_directory(registry: Registry, region: str, walked: Ancestry) -> tuple[int, bytes]:
    """(version, signed bytes) of the directory the chain's children recorded, or the
    region's current one for a chain of one link."""
    cited = {
        link.entry.request.parent.directory_version
        for link in walked.links
        if link.entry is not None
        and link.entry.request is not None
        and link.entry.request.parent is not None
        and link.entry.request.parent.facts is not None
    }
    if not cited:
        current = registry.directory(region)
        if current is None:
            raise LineageError(f"the hub holds no device directory of {region}")
        return current.version, current.data
    version = next(iter(cited))
    if len(cited) > 1 or version is None:
        shown = ", ".join(str(v) for v in sorted(cited, key=lambda v: -1 if v is None else v))
        raise LineageError(
            f"the chain's links verified their parents under directory versions {shown}; a "
            "chain file carries one, so this chain cannot be exported"
        )
    data = registry.directory_version(region, version)
    if data is None:
        raise LineageError(
            f"the hub no longer holds directory version {version} of {region} the chain's "
            "children recorded (kept since this hub stores every version it issues)"
        )
    return version, data


def policies(registry: Registry, root: TrustRoot) -> PolicyOf:
    """The compiled policy of each bundle the registry holds, by digest, verified under
    ``root`` for the region it targets (no expiry: it is history), compiled once each."""
    compiled: dict[bytes, CompiledPolicy | None] = {}

    def compile_held(digest: bytes) -> CompiledPolicy | None:
        data = registry.bundle_data(digest)
        if data is None:
            return None
        try:
            bundle = verify_bundle(data, root=root, region=claimed_region(data))
            return compile_bundle_policy(bundle).policy
        except BundleError:
            return None

    def policy_of(digest: bytes) -> CompiledPolicy | None:
        if digest not in compiled:
            compiled[digest] = compile_held(digest)
        return compiled[digest]

    return policy_of


def ancestry_json(walked: Ancestry) -> dict[str, Any]:
    """``walked`` as the JSON ``--json`` prints."""
    first = walked.links[0]
    return {
        "device": first.device,
        "seq": first.seq,
        "verified": walked.verified,
        "failed": None if walked.failed is None else walked.links.index(walked.failed),
        "end": walked.end,
        "links": [_link_json(link) for link in walked.links],
    }


def _link_json(link: Link) -> dict[str, Any]:
    parent = link.parent
    return {
        "device": link.device,
        "seq": link.seq,
        "status": str(link.status),
        "detail": link.detail,
        "policy": link.policy or None,
        "leaf_hash": None if link.leaf is None else link.leaf.hex(),
        "entry": None if link.entry is None else _entry_json(link.entry),
        "parent": None
        if parent is None
        else {
            "device": parent.device,
            "seq": parent.seq,
            "leaf_hash": parent.leaf_hash.hex(),
            "depth": parent.depth,
        },
    }


def _entry_json(entry: Entry) -> dict[str, Any]:
    request = entry.request
    return {
        "time": entry.time,
        "kind": str(entry.kind),
        "allowed": entry.allowed,
        "reason": entry.reason,
        "rule": entry.rule,
        "subject": None if request is None else request.subject,
        "action": None if request is None else request.action,
        "resource": None if request is None else request.resource,
    }


def _link_lines(index: int, link: Link) -> list[str]:
    head = f"  [{index}] {link.device} {link.seq}: {link.status}"
    entry = link.entry
    if entry is None:
        return [head, f"      {link.detail}"]
    request = entry.request
    what = (
        entry.reason
        if request is None
        else (f"{request.subject} {request.action} {request.resource}")
    )
    verdict = "allow" if entry.allowed else "deny"
    when = utc_text(entry.time, "%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"{head}: {verdict} {what} at {when} (rule {entry.rule or '-'}, {entry.reason})",
        f"      {link.detail}",
    ]
    if link.policy:
        lines.append(f"      {link.policy}")
    return lines


def cmd_ancestry(args: argparse.Namespace) -> int:
    """Walk, print and export; under ``--json`` an error after the walk is printed as JSON
    with the walk, and its exit code returned (as ``edge-hub`` would: 2 for a
    :class:`ConfigError`, else 1). An error before any walk (a bad argument, no hub
    directory) is ``edge-hub``'s to report, as for every command."""
    walked: list[Ancestry] = []
    try:
        code = _ancestry(args, walked)
    except EdgeGovError as exc:
        if not args.json or not walked:
            raise
        _print_json(walked, exc)
        return 2 if isinstance(exc, ConfigError) else 1
    if args.json:
        _print_json(walked, None)
    return code


def _ancestry(args: argparse.Namespace, walked: list[Ancestry]) -> int:
    """Walk the chain of ``args`` (appended to ``walked`` once walked), print it as text
    unless ``--json``, and export it when asked.

    Raises:
        ConfigError: SEQ is not a number, the device or entry is unknown, or the export
            path is refused.
        EdgeGovError: a link fails, or the export is refused.
    """
    try:
        seq = counter_arg(0)(args.seq)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"SEQ {args.seq!r}: {exc}") from exc
    hub = hub_dir_of(args)
    keys = hub.load_keys(args.keys)
    witnesses = tuple(keys.root.role(Role.VERIFIER).keys.values())
    with hub.open_registry(create=False) as registry:
        walk = walk_ancestry(
            registry,
            args.device_id,
            seq,
            witnesses=witnesses,
            policy_of=policies(registry, keys.root),
            max_links=MAX_CHAIN_LINKS,
        )
        walked.append(walk)
        if not args.json:
            _print_walk(args, walk)
        if walk.failed is not None:
            index = walk.links.index(walk.failed)
            raise LineageError(
                f"link {index} ({walk.failed.device} {walk.failed.seq}) fails: {walk.failed.detail}"
            )
        if args.export is None:
            return 0
        data, version = export_chain(registry, keys, walk, now=wall_clock())
    write_hub_out(
        args.export, data, hub_dir=args.hub_dir, force=args.force, mode=0o644, key_dirs=[args.keys]
    )
    message = (
        f"chain ({len(data)} bytes, directory version {version}) written to {args.export}: "
        f"check it with edge-verify chain {args.export} --root root.cbor"
    )
    print(message, file=sys.stderr if args.json else sys.stdout)
    return 0


def _print_json(walked: list[Ancestry], error: EdgeGovError | None) -> None:
    document: dict[str, Any] = ancestry_json(walked[0]) if walked else {}
    document["ok"] = error is None
    document["error"] = None if error is None else {"code": error.code, "message": error.message}
    print(json.dumps(document, indent=2))


def _print_walk(args: argparse.Namespace, walked: Ancestry) -> None:
    state = "verified to its root" if walked.verified else walked.end
    lines = [f"ancestry of {args.device_id} {args.seq}: {len(walked.links)} links, {state}"]
    for index, link in enumerate(walked.links):
        lines += _link_lines(index, link)
    print("\n".join(lines))
