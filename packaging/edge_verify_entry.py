"""Entry point of the frozen ``edge-verify``: the same ``main`` as the console script."""

import sys

from edge_agent.verify.cli import main

sys.exit(main())
