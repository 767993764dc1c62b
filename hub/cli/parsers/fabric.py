"""The parsers of ``serve``, ``device``, ``bundle push``, ``revoke``, ``fleet`` and
``lineage show`` (handlers: :mod:`hub.cli.fabric`, :mod:`hub.cli.inventory`), with
``attest`` and ``break-glass`` that share their options."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from edge_agent.support.cli import EXIT_REFUSED, counter_arg
from hub.cli.exits import BROKER, NO_HUB, REFUSED, help_epilog, name_arg, path_arg
from hub.cli.lazy import Handler
from hub.cli.parsers import attest as attest_cli
from hub.cli.parsers import breakglass as breakglass_cli
from hub.hubdir import profiles

__all__ = ["DEFAULT_SUMMARY_INTERVAL_S", "DEFAULT_TOKEN_TTL_S", "register"]

DEFAULT_TOKEN_TTL_S = 60
DEFAULT_SUMMARY_INTERVAL_S = 60


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
    push.set_defaults(handler=Handler("hub.cli.fabric", "cmd_bundle_push"))

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
    revoke.set_defaults(handler=Handler("hub.cli.fabric", "cmd_revoke"))
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
    revoke_list.set_defaults(handler=Handler("hub.cli.inventory", "cmd_revoke_list"))

    fleet = commands.add_parser(
        "fleet",
        parents=[hub_dir, as_json],
        help="one row per device: liveness, bundle, gate, lineage",
        description="One row per registered device. A device not heard from (no fresh "
        "signed status) for three heartbeats is shown stale, never online: what its last "
        "status said is no longer known.",
        epilog=help_epilog("edge-hub fleet --json", NO_HUB),
    )
    fleet.set_defaults(handler=Handler("hub.cli.fabric", "cmd_fleet"))

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
    show.set_defaults(handler=Handler("hub.cli.fabric", "cmd_lineage_show"))
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
        help="device lineage, status and evidence through $share/ subscriptions (auto: probe "
        "the broker; on needs --broker)",
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
    serve.set_defaults(handler=Handler("hub.cli.fabric", "cmd_serve"))


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
    add.set_defaults(handler=Handler("hub.cli.fabric", "cmd_device_add"))

    listing = device.add_parser(
        "list",
        parents=[hub_dir, as_json],
        help="every registered device, with its liveness",
        epilog=help_epilog("edge-hub device list --json", NO_HUB),
    )
    listing.set_defaults(handler=Handler("hub.cli.inventory", "cmd_device_list"))
    show = device.add_parser(
        "show",
        parents=[hub_dir, as_json],
        help="everything the hub holds of one device",
        epilog=help_epilog("edge-hub device show gw-001 --json", NO_HUB),
    )
    show.add_argument("device_id", type=name_arg, metavar="ID", help="device id")
    show.set_defaults(handler=Handler("hub.cli.inventory", "cmd_device_show"))
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
    remove.set_defaults(handler=Handler("hub.cli.inventory", "cmd_device_remove"))

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
    acl.set_defaults(handler=Handler("hub.cli.fabric", "cmd_device_acl"))
