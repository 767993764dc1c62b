"""The packaged ARM agents run the offline device story on this x86 machine under qemu-user.

``make package ARCH=arm64`` (packaging/foreign-arch.sh) builds the .deb inside an arm64 Debian
userland; here the package is unpacked as dpkg would unpack it and its agent runs through the
kernel's binfmt_misc qemu handler, with the userland as the emulator's library root
(``QEMU_LD_PREFIX``: the dynamic loader and glibc of the target). The keys and the bundle come
from the amd64 hub of this checkout, so the story also proves the signed CBOR crosses
architectures unchanged.

Emulation proves the build and the logic, not the timing, and has limits the tests respect:
``/proc/PID/exe`` of an emulated process is the emulator, so the policy names its workload by
``uid:`` only, never ``exe:``. Marked ``emulated``: only ``make test-arm`` runs these; each
skips with the command to run when its package, its userland or the emulator is missing.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent import __version__
from hub.cli.main import main as hub_main

pytestmark = [pytest.mark.slow, pytest.mark.emulated]

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 120
# Debian architecture -> (binfmt_misc handler, `uname -m` under it, firmware profile). The
# offline story only names the profile (init records it, the bundle targets it); no armv7l
# profile ships yet, so armhf borrows the arm64 one's name.
TARGETS = {
    "arm64": ("qemu-aarch64", "aarch64", "generic-arm64"),
    "armhf": ("qemu-arm", "armv7l", "generic-arm64"),
}
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


@dataclass(frozen=True)
class EmulatedAgent:
    arch: str
    machine: str
    profile: str
    binary: Path
    userland: Path

    def run(self, cwd: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        environment = ["env", "-i", "PATH=/nonexistent", f"QEMU_LD_PREFIX={self.userland}"]
        result = subprocess.run(
            [*environment, str(self.binary), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == expect, (self.arch, args, result.stdout, result.stderr)
        return result


@pytest.fixture(scope="module", params=sorted(TARGETS))
def agent(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> EmulatedAgent:
    arch: str = request.param
    handler, machine, profile = TARGETS[arch]
    deb = ROOT / "dist" / f"edge-agent_{__version__}_{arch}.deb"
    userland = ROOT / "build" / "foreign" / arch / "rootfs"
    if not deb.is_file() or not (userland / "usr" / "bin").is_dir():
        pytest.skip(f"no {arch} package and userland: run `make package ARCH={arch}`")
    status = Path("/proc/sys/fs/binfmt_misc") / handler
    if not status.is_file() or "enabled" not in status.read_text().splitlines():
        pytest.skip(f"no enabled {handler} binfmt_misc handler: run `make package ARCH={arch}`")
    unpacked = tmp_path_factory.mktemp(f"deb-{arch}")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    binary = unpacked / "opt" / "edge-agent" / "edge-agent"
    return EmulatedAgent(arch, machine, profile, binary, userland)


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
