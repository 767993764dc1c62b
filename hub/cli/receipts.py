"""Portable proofs at the hub: ``edge-hub lineage receipt|checkpoint|consistency`` and
``edge-hub keys export witness``.

The hub holds every device's shipped log, the tree nodes proofs read (O(log n) registry
reads, :meth:`hub.registry.interface.Registry.tree_nodes`) and the checkpoints it cosigned
as the logs' witness. From these:

- ``lineage receipt DEVICE SEQ`` writes a receipt for entry ``SEQ`` (docs/receipts.md): the
  entry, its inclusion proof to the newest checkpoint covering it that carries the hub's
  cosignature, signed by the hub's witness key (COSE, RFC 9942) or as a C2SP tlog-proof;
  ``--include-bundle`` embeds the bundle the entry names, from the registry's bundles;
- ``lineage checkpoint DEVICE [--size N]`` writes the checkpoint note the hub holds there;
- ``lineage consistency DEVICE OLD NEW`` writes the RFC 9162 consistency proof between two
  tree sizes, in the ``edgegov/consistency-proof/v1`` text ``edge-verify`` reads;
- ``keys export witness`` writes the witness public key (the verifier role key the hub
  cosigns with) that auditors give ``edge-verify --witness-key``.

Every proof is verified against the roots the hub holds before it is written: the hub never
hands out a proof that does not hold. Receipts are built by :mod:`hub.core.receipts`, which
the console's decision page uses too. Unknown devices, entries or sizes not shipped are input
errors (exit 2); no cosigned checkpoint yet is a refusal (exit 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_agent.errors import ConfigError, LineageError
from edge_agent.protocol.consistency_file import format_consistency_proof
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.merkle import consistency_proof, root_at, verify_consistency
from edge_agent.protocol.roles import Role
from edge_agent.support.cli import utc_text, wall_clock
from hub.cli.hub_dir import hub_dir_of
from hub.cli.out import write_hub_out
from hub.core.receipts import hub_receipt, registered
from hub.hubdir.layout import HubDir
from hub.registry import Registry, RegistryError

__all__ = [
    "checkpoint_note",
    "cmd_checkpoint",
    "cmd_consistency",
    "cmd_export",
    "cmd_receipt",
    "consistency_text",
]


def checkpoint_note(registry: Registry, device_id: str, size: int | None = None) -> str:
    """The checkpoint note the hub holds for ``device_id`` at ``size`` (default: its latest).

    Raises:
        ConfigError: unknown device, nothing shipped, or no checkpoint held at ``size``.
    """
    registered(registry, device_id)
    latest = registry.lineage_state(device_id).size
    if not latest:
        raise ConfigError(f"no lineage of {device_id} has been shipped to this hub yet")
    held = registry.checkpoint(device_id, latest if size is None else size)
    if held is None or not held.note:
        raise ConfigError(
            f"the hub holds no checkpoint of {device_id} at size {size} (its latest is at "
            f"size {latest})"
        )
    return held.note


def consistency_text(registry: Registry, device_id: str, old: int, new: int) -> str:
    """The consistency proof of ``device_id``'s log from size ``old`` to ``new``, as the
    ``edgegov/consistency-proof/v1`` text, verified against the hub's roots at both sizes.

    Raises:
        ConfigError: unknown device, or not ``1 <= old <= new <= stored size``.
        RegistryError: the registry cannot be read, or its nodes do not prove it.
    """
    registered(registry, device_id)
    state = registry.lineage_state(device_id)
    if not 1 <= old <= new <= state.size:
        raise ConfigError(
            f"a consistency proof needs 1 <= OLD <= NEW <= {state.size} (the entries of "
            f"{device_id} the hub holds); got {old} and {new}"
        )
    nodes = registry.tree_nodes(device_id)
    proof = consistency_proof(old, new, nodes)
    roots = [_held_root(registry, device_id, size, root_at(size, nodes)) for size in (old, new)]
    try:
        verify_consistency(old, new, roots[0], roots[1], proof)
    except LineageError as exc:
        raise RegistryError(f"the hub's tree nodes of {device_id} are damaged: {exc}") from exc
    return format_consistency_proof(old=old, new=new, hashes=proof)


def _held_root(registry: Registry, device_id: str, size: int, computed: bytes) -> bytes:
    held = registry.checkpoint(device_id, size)
    if held is not None and held.root != computed:
        raise RegistryError(
            f"the hub's tree nodes of {device_id} give another root at size {size} than the "
            "checkpoint it holds there: the registry is damaged"
        )
    return computed


def _witness(hub: HubDir, keys_dir: Path | None) -> tuple[PrivateKey, tuple[PublicKey, ...]]:
    keys = hub.load_keys(keys_dir)
    if keys.witness is None:
        raise ConfigError(
            f"{keys_dir or hub.keys} holds no verifier key of trust root version "
            f"{keys.root.version}: the hub's witness key is that key"
        )
    return keys.witness, tuple(keys.root.role(Role.VERIFIER).keys.values())


def cmd_receipt(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    witness, witnesses = _witness(hub, args.keys)
    with hub.open_registry(create=False) as registry:
        data, held = hub_receipt(
            registry,
            args.device_id,
            args.seq,
            witness=witness,
            witnesses=witnesses,
            now=wall_clock(),
            fmt=args.format,
            include_bundle=args.include_bundle,
        )
    # A receipt holds the entry (subjects, resources): owner-only, as on the device.
    write_hub_out(args.out, data, hub_dir=args.hub_dir, force=args.force, key_dirs=[args.keys])
    when = utc_text(held.cosignature.time, "%Y-%m-%dT%H:%M:%SZ")
    if args.json:
        report = {
            "out": str(args.out),
            "format": args.format,
            "bytes": len(data),
            "device": args.device_id,
            "seq": args.seq,
            "tree_size": held.stored.size,
            "cosigned_at": held.cosignature.time,
        }
        print(json.dumps(report, sort_keys=True))
        return 0
    print(
        f"receipt ({args.format}, {len(data)} bytes) for entry {args.seq} of {args.device_id} "
        f"written to {args.out}: tree size {held.stored.size}, cosigned by the hub at {when}"
    )
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    with hub.open_registry(create=False) as registry:
        note = checkpoint_note(registry, args.device_id, args.size)
    write_hub_out(
        args.out, note.encode("utf-8"), hub_dir=args.hub_dir, force=args.force, mode=0o644
    )
    if args.json:
        print(json.dumps({"out": str(args.out), "device": args.device_id}, sort_keys=True))
        return 0
    print(f"checkpoint of {args.device_id} written to {args.out}")
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    with hub.open_registry(create=False) as registry:
        text = consistency_text(registry, args.device_id, args.old, args.new)
    write_hub_out(
        args.out, text.encode("ascii"), hub_dir=args.hub_dir, force=args.force, mode=0o644
    )
    if args.json:
        report = {"out": str(args.out), "device": args.device_id, "old": args.old, "new": args.new}
        print(json.dumps(report, sort_keys=True))
        return 0
    print(
        f"consistency proof of {args.device_id} from size {args.old} to {args.new} written to "
        f"{args.out}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    witness, _ = _witness(hub_dir_of(args), args.keys)
    pem = witness.public.to_pem().encode("ascii")
    write_hub_out(
        args.out, pem, hub_dir=args.hub_dir, force=args.force, mode=0o644, key_dirs=[args.keys]
    )
    if args.json:
        report = {"out": str(args.out), "key_id": witness.public.key_id.hex(), "role": "verifier"}
        print(json.dumps(report, sort_keys=True))
        return 0
    print(
        f"witness public key (verifier role, key id {witness.public.key_id.hex()[:16]}) "
        f"written to {args.out}: give it to edge-verify --witness-key"
    )
    return 0
