"""The ``edge-agent`` console script: ``exec`` starts without importing the whole agent.

``edge-agent exec`` runs in front of every governed program, so its start-up is on the
workload's critical path: it needs only the socket client, not the trust core, SQLite or
MQTT that the rest of the command line imports.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
"""Not :data:`typing.TYPE_CHECKING`: importing :mod:`typing` costs ``exec`` milliseconds."""
if TYPE_CHECKING:
    from collections.abc import Sequence  # at run time: collections, about 1.5 ms

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["exec"]:
        from edge_agent.socket import exec_gate

        return exec_gate.main(args[1:])
    from edge_agent import cli

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
