"""The ``edge-hub`` commands that run and drive the MQTT fabric (docs/mqtt.md).

``serve`` runs :class:`hub.service.server.HubService` until SIGTERM or SIGINT. ``device add``,
``device acl`` (the Mosquitto ACL, :mod:`hub.cli.mosquitto_acl`), ``bundle push``, ``revoke``,
``fleet`` and ``lineage show`` work on a hub directory (:mod:`hub.hubdir.layout`); ``bundle push``
and ``revoke`` record in the registry first, then publish at once to the broker of the
running ``serve`` (from ``serve.json``) or ``--broker``. Without either they record only,
and ``serve`` publishes what was recorded when it starts (and, while it runs, anything
recorded that the broker missed, on its next round).

``revoke`` names only what the registry knows (:func:`hub.core.push.revocation_region`; ``--force``
otherwise), and a bundle or key revocation, which nothing undoes, is confirmed first: typed
at a terminal, or ``--yes`` (without a terminal on stdin, no ``--yes`` refuses).

``device list|show|remove`` and ``revoke list`` are :mod:`hub.cli.inventory`'s. ``serve``
prints status lines (:mod:`hub.service.announce`) after its banner, none with ``-q``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError, TransportError
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.lineage_entries import Entry
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.cli import (
    configure_logging,
    read_bounded,
    utc_text,
    wall_clock,
)
from edge_agent.support.mqtt import BrokerSettings
from hub.cli import attest as attest_cli
from hub.cli import inventory
from hub.cli.bundle_view import terminal_width
from hub.cli.exits import counted
from hub.cli.fleet import cut, fleet_json, fleet_lines, lineage_view, unregistered_counts
from hub.cli.hub_dir import hub_dir_of
from hub.cli.mosquitto_acl import DEFAULT_HUB_USERS, render_acl
from hub.cli.out import write_hub_out
from hub.cli.parsers.fabric import DEFAULT_TOKEN_TTL_S
from hub.console.listen import ConsoleListen, parse_listen
from hub.core.publications import Publication
from hub.core.push import (
    PushPlan,
    irreversible_warning,
    resolve_key_id,
    revocation_region,
)
from hub.hubdir import profiles
from hub.hubdir.layout import HubDir
from hub.registry import IssuedRevocation
from hub.service import governance
from hub.service.config import HubConfig
from hub.service.publish import publish_once
from hub.service.server import HubService

__all__ = [
    "cmd_bundle_push",
    "cmd_device_acl",
    "cmd_device_add",
    "cmd_fleet",
    "cmd_lineage_show",
    "cmd_revoke",
    "cmd_serve",
    "prepare_push",
    "prepare_revocation",
]

logger = logging.getLogger(__name__)

MAX_PUBLIC_KEY_BYTES = 4096
CONFIRM_WORD = "revoke"


def cmd_serve(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    status_lines = _StatusLines()
    settings = None
    if args.broker:
        settings = BrokerSettings.from_url(
            args.broker, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file
        )
    try:
        config = HubConfig(
            hub.path,
            broker=settings,
            registry=hub.registry,
            bind=args.bind,
            port=args.port,
            keys_dir=args.keys,
            freshness_interval_s=args.freshness_interval,
            token_ttl_s=args.token_ttl,
            shared_subscriptions={"auto": None, "on": True, "off": False}[args.shared],
            device_rate=args.device_rate,
            attest_interval_s=args.attest_interval,
            attest_ttl_s=args.attest_ttl,
            console=_console_listen(args),
            status_lines=None if args.quiet else status_lines,
            summary_interval_s=args.summary_interval,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    configure_logging(args.verbose, args.log_format, args.log_level, quiet=args.quiet)
    if not args.verbose:
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    return asyncio.run(_serve(config, status_lines, quiet=args.quiet))


class _StatusLines:
    """Prints ``serve``'s status lines, holding those made before the banner is out (the
    broker may be reached while the hub is still starting its console)."""

    def __init__(self) -> None:
        self._held: list[str] | None = []

    def __call__(self, line: str) -> None:
        if self._held is None:
            print(line, flush=True)
        else:
            self._held.append(line)

    def release(self) -> None:
        """Print what was held; print at once from now on."""
        held, self._held = self._held or [], None
        for line in held:
            print(line, flush=True)


def _console_listen(args: argparse.Namespace) -> ConsoleListen | None:
    if args.console is None:
        if args.console_cert or args.console_key:
            raise ConfigError("--console-cert and --console-key need --console HOST:PORT")
        return None
    return parse_listen(args.console, args.console_cert, args.console_key)


async def _serve(config: HubConfig, status_lines: _StatusLines, *, quiet: bool) -> int:
    async with HubService(config) as hub:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, hub.request_stop)
        kind = "embedded amqtt" if hub.embedded_broker else "external"
        if not quiet:
            print(
                f"edge-hub serve: broker {hub.url} ({kind}), hub dir "
                f"{hub.hub_dir.path.resolve()}, registry {hub.hub_dir.shown_registry}; "
                "freshness tokens every "
                f"{config.freshness_interval_s:g}s, valid {config.token_ttl_s}s",
                flush=True,
            )
            if hub.console is not None:
                print(f"edge-hub serve: console {hub.console.url}", flush=True)
        status_lines.release()
        await hub.serve_forever()
    if not quiet:
        print("edge-hub serve: stopped", flush=True)
    return 0


def cmd_device_add(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    profiles.check_profile(hub, args.profile)
    pem = read_bounded(args.pubkey, MAX_PUBLIC_KEY_BYTES, "device public key")
    record = governance.device_record(
        args.device_id,
        region=args.region,
        groups=args.group,
        profile=args.profile,
        public_key_pem=pem.decode("ascii", "replace"),
        added_at=wall_clock(),
    )
    with hub.open_registry(create=hub.keys.is_dir()) as registry:
        registry.add_device(record)
        directory = inventory.issue_directory(hub, registry, record.region)
    if args.json:
        print(json.dumps(inventory.device_json(record) | {"directory": directory}, sort_keys=True))
        return 0
    print(
        f"device {record.device_id} registered: region {record.region}, groups "
        f"{', '.join(record.groups) or '(none)'}, profile {record.profile}, key "
        f"{record.public_key.key_id.hex()[:16]}; {directory}"
    )
    return 0


def cmd_device_acl(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    with hub.open_registry(create=False) as registry:
        devices = registry.devices()
    text = render_acl(devices, args.hub_user or DEFAULT_HUB_USERS)
    if args.out is not None:
        write_hub_out(args.out, text.encode(), hub_dir=args.hub_dir, force=args.force, mode=0o644)
    if args.json:
        out = None if args.out is None else str(args.out)
        print(json.dumps({"out": out, "devices": len(devices), "acl": text}, sort_keys=True))
        return 0
    if args.out is None:
        print(text, end="")
        return 0
    print(
        f"ACL for {counted(len(devices), 'device')} written to {args.out}; reload Mosquitto "
        "to apply it"
    )
    return 0


def cmd_bundle_push(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    data = read_bounded(args.file, MAX_BUNDLE_BYTES, "bundle")
    plan, publications = prepare_push(
        hub, data, now=wall_clock(), keys_dir=args.keys, lift_revocations=args.lift_revocations
    )
    bundle = plan.bundle
    published = _publish_now(hub, args.broker, publications)
    if args.json:
        report = {
            "version": bundle.version,
            "digest": bundle.digest.hex(),
            "region": bundle.target.region,
            "channels": list(plan.channels),
            "unchanged": list(plan.unchanged),
            "targeted": list(plan.targeted),
            "lifted": [lift.describe() for lift in plan.lifted],
        }
        print(json.dumps(report | published.as_json(), sort_keys=True))
        return 0
    count = len(plan.targeted)
    print(
        f"bundle version {bundle.version} (sha256:{bundle.digest.hex()[:16]}) verified and "
        f"recorded for {', '.join(plan.channels)} of {bundle.target.region}; "
        f"{count} registered device{'' if count == 1 else 's'} targeted"
        + (" (already current there)" if len(plan.unchanged) == len(plan.channels) else "")
    )
    for lift in plan.lifted:
        print(f"lifts {lift.describe()}")
    print(published.text)
    return 0


def prepare_push(
    hub: HubDir,
    data: bytes,
    *,
    now: int,
    keys_dir: Path | None = None,
    lift_revocations: bool = False,
) -> tuple[PushPlan, list[Publication]]:
    """Verify ``data`` as its target devices would at the hub's clock ``now``, record it in
    ``hub``'s registry, and return what to publish
    (:func:`hub.service.governance.prepare_push`).

    Raises:
        BundleError: a device of the target would refuse it (issued ahead of ``now``, or a
            rollback or conflict on a channel a targeted device listens on).
        ConfigError: the hub directory or keys are unusable, or it would lift revocations
            on devices it targets and ``lift_revocations`` is false (nothing recorded).
    """
    keys = hub.load_keys(keys_dir)
    with hub.open_registry() as registry:
        return governance.prepare_push(
            registry,
            keys,
            data,
            now=now,
            token_ttl_s=_token_ttl(hub),
            lift_revocations=lift_revocations,
        )


def cmd_revoke(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    if not (args.device or args.group or args.key_id or args.bundle is not None):
        raise ConfigError(
            "say what to revoke: --device ID, --group NAME, --key KEYID or --bundle VERSION "
            "('edge-hub revoke list' shows what was revoked)"
        )
    keys = hub.load_keys(args.keys)
    kind, value = scope = _revocation_scope(args, keys.root)
    with hub.open_registry(create=False) as registry:
        region = revocation_region(
            governance.inventory(registry), kind, value, args.region, force=args.force
        )
    warning = irreversible_warning(kind, value, region)
    if warning is not None:
        _confirm(warning, yes=args.yes)
    issued, publications = prepare_revocation(
        hub,
        scope,
        region=region,
        reason=args.reason,
        now=wall_clock(),
        keys_dir=args.keys,
        force=args.force,
    )
    published = _publish_now(hub, args.broker, publications)
    if args.json:
        report = {
            "region": issued.region,
            "epoch": issued.epoch,
            "kind": issued.kind,
            "value": issued.value,
            "reason": issued.reason,
            "issued_at": issued.issued_at,
        }
        print(json.dumps(report | published.as_json(), sort_keys=True))
        return 0
    print(
        f"revocation epoch {issued.epoch} of {issued.region}: {issued.kind} {issued.value} recorded"
    )
    print(published.text)
    return 0


def prepare_revocation(
    hub: HubDir,
    scope: tuple[RevocationKind, str],
    *,
    region: str | None,
    reason: str,
    now: int,
    keys_dir: Path | None = None,
    force: bool = False,
) -> tuple[IssuedRevocation, list[Publication]]:
    """Sign and record the region's next revocation in ``hub``'s registry; return it and
    what to publish (:func:`hub.service.governance.prepare_revocation`).

    Raises:
        ConfigError: a scope this hub does not know (unless ``force``: see
            :func:`hub.core.push.revocation_region`), an ambiguous region, or unusable keys.
        RevocationError: the revoke keys fall short of the threshold.
    """
    keys = hub.load_keys(keys_dir)
    signers = hub.revoke_keys(keys.root, keys_dir)
    with hub.open_registry() as registry:
        return governance.prepare_revocation(
            registry,
            keys,
            signers,
            scope,
            region=region,
            reason=reason,
            now=now,
            token_ttl_s=_token_ttl(hub),
            force=force,
        )


def _revocation_scope(args: argparse.Namespace, root: TrustRoot) -> tuple[RevocationKind, str]:
    if args.device:
        return RevocationKind.DEVICE, args.device
    if args.group:
        return RevocationKind.GROUP, args.group
    if args.key_id:
        return RevocationKind.KEY, resolve_key_id(args.key_id, root)
    return RevocationKind.BUNDLE, str(args.bundle)


def _confirm(warning: str, *, yes: bool) -> None:
    """Go on only when the operator confirmed ``warning``: ``--yes``, or the confirm word
    typed at a terminal.

    Raises:
        ConfigError: not confirmed (no terminal on stdin and no ``--yes``, or another answer).
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{warning} Add --yes to confirm (stdin is not a terminal to ask on)")
    print(f"{warning}\nType {CONFIRM_WORD!r} to confirm: ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip() != CONFIRM_WORD:
        raise ConfigError("not confirmed: nothing was revoked")


def _token_ttl(hub: HubDir) -> int:
    info = hub.read_serve_info()
    return info.token_ttl_s if info else DEFAULT_TOKEN_TTL_S


@dataclass(frozen=True, slots=True)
class _Published:
    """What publishing at once did: the broker (``None``: none found), how many messages,
    and, published through the running ``serve``, the registry it serves (its
    ``serve.json``; ``None``: a ``--broker`` given, or a ``serve`` that does not say)."""

    broker: str | None
    messages: int
    serve_registry: str | None = None

    @property
    def text(self) -> str:
        if self.broker is None:
            return (
                "no running 'edge-hub serve' found (and no --broker): recorded only; "
                "'edge-hub serve' publishes it when it starts"
            )
        through = (
            ""
            if self.serve_registry is None
            else f", the broker of the running 'edge-hub serve' of registry {self.serve_registry}"
        )
        return (
            f"published to {self.broker}{through} ({counted(self.messages, 'message')} sent to "
            "be retained; "
            "MQTT 3.1.1 does not say whether the broker kept them: a running 'edge-hub serve' "
            "publishes again, on its next round, what the embedded broker did not keep)"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "published": self.broker is not None,
            "broker": self.broker,
            "messages": self.messages if self.broker else 0,
            "serve_registry": self.serve_registry,
        }


def _publish_now(hub: HubDir, broker: str | None, publications: list[Publication]) -> _Published:
    """Publish now to ``broker`` or the running serve's broker; say what happened.

    Raises:
        TransportError: the broker is unreachable (what was recorded stays recorded).
    """
    info = None if broker else hub.read_serve_info()
    settings = BrokerSettings.from_url(broker) if broker else (info.settings if info else None)
    if settings is None:
        return _Published(None, 0)
    serving = None if info is None else info.registry
    if serving is not None and serving != hub.served_registry:
        logger.warning(
            "the running 'edge-hub serve' on %s serves registry %s, not %s where this was "
            "recorded: it does not publish it again on its rounds (give this command its "
            "--registry)",
            hub.path,
            serving,
            hub.served_registry,
        )
    try:
        asyncio.run(publish_once(settings, publications))
    except TransportError as exc:
        raise TransportError(
            f"recorded, but not published: {exc}; 'edge-hub serve' publishes it once it "
            "reaches the broker"
        ) from exc
    return _Published(settings.url, len(publications), serving)


def cmd_fleet(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    now = wall_clock()
    with hub.open_registry(create=False) as registry:
        rows, unregistered = registry.fleet(), unregistered_counts(registry)
        attested = registry.attestations()
    if args.json:
        report = fleet_json(rows, unregistered, now)
        devices = report["devices"]
        assert isinstance(devices, list)
        for device in devices:
            device["attestation"] = attest_cli.attestation_json(attested.get(device["device"]), now)
        print(json.dumps(report, sort_keys=True))
        return 0
    if not rows:
        print("no devices registered (edge-hub device add ...)")
    width = terminal_width()
    lines = fleet_lines(rows, unregistered, now, width=width)
    for line in lines + attest_cli.attestation_lines(attested, now):
        print(cut(line, width))
    return 0


def cmd_lineage_show(args: argparse.Namespace) -> int:
    hub = hub_dir_of(args)
    with hub.open_registry(create=False) as registry:
        registered = registry.device(args.device_id) is not None
        if not registered and not registry.lineage_state(args.device_id).size:
            raise ConfigError(f"device {args.device_id!r} is not registered")
        view = lineage_view(registry, args.device_id, args.limit)
    if args.json:
        print(
            json.dumps(
                {
                    "device": view.device,
                    "registered": registered,
                    "size": view.size,
                    "root": view.root.hex(),
                    "checkpoint": view.checkpoint,
                    "verified": True,
                    "entries": [_entry_json(e) for e in view.entries],
                },
                sort_keys=True,
            )
        )
        return 0
    if not view.size:
        print(f"{view.device}: no lineage shipped to this hub yet")
        return 0
    removed = "" if registered else " (device removed; its log is kept as evidence)"
    print(
        f"{view.device}: {view.size} entries stored, chain and tree verified, root "
        f"{view.root.hex()[:16]}… signed by the device{removed}"
    )
    for entry in view.entries:
        print(_entry_line(entry))
    return 0


def _entry_json(entry: Entry) -> dict[str, object]:
    request = entry.request
    return {
        "seq": entry.seq,
        "time": entry.time,
        "kind": str(entry.kind),
        "allowed": entry.allowed,
        "reason": entry.reason,
        "rule": entry.rule,
        "bundle_version": entry.bundle_version,
        "bundle_digest": entry.bundle_digest.hex() if entry.bundle_digest else None,
        "subject": request.subject if request else None,
        "action": request.action if request else None,
        "resource": request.resource if request else None,
        "context": dict(request.context) if request else None,
        "detail": entry.detail,
    }


def _entry_line(entry: Entry) -> str:
    when = utc_text(entry.time, "%Y-%m-%dT%H:%M:%SZ")
    verdict = "allow" if entry.allowed else "deny "
    request = entry.request
    what = (
        f"{request.subject} {request.action} {request.resource}"
        if request
        else (entry.detail[:80] or "-")
    )
    rule = f" rule={entry.rule}" if entry.rule else ""
    return f"{entry.seq:>8} {when} {entry.kind:<16} {verdict} {entry.reason:<18}{rule} {what}"
