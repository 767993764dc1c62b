"""What ``edge-agent run`` imports at start stays off the heavy modules it never uses idle.

The idle agent is almost entirely the code it imports (docs/performance-profile.md, phases 1
and 2): pydantic alone cost it ~10 MiB of ~47. These tests pin what was taken off its path,
so a new import cannot silently bring it back; they check ``sys.modules``, never memory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

OFF_THE_RUN_PATH = [
    "pydantic",
    "pydantic_core",
    "importlib.metadata",
    "edge_agent.protocol.firmware_profile",
    "edge_agent.attest.profile",
    "edge_agent.verify",
    "hub",
    "yaml",
    "cryptography",
]
"""The agent's configs are checked by edge_agent.support.settings; a firmware profile
(pydantic) is imported only when one is loaded; the hub and the offline verifier never."""


def _imported(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import edge_agent.launcher, edge_agent.cli; edge_agent.cli.build_parser()",
        "import edge_agent.sync.cli",
        "from edge_agent.sync.config import load_config; load_config(None, {})",
    ],
    ids=["command-line-and-parser", "run-command", "config-loaded"],
)
def test_run_imports_neither_pydantic_nor_the_hub(code: str) -> None:
    assert sorted(set(OFF_THE_RUN_PATH) & _imported(code)) == []


def test_loading_a_firmware_profile_still_imports_its_validator() -> None:
    profile = REPO / "firmware_profiles" / "generic-x86_64.toml"
    code = (
        "from pathlib import Path\nfrom edge_agent.attest.profile import load_profile\n"
        f"load_profile(Path({str(profile)!r}))"
    )
    assert {"pydantic", "edge_agent.protocol.firmware_profile"} <= _imported(code)
