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
    "edge_agent.verify",
    "hub",
    "yaml",
    "cryptography",
]
"""The agent's config and its firmware profile are checked by edge_agent.protocol.settings,
not pydantic; the hub and the offline verifier are never imported."""
SHIPPED_PROFILES = sorted((REPO / "firmware_profiles").glob("*.toml"))


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


@pytest.mark.parametrize("profile", SHIPPED_PROFILES, ids=lambda path: path.stem)
def test_a_loaded_firmware_profile_keeps_pydantic_out_too(profile: Path) -> None:
    """A packaged gateway has its profile (``edge-agent init --profile``): the agent that
    measures, with the TPM provider it may need, stays off pydantic as the idle one does."""
    code = (
        "from pathlib import Path\n"
        "import edge_agent.sync.cli, edge_agent.attest.tpm\n"
        "from edge_agent.attest.profile import load_profile\n"
        "from edge_agent.sync.config import load_config\n"
        "load_config(None, {})\n"
        f"assert load_profile(Path({str(profile)!r})).measure"
    )
    assert sorted(set(OFF_THE_RUN_PATH) & _imported(code)) == []
