"""``edge-hub console token add|list|revoke``: the governance console's login tokens.

``add NAME --role viewer|operator`` prints a new token once; the registry keeps only its
SHA-256 digest (:mod:`hub.console.auth`), so a lost token is revoked and a new one added.
``revoke`` deletes it: the sessions it opened end at their next request.
"""

from __future__ import annotations

import argparse
import json

from edge_agent.errors import ConfigError
from edge_agent.support.cli import utc_text, wall_clock
from hub.cli.hub_dir import hub_dir_of
from hub.console.tokens import TOKEN_NAME, new_token, token_digest
from hub.registry import ConsoleToken

__all__ = ["cmd_add", "cmd_list", "cmd_revoke"]


def cmd_add(args: argparse.Namespace) -> int:
    if not TOKEN_NAME.fullmatch(args.name):
        raise ConfigError(
            f"token name {args.name!r}: use 1 to 64 letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    token = new_token()
    with hub_dir_of(args).open_registry(create=False) as registry:
        registry.add_console_token(
            ConsoleToken(args.name, args.role, token_digest(token), wall_clock())
        )
    if args.json:
        print(json.dumps({"name": args.name, "role": args.role, "token": token}, sort_keys=True))
        return 0
    print(f"console token for {args.name} ({args.role}); shown once, keep it secret:")
    print(token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with hub_dir_of(args).open_registry(create=False) as registry:
        tokens = registry.console_tokens()
    if args.json:
        listed = [{"name": t.name, "role": t.role, "created_at": t.created_at} for t in tokens]
        print(json.dumps({"tokens": listed}, sort_keys=True))
        return 0
    if not tokens:
        print("no console tokens: add one with 'edge-hub console token add NAME --role viewer'")
    for token in tokens:
        added = utc_text(token.created_at, "%Y-%m-%d %H:%M UTC")
        print(f"{token.name:<24} {token.role:<9} added {added}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with hub_dir_of(args).open_registry(create=False) as registry:
        if not registry.revoke_console_token(args.name):
            raise ConfigError(f"no console token named {args.name!r} (see 'console token list')")
    if args.json:
        print(json.dumps({"name": args.name, "revoked": True}, sort_keys=True))
        return 0
    print(f"console token {args.name} revoked; its sessions end at their next request")
    return 0
