"""The packaged ARM agents run the offline device story on this x86 machine under qemu-user.

The package is unpacked as dpkg would unpack it and its agent runs through binfmt_misc with
its Debian userland as the emulator's library root (tests/arm_emulation.py). The keys and the
bundle come from the amd64 hub of this checkout, so the story also proves the signed CBOR
crosses architectures unchanged.

Emulation proves the build and the logic, not the timing. Marked ``emulated``: only ``make
test-arm`` runs these; each skips with the command to run when its package, its userland or
the emulator is missing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge_agent import __version__
from hub.cli.main import main as hub_main
from tests.arm_emulation import TARGETS, EmulatedAgent, emulated_agent

pytestmark = [pytest.mark.slow, pytest.mark.emulated]

POLICY = """\
target: {region: eu-1, groups: [line-a], profiles: [PROFILE]}
ttl: 24h
groups:
  sensors: [svc:camera, svc:thermo]
workloads:
  svc:camera: ["uid:1001"]
rules:
  - id: camera-exec
    effect: allow
    subjects: [svc:camera, group:sensors]
    actions: [exec]
    resources: ["/opt/camera/bin/*"]
  - id: no-shells
    effect: deny
    subjects: ["*"]
    actions: [exec]
    resources: ["/bin/sh", "/usr/bin/*sh"]
"""


@pytest.fixture(scope="module", params=sorted(TARGETS))
def agent(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> EmulatedAgent:
    arch: str = request.param
    return emulated_agent(arch, tmp_path_factory.mktemp(f"deb-{arch}"))


def _decide(agent: EmulatedAgent, cwd: Path, resource: str, *, expect: int) -> dict[str, object]:
    result = agent.run(
        cwd,
        "decide",
        "--state-dir",
        "state",
        "--subject",
        "svc:camera",
        "--action",
        "exec",
        "--resource",
        resource,
        "--json",
        expect=expect,
    )
    decision: dict[str, object] = json.loads(result.stdout)
    return decision


def test_emulated_agent_is_the_target_architecture(agent: EmulatedAgent) -> None:
    file_type = subprocess.run(
        ["od", "-An", "-tx1", "-j18", "-N2", str(agent.binary)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # ELF e_machine: 0xb7 is AArch64, 0x28 is 32-bit ARM.
    assert file_type == {"arm64": ["b7", "00"], "armhf": ["28", "00"]}[agent.arch]
    assert agent.run(Path("/"), "--version").stdout.split()[1] == __version__


def test_emulated_agent_does_the_offline_story_with_a_bundle_from_the_amd64_hub(
    agent: EmulatedAgent, tmp_path: Path
) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY.replace("PROFILE", agent.profile))
    assert hub_main(["keys", "init", "--out", str(tmp_path / "keys")]) == 0
    build = ["bundle", "build", str(tmp_path / "policy.yaml"), "--keys", str(tmp_path / "keys")]
    assert hub_main([*build, "--version", "1", "--out", str(tmp_path / "bundle.cbor")]) == 0
    init = ["init", "--state-dir", "state", "--device-id", "gw-001", "--root", "keys/root.cbor"]
    init += ["--region", "eu-1", "--group", "line-a", "--profile", agent.profile]
    assert "enrolled gw-001" in agent.run(tmp_path, *init).stdout

    tampered = bytearray((tmp_path / "bundle.cbor").read_bytes())
    tampered[-10] ^= 0x01
    (tmp_path / "tampered.cbor").write_bytes(bytes(tampered))
    agent.run(tmp_path, "bundle", "install", "tampered.cbor", "--state-dir", "state", expect=1)
    installed = agent.run(tmp_path, "bundle", "install", "bundle.cbor", "--state-dir", "state")
    assert "bundle version 1 installed" in installed.stdout

    allowed = _decide(agent, tmp_path, "/opt/camera/bin/capture", expect=0)
    assert (allowed["decision"], allowed["rule"]) == ("allow", "camera-exec")
    denied = _decide(agent, tmp_path, "/bin/sh", expect=1)
    assert (denied["decision"], denied["reason"]) == ("deny", "policy_denied")

    status = json.loads(agent.run(tmp_path, "status", "--state-dir", "state", "--json").stdout)
    assert (status["gate"], status["bundle"]["version"]) == ("open", 1)
    assert "lineage OK" in agent.run(tmp_path, "log", "verify", "--state-dir", "state").stdout
