"""``edge-hub break-glass``: sign a device-bound, time-limited recovery token.

The token switches one device's exec enforcement from ``enforce`` to ``audit`` for at most
four hours (docs/exec-enforcement.md). It is signed by the verifier role, never by revoke
(revoke can only deny), and is handed to a technician out of band: ``edge-agent
break-glass FILE`` on the device verifies and installs it, and every decision in the window
names it in the lineage.
"""

from __future__ import annotations

import argparse
import json
import os

from edge_agent.errors import ConfigError
from edge_agent.protocol.breakglass import (
    MAX_WINDOW_S,
    BreakGlassToken,
    break_glass_payload,
    sign_break_glass,
)
from edge_agent.protocol.roles import Role
from edge_agent.protocol.topics import check_topic_name
from edge_agent.support.cli import utc_text, wall_clock
from hub.cli.hub_dir import hub_dir_of
from hub.cli.out import write_hub_out
from hub.hubdir.keys import load_role_keys

__all__ = ["cmd_break_glass"]

TOKEN_ID_BYTES = 16
MAX_REASON_CHARS = 512


def cmd_break_glass(args: argparse.Namespace) -> int:
    try:
        check_topic_name(args.device, "--device")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not 1 <= args.minutes * 60 <= MAX_WINDOW_S:
        raise ConfigError(f"--minutes must be between 1 and {MAX_WINDOW_S // 60}")
    if not args.reason.strip() or len(args.reason) > MAX_REASON_CHARS:
        raise ConfigError(f"--reason must be 1 to {MAX_REASON_CHARS} characters")
    hub = hub_dir_of(args)
    root = hub.load_keys(args.keys).root
    signers = load_role_keys(args.keys or hub.keys, Role.VERIFIER, root)
    if len(signers) < root.role(Role.VERIFIER).threshold:
        raise ConfigError(
            f"{len(signers)} verifier key(s) here; trust root version {root.version} needs "
            f"{root.role(Role.VERIFIER).threshold}"
        )
    now = wall_clock()
    token = BreakGlassToken(
        device=args.device,
        token_id=os.urandom(TOKEN_ID_BYTES),
        issued_at=now,
        expires_at=now + args.minutes * 60,
        reason=args.reason,
    )
    data = sign_break_glass(break_glass_payload(token), device_id=args.device, signers=signers)
    write_hub_out(
        args.out, data, hub_dir=args.hub_dir, force=args.force, mode=0o600, key_dirs=[args.keys]
    )
    if args.json:
        report = {
            "out": str(args.out),
            "token": token.name,
            "device": token.device,
            "minutes": args.minutes,
            "expires_at": token.expires_at,
        }
        print(json.dumps(report, sort_keys=True))
        return 0
    latest = utc_text(token.expires_at, "%Y-%m-%dT%H:%M:%SZ")
    print(
        f"break-glass token {token.name} for {token.device}: audit mode for {args.minutes} min "
        f"from install, until {latest} at the latest; install it on the device with "
        f"'edge-agent break-glass {args.out}'"
    )
    return 0
