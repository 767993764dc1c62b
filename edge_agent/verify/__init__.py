"""``edge-verify``: checks decision receipts and checkpoint consistency from files alone.

No state directory, database, clock or network: an auditor installs the agent's package (or
just this command) and verifies with the public keys. The checks themselves are the shared
pure core (``edge_agent.protocol.receipt``, ``edge_agent.protocol.consistency_file``); this
package reads files and prints.
"""
