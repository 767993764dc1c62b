"""``edge-hub`` imports the code of the command it runs, not of every command it has.

Every ``edge-hub`` command builds the whole parser, then runs one handler. Importing every
subcommand's module at start cost each command ~0.5 s on the issue's VM
(docs/performance-profile.md, "Phase 2 (continued)"): the parsers now name their handlers
(:class:`hub.cli.lazy.Handler`) and the handler's module is imported when its command runs.
These tests pin what stays off the start and off ``bundle build``, by ``sys.modules``, never
by time; and that the lazy handlers keep the command line's error contract.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli.lazy import Handler
from hub.cli.main import main as hub_main
from tests.cli_parsers import commands

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "policy.yaml"

HANDLER_MODULES = [
    "hub.cli.ancestry",
    "hub.cli.attest",
    "hub.cli.breakglass",
    "hub.cli.bundle_diff",
    "hub.cli.console",
    "hub.cli.fabric",
    "hub.cli.inventory",
    "hub.cli.lineage",
    "hub.cli.policy",
    "hub.cli.receipts",
    "hub.cli.registry_cmd",
    "hub.cli.rollout",
    "hub.cli.signing",
]
SERVICE_MODULES = [
    "hub.service",
    "hub.registry",
    "hub.hubdir.layout",
    "hub.console.app",
    "edge_agent.support.mqtt",
    "aiomqtt",
    "amqtt",
    "paho",
    "sqlite3",
    "starlette",
]
OFF_THE_PARSER = [*HANDLER_MODULES, *SERVICE_MODULES, "yaml", "cryptography", "nacl"]
"""Building the parser (``--help``, completion, man pages, and the start of every command)."""
OTHER_PARSERS = [
    f"hub.cli.parsers.{name}"
    for name in (
        "ancestry",
        "bundle_diff",
        "console",
        "fabric",
        "lineage",
        "policy",
        "receipts",
        "registry",
        "rollout",
    )
]
"""The parsers of the commands other than the signing ones (``bundle build``'s module's)."""
OFF_THE_BUILD = [
    "hub.cli.ancestry",
    "hub.cli.attest",
    "hub.cli.fabric",
    "hub.cli.inventory",
    "edge_agent.protocol.firmware_profile",
    "edge_agent.trust.state",
    "edge_agent.protocol.attestation",
    "edge_agent.protocol.revocation",
    "cryptography",
    "edge_agent.protocol.request",
    "difflib",
    *OTHER_PARSERS,
    *SERVICE_MODULES,
]
"""``bundle build`` signs files: it needs neither the other commands (nor their parsers) nor
the service, nor a device's trust state (its verification's one trusted-time check is
``trust.clock``'s), nor OpenSSL for key files as ``keys init`` writes them, nor a device's
request type or the near-miss finder of a refused action."""


def _imported(code: str, cwd: Path = REPO) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def _loaded(modules: set[str], names: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


def test_building_the_parser_imports_no_command_handler_nor_the_service() -> None:
    modules = _imported("import hub.cli.main; hub.cli.main.build_parser()")
    assert _loaded(modules, OFF_THE_PARSER) == []


def test_bundle_build_imports_neither_the_other_commands_nor_the_service(tmp_path: Path) -> None:
    assert hub_main(["keys", "init", "--out", str(tmp_path / "keys")]) == 0
    argv = [
        "bundle",
        "build",
        str(EXAMPLE),
        "--keys",
        str(tmp_path / "keys"),
        "--version",
        "1",
        "--out",
        str(tmp_path / "bundle.cbor"),
    ]
    code = f"from hub.cli.main import main\nassert main({argv!r}) == 0"
    modules = _imported(code, cwd=tmp_path)
    assert (tmp_path / "bundle.cbor").is_file()
    assert _loaded(modules, OFF_THE_BUILD) == []


@pytest.mark.parametrize("command", list(commands("edge-hub")), ids=lambda command: command[0])
def test_every_command_names_a_handler_its_module_defines(
    command: tuple[str, object],
) -> None:
    name, parser = command
    handler = parser._defaults.get("handler")  # type: ignore[attr-defined]
    assert isinstance(handler, Handler), name
    assert handler.module in HANDLER_MODULES
    assert callable(handler.resolve())


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_handler_module_that_fails_to_import_is_an_internal_error_not_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    monkeypatch.setitem(sys.modules, "hub.cli.fabric", None)
    argv = ["fleet", "--hub-dir", str(tmp_path), *(["--json"] if as_json else [])]
    assert hub_main(argv) == 1
    out, err = capsys.readouterr()
    if as_json:
        assert json.loads(out)["code"] == "internal_error"
        assert err == ""
    else:
        assert out == ""
        assert err.startswith("edge-hub: error: internal error (ModuleNotFoundError: import of ")
        assert "hub.cli.fabric" in err
        assert "Traceback" not in err


def test_the_hub_directory_and_registry_errors_still_exit_unavailable() -> None:
    """``exit_code`` finds these classes among the imported modules instead of importing
    them: an error of either still ends with exit 3."""
    from edge_agent.errors import ConfigError, TransportError
    from hub.cli.exits import exit_code
    from hub.hubdir.layout import HubDirError
    from hub.registry import RegistryError

    assert exit_code(HubDirError("no hub directory", Path("hub"))) == 3
    assert exit_code(RegistryError("damaged")) == 3
    assert exit_code(TransportError("unreachable")) == 3
    assert exit_code(ConfigError("bad argument")) == 2
