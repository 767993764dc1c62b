"""The import contract ([tool.importlinter] in pyproject.toml, docs/architecture.md) can fail.

``make check`` runs ``lint-imports`` over the tree; a contract that holds only because it could
never break proves nothing. Each case copies edge_agent/ and hub/ with the real configuration
into a temporary directory, adds one import the contract forbids, and runs ``lint-imports``
there: the contract named must break, naming the import. The unchanged copy keeps every
contract, so what breaks is the added line and nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACT_IDS = {
    contract["id"]
    for contract in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}


@dataclass(frozen=True)
class Breach:
    name: str
    module: str
    added: str
    contract: str
    reported: str


BREACHES = [
    Breach(
        "the shared pure core imports asyncio",
        "edge_agent/protocol/topics.py",
        "import asyncio",
        "pure-core",
        "edge_agent.protocol.topics -> asyncio",
    ),
    Breach(
        "the trust machine reads the clock",
        "edge_agent/trust/state.py",
        "import time",
        "pure-core",
        "edge_agent.trust.state -> time",
    ),
    Breach(
        "the hub's pure core reaches the registry's SQLite backend",
        "hub/core/tpm_quote.py",
        "import hub.registry.sqlite",
        "pure-core",
        "hub.core.tpm_quote -> hub.registry.sqlite",
    ),
    Breach(
        "the agent's shared pure core imports the hub",
        "edge_agent/protocol/topics.py",
        "import hub",
        "agent-without-hub",
        "edge_agent.protocol.topics -> hub",
    ),
    Breach(
        "the agent's shell imports the hub's service",
        "edge_agent/sync/daemon.py",
        "import hub.service.server",
        "agent-without-hub",
        "edge_agent.sync.daemon -> hub.service.server",
    ),
    Breach(
        "the hub imports the agent's state store",
        "hub/cli/main.py",
        "import edge_agent.store",
        "hub-uses-public-agent",
        "hub.cli.main -> edge_agent.store",
    ),
    Breach(
        "edge-verify reaches the agent's lineage store",
        "edge_agent/verify/cli.py",
        "import edge_agent.lineage.log",
        "verify-from-files",
        "edge_agent.verify.cli -> edge_agent.lineage.log",
    ),
    Breach(
        "edge-verify opens a database",
        "edge_agent/verify/cli.py",
        "import sqlite3",
        "verify-from-files",
        "edge_agent.verify.cli -> sqlite3",
    ),
    Breach(
        "the store imports the agent that imports it",
        "edge_agent/store.py",
        "import edge_agent.agent",
        "no-sibling-cycles",
        "- .store -> .agent",
    ),
]


def _tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contract's configuration, free to be broken."""
    copy = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("edge_agent", "hub"):
        shutil.copytree(ROOT / package, copy / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def _lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` in ``tree``, which comes first on the path (not the checkout)."""
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *selected],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_unchanged_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_imports(_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACT_IDS)} kept, 0 broken." in result.stdout


def test_every_contract_has_a_breach_that_proves_it_can_fail() -> None:
    assert {breach.contract for breach in BREACHES} == CONTRACT_IDS


@pytest.mark.parametrize("breach", BREACHES, ids=lambda b: b.name)
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, breach: Breach) -> None:
    tree = _tree(tmp_path)
    module = tree / breach.module
    module.write_text(module.read_text() + f"\n{breach.added}  # the breach under test\n")

    result = _lint_imports(tree, breach.contract)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 0 kept, 1 broken." in result.stdout
    assert breach.reported in result.stdout
