"""Entry point of the frozen ``edge-agent-exec``: only the exec gate, for
``/usr/bin/edge-agent exec`` (its start-up is on every governed program's critical path, and
an executable that imports nothing else also runs none of the runtime hooks PyInstaller adds
for the rest of the agent's modules)."""

import sys

from edge_agent.socket.exec_gate import main

sys.exit(main(sys.argv[1:]))
