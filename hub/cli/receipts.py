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
from edge_agent.support.cli import counter_arg, utc_text, wall_clock
from hub.cli.exits import NO_HUB, help_epilog, name_arg, path_arg
from hub.cli.out import write_hub_out
from hub.core.receipts import FORMATS, hub_receipt, registered
from hub.hubdir.layout import HubDir
from hub.registry import Registry, RegistryError

__all__ = ["checkpoint_note", "consistency_text", "register"]


def register(
    keys_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    lineage_commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``lineage receipt|checkpoint|consistency`` and ``keys export`` to ``edge-hub``."""
    hub_dir = argparse.ArgumentParser(add_help=False, parents=[common])
    hub_dir.add_argument("--keys", type=path_arg, help="key directory (default: HUB_DIR/keys)")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", type=path_arg, required=True, help="file to write")
    out.add_argument("--force", action="store_true", help="replace --out if it is a file")
    out.add_argument("--json", action="store_true", help="print the result as JSON")

    receipt = lineage_commands.add_parser(
        "receipt",
        parents=[hub_dir, out],
        help="a receipt for one entry, cosigned by the hub",
        epilog=help_epilog("edge-hub lineage receipt gw-001 41 --out gw-001-41.cose", NO_HUB),
    )
    receipt.add_argument("device_id", type=name_arg, metavar="DEVICE", help="device id")
    receipt.add_argument("seq", type=counter_arg(0), metavar="SEQ", help="the entry's seq")
    receipt.add_argument(
        "--format",
        choices=FORMATS,
        default="cose",
        help="cose: a COSE receipt (edge-verify receipt); tlog-proof: a text proof",
    )
    receipt.add_argument(
        "--include-bundle", action="store_true", help="embed the bundle the entry names (cose)"
    )
    receipt.set_defaults(handler=_cmd_receipt)

    checkpoint = lineage_commands.add_parser(
        "checkpoint",
        parents=[hub_dir, out],
        help="the checkpoint note the hub holds",
        epilog=help_epilog("edge-hub lineage checkpoint gw-001 --out gw-001.note", NO_HUB),
    )
    checkpoint.add_argument("device_id", type=name_arg, metavar="DEVICE", help="device id")
    checkpoint.add_argument("--size", type=counter_arg(1), help="tree size (default: latest)")
    checkpoint.set_defaults(handler=_cmd_checkpoint)

    consistency = lineage_commands.add_parser(
        "consistency",
        parents=[hub_dir, out],
        help="a consistency proof between two sizes",
        epilog=help_epilog(
            "edge-hub lineage consistency gw-001 100 250 --out gw-001-100-250.proof", NO_HUB
        ),
    )
    consistency.add_argument("device_id", type=name_arg, metavar="DEVICE", help="device id")
    consistency.add_argument("old", type=counter_arg(1), metavar="OLD", help="the older size")
    consistency.add_argument("new", type=counter_arg(1), metavar="NEW", help="the newer size")
    consistency.set_defaults(handler=_cmd_consistency)

    export = keys_commands.add_parser(
        "export",
        parents=[hub_dir, out],
        help="export a public key the hub signs with",
        epilog=help_epilog("edge-hub keys export witness --out witness.pub", NO_HUB),
    )
    export.add_argument("which", choices=["witness"], help="witness: the cosigning key")
    export.set_defaults(handler=_cmd_export)


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


def _cmd_receipt(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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


def _cmd_consistency(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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


def _cmd_export(args: argparse.Namespace) -> int:
    witness, _ = _witness(HubDir.resolve(args.hub_dir), args.keys)
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
