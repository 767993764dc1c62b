"""``edge-hub bundle build`` reports a bad policy source as reading it reports it.

The build reads the source without compiling it (``load_policy_source(compiles=False)``):
the verification of the signed bytes compiles them as a device does, and a policy that
does not compile is then read again with the compile, for its file, line and rule
(docs/performance-profile.md, "Phase 2 (continued)"). These tests hold every source error
of ``tests/test_policy_source.py`` to the same sentence and exit code through the command,
with and without a TTL (a source without one fails the build before signing), and pin that
a build compiles the policy once and runs with the cyclic collector paused.
"""

from __future__ import annotations

import gc
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.errors import PolicyError
from edge_agent.policy import _checks as checks
from edge_agent.policy import compiler
from edge_agent.policy.source import load_policy_source
from hub.cli import signing
from hub.cli.main import main as hub_main
from tests.test_policy_source import SOURCE_ERRORS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy.yaml"
FILE_ERRORS = [case for case in SOURCE_ERRORS if "\ud800" not in case[1]]
"""The source errors a UTF-8 file can hold (a lone surrogate is refused as not UTF-8)."""


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    assert hub_main(["keys", "init", "--out", "keys"]) == 0
    return tmp_path / "keys"


def _build(*extra: str) -> list[str]:
    return ["bundle", "build", "fleet.yaml", "--keys", "keys", "--version", "1", *extra]


@pytest.mark.parametrize("ttl", [[], ["--ttl", "1h"]], ids=["no-ttl", "ttl"])
@pytest.mark.parametrize(
    "text", [case[1] for case in FILE_ERRORS], ids=[case[0] for case in FILE_ERRORS]
)
def test_bundle_build_reports_a_source_error_as_reading_the_source_does(
    keys: Path, capsys: pytest.CaptureFixture[str], text: str, ttl: list[str]
) -> None:
    Path("fleet.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(PolicyError) as read:
        load_policy_source(textwrap.dedent(text), "fleet.yaml")
    capsys.readouterr()
    assert hub_main(_build("--out", "bundle.cbor", *ttl)) == 1
    assert capsys.readouterr().err == f"edge-hub: error: {read.value}\n"
    assert not Path("bundle.cbor").exists()


def test_a_policy_that_only_its_compile_refuses_is_refused_with_its_line(
    keys: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index bound passes the reader's per-value checks; only the compile refuses it."""
    monkeypatch.setattr(checks, "MAX_INDEX_ENTRIES", 5)
    text = (
        "target: {region: eu-1}\nttl: 1h\nrules:\n"
        "  - {id: a, effect: allow, subjects: ['*'], actions: [read], resources: [/x, /y]}\n"
        "  - {id: b, effect: allow, subjects: ['*'], actions: ['*'], resources: [/x, /y]}\n"
    )
    load_policy_source(text, "fleet.yaml", compiles=False)
    Path("fleet.yaml").write_text(text)
    assert hub_main(_build("--out", "bundle.cbor")) == 1
    err = capsys.readouterr().err
    assert err.startswith("edge-hub: error: fleet.yaml:5: rule 'b': policy expands to more than 5")
    assert not Path("bundle.cbor").exists()


def test_a_build_compiles_the_policy_once(keys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[object] = []
    real_compile = compiler._compile

    def counting(payload: object) -> object:
        compiled.append(payload)
        return real_compile(payload)

    monkeypatch.setattr(compiler, "_compile", counting)
    Path("fleet.yaml").write_text(EXAMPLE.read_text())
    assert hub_main(_build("--out", "bundle.cbor")) == 0
    assert len(compiled) == 1


def test_a_build_runs_with_the_cyclic_collector_paused_and_restores_it(
    keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build's objects (values, payload, decoded bytes, compiled policy) are acyclic and
    alive until it ends: a collection between its steps would only scan them all again."""
    enabled: dict[str, bool] = {}

    def spy(name: str, step: Callable[..., object]) -> Callable[..., object]:
        def spied(*args: object, **kwargs: object) -> object:
            enabled[name] = gc.isenabled()
            return step(*args, **kwargs)

        return spied

    for name in ("load_policy_source", "build_bundle", "write_hub_out"):
        monkeypatch.setattr(signing, name, spy(name, getattr(signing, name)))
    Path("fleet.yaml").write_text(EXAMPLE.read_text())
    assert gc.isenabled()
    assert hub_main(_build("--out", "bundle.cbor")) == 0
    assert enabled == {"load_policy_source": False, "build_bundle": False, "write_hub_out": False}
    assert gc.isenabled()
