"""Policy: the YAML source operators write, its compiled form, and the decision engine.

Pure: no I/O, no clock. ``source`` is the only module that imports PyYAML (hub side); the
agent needs only ``compiler`` and ``engine``, so this package does not import ``source``.
"""

from edge_agent.policy.compiler import CompiledPolicy, RuleSummary, compile_policy
from edge_agent.policy.engine import Match, Request, evaluate

__all__ = ["CompiledPolicy", "Match", "Request", "RuleSummary", "compile_policy", "evaluate"]
