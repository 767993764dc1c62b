"""Policy: the YAML source operators write, its compiled form, and the decision engine.

Pure: no I/O, no clock. ``source`` reads the operators' YAML (the only module that imports
PyYAML; hub side) and ``compiler`` checks a decoded policy payload and builds its decision
index; ``bundle`` compiles a verified bundle's policy (``compile_for_device``: the device's
whole acceptance of bundle bytes) and ``engine`` decides one request against the index. The
request itself is a shared wire value (:mod:`edge_agent.protocol.request`). Import the
module you need: this package re-exports nothing.
"""
