"""Entry point of the frozen agent: the same ``main`` as the ``edge-agent`` console script
(``exec`` starts without importing the whole agent)."""

import sys

from edge_agent.launcher import main

sys.exit(main())
