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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError, TransportError
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.lineage_entries import Entry
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.cli import (
    EXIT_REFUSED,
    configure_logging,
    counter_arg,
    read_bounded,
    utc_text,
    wall_clock,
)
from edge_agent.support.mqtt import BrokerSettings
from hub.cli import attest as attest_cli
from hub.cli import breakglass as breakglass_cli
from hub.cli import inventory
from hub.cli.bundle_view import terminal_width
from hub.cli.exits import BROKER, NO_HUB, REFUSED, counted, help_epilog, name_arg, path_arg
from hub.cli.fleet import cut, fleet_json, fleet_lines, lineage_view, unregistered_counts
from hub.cli.mosquitto_acl import DEFAULT_HUB_USERS, render_acl
from hub.cli.out import write_hub_out
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

__all__ = ["prepare_push", "prepare_revocation", "register"]

MAX_PUBLIC_KEY_BYTES = 4096
DEFAULT_TOKEN_TTL_S = 60
DEFAULT_SUMMARY_INTERVAL_S = 60
CONFIRM_WORD = "revoke"


def register(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    bundle: argparse._SubParsersAction,  # type: ignore[type-arg]
    lineage_commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    duration: Callable[[str], int],
) -> None:
    """Add the fabric commands to the ``edge-hub`` parser (and its ``bundle`` and
    ``lineage`` sub-commands). ``common`` holds the global options (``--hub-dir`` among
    them)."""
    hub_dir = common
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument("--broker", help="mqtt(s)://[user:password@]host:port (default: serve's)")
    keys = argparse.ArgumentParser(add_help=False)
    keys.add_argument("--keys", type=path_arg, help="key directory (default: HUB_DIR/keys)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the result as JSON")

    _register_serve(commands, hub_dir, keys, duration)
    _register_device(commands, hub_dir, as_json)

    push = bundle.add_parser(
        "push",
        parents=[hub_dir, keys, broker, as_json],
        help="verify, record and publish a bundle",
        description="Verify a bundle as its devices would, record it and publish it. A device "
        "installing a bundle lifts the device, group and region revocations issued before it: "
        "a push that would lift one on a device it targets is refused, naming the devices and "
        "revocations, unless --lift-revocations is given.",
        epilog=help_epilog("edge-hub bundle push bundle.cbor --json", REFUSED, NO_HUB, BROKER),
    )
    push.add_argument("file", type=path_arg, help="the bundle file ('edge-hub bundle build')")
    push.add_argument(
        "--lift-revocations",
        action="store_true",
        help="push even though it lifts device/group/region revocations on devices it "
        "targets (re-opens them; each lifted revocation is printed)",
    )
    push.set_defaults(handler=_cmd_bundle_push)

    revoke = commands.add_parser(
        "revoke",
        parents=[hub_dir, keys, broker, as_json],
        help="kill switch: publish a revocation ('revoke list': those issued)",
        epilog=help_epilog(
            "edge-hub revoke --device gw-001 --reason 'stolen' --json",
            REFUSED,
            NO_HUB,
            BROKER,
        ),
    )
    scope = revoke.add_mutually_exclusive_group()
    scope.add_argument("--device", type=name_arg, help="deny everything on this device")
    scope.add_argument("--group", type=name_arg, help="deny everything on this group's devices")
    scope.add_argument("--key", dest="key_id", help="stop this key counting (key id, 8+ hex)")
    scope.add_argument(
        "--bundle", type=counter_arg(1), help="void this bundle version and older ones"
    )
    revoke.add_argument(
        "--region", help="region (default: the device's, the group's or the bundle's)"
    )
    revoke.add_argument("--reason", default="", help="why (shown on devices and in logs)")
    revoke.add_argument(
        "--force", action="store_true", help="revoke what this hub never registered or pushed"
    )
    revoke.add_argument(
        "--yes", action="store_true", help="confirm a bundle or key revocation (irreversible)"
    )
    revoke.set_defaults(handler=_cmd_revoke)
    revoke_commands = revoke.add_subparsers(
        dest="revoke_command", metavar="[list]", help="list: show the revocations issued instead"
    )
    revoke_list = revoke_commands.add_parser(
        "list",
        parents=[hub_dir, as_json],
        help="the revocations issued: the newest per region, kind and value",
        epilog=help_epilog("edge-hub revoke list --region eu-1 --json", NO_HUB),
    )
    revoke_list.add_argument("--region", type=name_arg, help="only this region's")
    revoke_list.set_defaults(handler=inventory.cmd_revoke_list)

    fleet = commands.add_parser(
        "fleet",
        parents=[hub_dir, as_json],
        help="one row per device: liveness, bundle, gate, lineage",
        description="One row per registered device. A device not heard from (no fresh "
        "signed status) for three heartbeats is shown stale, never online: what its last "
        "status said is no longer known.",
        epilog=help_epilog("edge-hub fleet --json", NO_HUB),
    )
    fleet.set_defaults(handler=_cmd_fleet)

    show = lineage_commands.add_parser(
        "show",
        parents=[hub_dir, as_json],
        help="a device's shipped decisions, chain verified",
        epilog=help_epilog(
            "edge-hub lineage show gw-001 --limit 50",
            (EXIT_REFUSED, "the stored log does not verify"),
            NO_HUB,
        ),
    )
    show.add_argument("device_id", type=name_arg, metavar="ID", help="device id")
    show.add_argument(
        "--limit", type=counter_arg(0), default=20, help="last N entries (default 20)"
    )
    show.set_defaults(handler=_cmd_lineage_show)
    attest_cli.register(commands, hub_dir, keys, broker, duration)
    breakglass_cli.register(commands, hub_dir, keys)


def _register_serve(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    hub_dir: argparse.ArgumentParser,
    keys: argparse.ArgumentParser,
    duration: Callable[[str], int],
) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[hub_dir, keys],
        help="run the hub service",
        description="Run the hub until SIGTERM or SIGINT. It prints one line when it "
        "connects to, loses or regains the broker, and a one-line summary every "
        "--summary-interval (devices online, messages/s, ingest lag); -q prints only errors, "
        "-v adds edgegov's debug logs, -vv the libraries' (amqtt, aiomqtt, uvicorn).",
        epilog=help_epilog(
            "edge-hub serve --hub-dir /var/lib/edge-hub --port 8883",
            (EXIT_REFUSED, "the broker settings cannot be used"),
            NO_HUB,
        ),
    )
    serve.add_argument("--broker", help="use this broker instead of starting the embedded one")
    serve.add_argument("--bind", default="127.0.0.1", help="embedded broker address")
    serve.add_argument("--port", type=int, default=1883, help="embedded broker port (0: free)")
    serve.add_argument(
        "--freshness-interval",
        type=duration,
        default=10,
        metavar="DURATION",
        help="publish freshness tokens this often (default 10s)",
    )
    serve.add_argument(
        "--token-ttl",
        type=duration,
        default=DEFAULT_TOKEN_TTL_S,
        metavar="DURATION",
        help=f"freshness tokens are valid this long (default {DEFAULT_TOKEN_TTL_S}s)",
    )
    serve.add_argument(
        "--shared",
        choices=["auto", "on", "off"],
        default="auto",
        help="lineage through $share/ subscriptions (auto: probe the broker)",
    )
    serve.add_argument("--device-rate", type=float, default=20.0, help="messages/s per device")
    serve.add_argument(
        "--attest-interval",
        type=duration,
        default=300,
        metavar="DURATION",
        help="challenge every device this often (default 5m)",
    )
    serve.add_argument(
        "--attest-ttl",
        type=duration,
        default=900,
        metavar="DURATION",
        help="attestation results are valid this long (default 15m)",
    )
    serve.add_argument(
        "--summary-interval",
        type=duration,
        default=DEFAULT_SUMMARY_INTERVAL_S,
        metavar="DURATION",
        help=f"print the one-line summary this often (default {DEFAULT_SUMMARY_INTERVAL_S}s)",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="stderr log threshold (default warning: refusals, clearing, rejections; -v is debug)",
    )
    serve.add_argument("--ca-file", help="CA bundle to verify an mqtts:// broker")
    serve.add_argument("--cert-file", help="client certificate for an mqtts:// broker")
    serve.add_argument("--key-file", help="client certificate key")
    serve.add_argument(
        "--console",
        metavar="HOST:PORT",
        help="serve the governance console there (docs/console.md); TLS needed off loopback",
    )
    serve.add_argument(
        "--console-cert", type=path_arg, metavar="FILE", help="the console's TLS certificate (PEM)"
    )
    serve.add_argument(
        "--console-key", type=path_arg, metavar="FILE", help="the console's TLS private key (PEM)"
    )
    serve.set_defaults(handler=_cmd_serve)


def _register_device(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    hub_dir: argparse.ArgumentParser,
    as_json: argparse.ArgumentParser,
) -> None:
    device = commands.add_parser(
        "device",
        parents=[hub_dir],
        help="registered devices",
        epilog=help_epilog("edge-hub device list --json", NO_HUB),
    ).add_subparsers(dest="device_command", required=True, metavar="COMMAND")
    add = device.add_parser(
        "add",
        parents=[hub_dir, as_json],
        help="register a device and its key",
        epilog=help_epilog(
            "edge-hub device add gw-001 --pubkey gw-001.pub --region eu-1 --group line-a "
            "--profile generic-x86_64",
            NO_HUB,
            more=(
                "A second device with the same public key, or a firmware profile that is "
                "neither shipped nor in HUB_DIR/firmware_profiles/, is refused (exit 2).",
            ),
        ),
    )
    add.add_argument("device_id", type=name_arg, metavar="ID", help="device id (its MQTT username)")
    add.add_argument(
        "--pubkey", type=path_arg, required=True, help="device public key PEM ('edge-agent pubkey')"
    )
    add.add_argument("--region", type=name_arg, required=True, help="the device's region")
    add.add_argument(
        "--group", type=name_arg, action="append", default=[], help="device group (repeat)"
    )
    add.add_argument(
        "--profile",
        required=True,
        help="firmware profile it was enrolled with (shipped: "
        f"{', '.join(profiles.SHIPPED_PROFILES)}; or HUB_DIR/firmware_profiles/NAME.toml)",
    )
    add.set_defaults(handler=_cmd_device_add)

    listing = device.add_parser(
        "list",
        parents=[hub_dir, as_json],
        help="every registered device, with its liveness",
        epilog=help_epilog("edge-hub device list --json", NO_HUB),
    )
    listing.set_defaults(handler=inventory.cmd_device_list)
    show = device.add_parser(
        "show",
        parents=[hub_dir, as_json],
        help="everything the hub holds of one device",
        epilog=help_epilog("edge-hub device show gw-001 --json", NO_HUB),
    )
    show.add_argument("device_id", type=name_arg, metavar="ID", help="device id")
    show.set_defaults(handler=inventory.cmd_device_show)
    remove = device.add_parser(
        "remove",
        parents=[hub_dir, as_json],
        help="unregister a device (its lineage stays as evidence)",
        description="Unregister a device: it leaves the registry, its region's next device "
        "directory and (once 'edge-hub device acl' is written again) the Mosquitto ACL. Its "
        "shipped lineage, fork evidence and rejection counters stay as evidence. Removal "
        "is not revocation: the device still decides under the bundles it holds; revoke it "
        "first ('edge-hub revoke --device ID') to deny everything on it.",
        epilog=help_epilog("edge-hub device remove gw-001", NO_HUB),
    )
    remove.add_argument("device_id", type=name_arg, metavar="ID", help="device id")
    remove.set_defaults(handler=inventory.cmd_device_remove)

    acl = device.add_parser(
        "acl",
        parents=[hub_dir],
        help="write the Mosquitto ACL pinning devices to their region",
        epilog=help_epilog("edge-hub device acl --out /etc/mosquitto/edgegov.acl", NO_HUB),
    )
    acl.add_argument("--out", type=path_arg, help="write here atomically (default: print)")
    acl.add_argument("--force", action="store_true", help="replace --out if it is a file")
    acl.add_argument(
        "--hub-user",
        action="append",
        default=[],
        metavar="NAME",
        help="a broker username of a hub process or command (repeat; default: hub)",
    )
    acl.add_argument(
        "--json", action="store_true", help="print the result as JSON (the ACL text in 'acl')"
    )
    acl.set_defaults(handler=_cmd_device_acl)


def _cmd_serve(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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
                f"{hub.hub_dir.path.resolve()}; freshness tokens every "
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


def _cmd_device_add(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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


def _cmd_device_acl(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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


def _cmd_bundle_push(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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


def _cmd_revoke(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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
    """What publishing at once did: the broker (``None``: none found), how many messages."""

    broker: str | None
    messages: int

    @property
    def text(self) -> str:
        if self.broker is None:
            return (
                "no running 'edge-hub serve' found (and no --broker): recorded only; "
                "'edge-hub serve' publishes it when it starts"
            )
        return (
            f"published to {self.broker} ({counted(self.messages, 'message')} sent to be retained; "
            "MQTT 3.1.1 does not say whether the broker kept them: a running 'edge-hub serve' "
            "publishes again, on its next round, what the embedded broker did not keep)"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "published": self.broker is not None,
            "broker": self.broker,
            "messages": self.messages if self.broker else 0,
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
    try:
        asyncio.run(publish_once(settings, publications))
    except TransportError as exc:
        raise TransportError(
            f"recorded, but not published: {exc}; 'edge-hub serve' publishes it once it "
            "reaches the broker"
        ) from exc
    return _Published(settings.url, len(publications))


def _cmd_fleet(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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


def _cmd_lineage_show(args: argparse.Namespace) -> int:
    hub = HubDir.resolve(args.hub_dir)
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
