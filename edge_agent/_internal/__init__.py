"""Private helpers shared by the agent's and the hub's command-line shells."""
