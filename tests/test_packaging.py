"""The self-contained agent and its .deb: they run with no Python anywhere and install cleanly.

CI builds the binary: the module fixture runs ``packaging/build.sh``, which sets up its build
venv from nothing and keeps an existing build only when nothing that goes into it changed.
Every run of the built agent happens in a sandbox where the machine has no Python: a private
mount namespace (``unshare``) with every interpreter's standard library, every ``libpython``
and every venv hidden, ``env -i`` and an empty ``PATH``. The sandbox proves itself first:
each Python it hides must fail to start inside it.

The story and the daemon run once more confined as systemd/edge-agent.service confines them
(``packaging/run-confined.py``: its SystemCallFilter=, RestrictAddressFamilies= and
MemoryDenyWriteExecute=yes as the same kernel filters), the evidence that the unit's hardening,
``MemoryDenyWriteExecute=yes`` included, leaves the agent working.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import shlex
import signal
import socket
import stat
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import aiomqtt
import pytest

from edge_agent import __version__
from edge_agent.protocol.settings import parse
from edge_agent.protocol.topics import DeviceLeaf, device_topic
from edge_agent.sync.config import AgentConfig
from hub.cli.main import main as hub_main
from tests.brokers import amqtt_broker
from tests.receipt_support import ReceiptLog
from tests.socket_helpers import enrolled_state, public_dir, serving
from tests.system_tools import require

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "packaging" / "build.sh"
CONFINE = ROOT / "packaging" / "run-confined.py"
AGENT_UNIT = ROOT / "systemd" / "edge-agent.service"
BINARY = ROOT / "dist" / "edge-agent" / "edge-agent"
EXAMPLE_POLICY = ROOT / "examples" / "policy.yaml"
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 60
STATUS_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
TIMING_RUNS = 7
SYSTEM_LIBDIRS = {"/usr/lib", "/usr/local/lib", "/lib", "/usr/lib64", "/lib64"}


@dataclass(frozen=True)
class Build:
    binary: Path
    deb: Path


@pytest.fixture(scope="module")
def build() -> Build:
    require("strip", "binutils")
    require("dpkg-deb", "dpkg")
    result = subprocess.run(
        [str(BUILD_SCRIPT)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"packaging/build.sh failed:\n{result.stdout}{result.stderr}"
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    debs = sorted((ROOT / "dist").glob(f"edge-agent_*_{arch}.deb"))
    assert len(debs) == 1, debs
    return Build(BINARY, debs[0])


def _python_hideouts() -> tuple[list[str], list[str]]:
    """Directories and files to hide so that no Python can run: stdlibs, libpythons, venvs."""
    dirs = set(glob.glob("/usr/lib/python3*") + glob.glob("/usr/local/lib/python3*"))
    dirs |= {sys.prefix, str(ROOT / "build" / "venv"), str(Path.home() / ".pyenv")}
    dirs |= {os.environ.get("PYENV_ROOT", "/nonexistent")}
    for name in ("stdlib", "platstdlib"):
        dirs.add(sysconfig.get_paths()[name])
    libdir = str(sysconfig.get_config_var("LIBDIR"))
    files = set(glob.glob("/usr/lib/*/libpython3*") + glob.glob("/usr/local/lib/libpython3*"))
    if libdir in SYSTEM_LIBDIRS or libdir.startswith("/usr/lib/"):
        files |= set(glob.glob(f"{libdir}/libpython3*"))
    else:
        dirs.add(libdir)
    # Deepest first: a directory inside another hidden one must be covered before its parent.
    existing = sorted((d for d in dirs if os.path.isdir(d)), key=lambda d: (-d.count("/"), d))
    return existing, sorted({os.path.realpath(f) for f in files if os.path.isfile(f)})


def _sandboxed(
    argv: Sequence[str], *, confined: bool = False, env: Mapping[str, str] | None = None
) -> list[str]:
    """``argv`` run on a machine that, as far as it can see, has no Python at all; or, when
    ``confined``, under the unit's seccomp filters (Python stays visible: it loads them).
    Either way the environment is empty but for ``PATH=/nonexistent`` and ``env``."""
    environment = ["env", "-i", "PATH=/nonexistent", *(f"{k}={v}" for k, v in (env or {}).items())]
    if confined:
        return [sys.executable, str(CONFINE), str(AGENT_UNIT), *environment, *argv]
    dirs, files = _python_hideouts()
    mounts = [f"mount --bind /dev/null {shlex.quote(f)}" for f in files]
    mounts += [f"mount -t tmpfs -o size=64k,mode=0755 no-python {shlex.quote(d)}" for d in dirs]
    script = "set -e; " + "; ".join(mounts) + '; exec "$@"'
    command = ["unshare", "--map-root-user", "--mount", "--propagation", "private"]
    return [*command, "sh", "-c", script, "sh", *environment, *argv]


def _agent(
    cwd: Path, *args: str, confined: bool = False, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        _sandboxed([str(BINARY), *args], confined=confined),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == expect, (args, result.stdout, result.stderr)
    return result


def _hub_keys_and_bundle(tmp_path: Path) -> None:
    assert hub_main(["keys", "init", "--out", str(tmp_path / "keys")]) == 0
    build = ["bundle", "build", str(EXAMPLE_POLICY), "--keys", str(tmp_path / "keys")]
    assert hub_main([*build, "--version", "1", "--out", str(tmp_path / "bundle.cbor")]) == 0


def _init_args(*extra: str) -> list[str]:
    return [
        "init",
        "--state-dir",
        "state",
        "--device-id",
        "gw-001",
        "--root",
        "keys/root.cbor",
        "--region",
        "eu-1",
        "--group",
        "line-a",
        "--profile",
        "generic-x86_64",
        *extra,
    ]


def _decide(cwd: Path, resource: str, *, confined: bool, expect: int) -> dict[str, object]:
    result = _agent(
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
        confined=confined,
        expect=expect,
    )
    decision: dict[str, object] = json.loads(result.stdout)
    return decision


def test_build_is_onedir_and_carries_the_native_parts(build: Build) -> None:
    internal = build.binary.parent / "_internal"
    patterns = [
        "nacl/_sodium*.so",
        "_cffi_backend*.so",
        "cbor2/_cbor2*.so",
        "python3*/lib-dynload/_sqlite3*.so",
        "libpython3*.so*",
    ]
    for pattern in patterns:
        assert list(internal.glob(pattern)), f"{pattern} missing from {internal}"
    # The agent's config and firmware profiles are checked without pydantic (phase 2 of
    # docs/performance-profile.md): nothing the agent imports brings it, so it is not shipped.
    assert not list(internal.glob("pydantic*")), f"pydantic is bundled in {internal}"
    launcher_bytes = build.binary.stat().st_size
    assert launcher_bytes < 5_000_000, "the launcher holds the runtime: a onefile build?"


def test_frozen_exec_gate_fails_closed_without_an_agent_and_runs_nothing(
    build: Build, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    gate = build.binary.parent / "edge-agent-exec"
    command = [str(gate), "--socket", str(tmp_path / "no-agent.sock"), "--"]
    result = subprocess.run(
        _sandboxed([*command, "/usr/bin/touch", str(marker)]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 126, (result.stdout, result.stderr)
    assert "agent" in result.stderr and not marker.exists()


def test_frozen_edge_verify_checks_a_receipt_with_no_python_on_the_machine(
    build: Build, tmp_path: Path
) -> None:
    log = ReceiptLog()
    (tmp_path / "r.receipt").write_bytes(log.receipt(4))
    (tmp_path / "gw.pub").write_text(log.device.public.to_pem())
    (tmp_path / "hub.pub").write_text(log.witness.public.to_pem())
    verify = build.binary.parent / "edge-verify"
    command = [str(verify), "receipt", "r.receipt", "--device-key", "gw.pub"]
    result = subprocess.run(
        _sandboxed([*command, "--witness-key", "hub.pub"]),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "VERIFIED" in result.stdout


def test_the_frozen_gate_hands_the_program_the_callers_environment(build: Build) -> None:
    gate = build.binary.parent / "edge-agent-exec"
    with public_dir() as directory:
        show = directory / "bin" / "show-env"
        show.parent.mkdir()
        show.write_text("#!/bin/sh\nexec env\n")
        show.chmod(0o755)
        rule = {
            "id": "show-env",
            "effect": "allow",
            "subjects": ["uid:0"],
            "actions": ["exec"],
            "resources": [str(show)],
        }
        state = enrolled_state(directory / "state", [rule])
        sock = directory / "agent.sock"
        caller = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/caller/lib", "KEEP": "me"}
        with serving(state, sock):
            result = subprocess.run(
                [str(gate), "--socket", str(sock), "--", str(show)],
                env=caller,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
    assert result.returncode == 0, result.stderr
    program = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert {k: program.get(k) for k in caller} == caller
    assert [k for k in program if k.startswith("_PYI") or k == "LD_LIBRARY_PATH_ORIG"] == []


def test_the_deb_launcher_sends_exec_to_the_lean_gate_and_the_rest_to_the_agent(
    tmp_path: Path,
) -> None:
    launcher = (ROOT / "packaging" / "deb" / "edge-agent").read_text()
    opt = tmp_path / "opt" / "edge-agent"
    opt.mkdir(parents=True)
    for name in ("edge-agent", "edge-agent-exec"):
        (opt / name).write_text(f'#!/bin/sh\necho "{name} args=$*"\n')
        (opt / name).chmod(0o755)
    script = tmp_path / "launcher"
    script.write_text(launcher.replace("/opt/edge-agent", str(opt)))
    script.chmod(0o755)
    gate = subprocess.run([str(script), "exec", "--", "/bin/true", "a b"], capture_output=True)
    full = subprocess.run([str(script), "status", "--json"], capture_output=True)
    assert gate.stdout.decode().startswith("edge-agent-exec ")
    assert gate.stdout.decode().rstrip().endswith("args=-- /bin/true a b")
    assert full.stdout.decode().startswith("edge-agent ")
    assert full.stdout.decode().rstrip().endswith("args=status --json")


def test_sandbox_leaves_no_python_that_can_start(tmp_path: Path) -> None:
    interpreters = {sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"}
    for interpreter in sorted(i for i in interpreters if os.path.exists(i)):
        result = subprocess.run(
            _sandboxed([interpreter, "-c", "pass"]),
            cwd=tmp_path,
            capture_output=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert result.returncode != 0, f"{interpreter} still starts inside the sandbox"


@pytest.mark.parametrize("confined", [False, True], ids=["no-python", "confined-as-the-unit"])
def test_built_agent_does_the_offline_story_with_no_python(
    build: Build, tmp_path: Path, confined: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    _hub_keys_and_bundle(tmp_path)
    assert "enrolled gw-001" in _agent(tmp_path, *_init_args(), confined=confined).stdout
    tampered = bytearray((tmp_path / "bundle.cbor").read_bytes())
    tampered[-10] ^= 0x01
    (tmp_path / "tampered.cbor").write_bytes(bytes(tampered))
    _agent(
        tmp_path,
        "bundle",
        "install",
        "tampered.cbor",
        "--state-dir",
        "state",
        confined=confined,
        expect=1,
    )
    installed = _agent(
        tmp_path, "bundle", "install", "bundle.cbor", "--state-dir", "state", confined=confined
    )
    assert "bundle version 1 installed" in installed.stdout

    allowed = _decide(tmp_path, "/opt/camera/bin/capture", confined=confined, expect=0)
    assert (allowed["decision"], allowed["rule"]) == ("allow", "camera-exec")
    denied = _decide(tmp_path, "/bin/sh", confined=confined, expect=1)
    assert (denied["decision"], denied["reason"]) == ("deny", "policy_denied")

    status = json.loads(
        _agent(tmp_path, "status", "--state-dir", "state", "--json", confined=confined).stdout
    )
    assert (status["gate"], status["bundle"]["version"]) == ("open", 1)
    assert (
        "lineage OK"
        in _agent(tmp_path, "log", "verify", "--state-dir", "state", confined=confined).stdout
    )
    if not confined:
        with capsys.disabled():
            _print_figures(build, tmp_path)


def _print_figures(build: Build, state_parent: Path) -> None:
    """Size and start-up time of the build, printed for the CI log (not asserted)."""
    size = sum(p.stat().st_size for p in build.binary.parent.rglob("*") if p.is_file())
    lines = [
        f"edge-agent build: {size / 1e6:.1f} MB in dist/edge-agent/, "
        f".deb {build.deb.stat().st_size / 1e6:.1f} MB"
    ]
    for label, args in (
        ("--version", ["--version"]),
        ("status", ["status", "--state-dir", "state"]),
    ):
        times = []
        for _ in range(TIMING_RUNS):
            started = time.perf_counter()
            subprocess.run(
                ["env", "-i", "PATH=/nonexistent", str(build.binary), *args],
                cwd=state_parent,
                capture_output=True,
                check=True,
            )
            times.append((time.perf_counter() - started) * 1000)
        lines.append(
            f"edge-agent {label}: median {statistics.median(times):.0f} ms "
            f"(min {min(times):.0f}, max {max(times):.0f}, {TIMING_RUNS} runs)"
        )
    print("\n" + "\n".join(lines))


async def _notifications(notify: socket.socket, until: str) -> list[str]:
    """Datagrams from the agent up to and including the first that starts with ``until``."""
    loop = asyncio.get_running_loop()
    received: list[str] = []
    async with asyncio.timeout(STATUS_TIMEOUT_S):
        while not received or not received[-1].startswith(until):
            received.append((await loop.sock_recv(notify, 4096)).decode())
    return received


@pytest.mark.asyncio
@pytest.mark.parametrize("confined", [False, True], ids=["no-python", "confined-as-the-unit"])
async def test_built_agent_daemon_notifies_systemd_and_syncs_with_a_broker(
    build: Build, tmp_path: Path, confined: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    _hub_keys_and_bundle(tmp_path)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    systemd_env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    run = ["run", "--state-dir", "state", "--socket", "agent.sock"]
    async with amqtt_broker() as broker:
        _agent(tmp_path, *_init_args("--broker", broker.url), confined=confined)
        _agent(tmp_path, "bundle", "install", "bundle.cbor", "--state-dir", "state")
        topic = device_topic("eu-1", "gw-001", DeviceLeaf.STATUS)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="packaging-test") as watcher:
            await watcher.subscribe(topic, qos=1)
            started = time.perf_counter()
            agent = await asyncio.create_subprocess_exec(
                *_sandboxed([str(BINARY), *run], confined=confined, env=systemd_env),
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                ready = (await _notifications(notify, "READY=1"))[-1]
                ready_ms = (time.perf_counter() - started) * 1000
                assert "STATUS=bundle v1, expires in " in ready and "; gate open" in ready
                assert (tmp_path / "agent.sock").is_socket()
                await _notifications(notify, "WATCHDOG=1")
                async with asyncio.timeout(STATUS_TIMEOUT_S):
                    message = await anext(aiter(watcher.messages))
                assert str(message.topic) == topic
                assert isinstance(message.payload, bytes) and message.payload
            finally:
                agent.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        _, stderr = await agent.communicate()
                except TimeoutError:
                    agent.kill()
                    _, stderr = await agent.communicate()
            assert agent.returncode == 0, stderr.decode()
            assert await _notifications(notify, "STOPPING=1")
    notify.close()
    if not confined:
        with capsys.disabled():
            print(f"\nedge-agent run: exec to READY=1 {ready_ms:.0f} ms (sandboxed, one run)")


# --- the .deb ------------------------------------------------------------------------------


def _deb_members(deb: Path, tmp_path: Path) -> dict[str, tarfile.TarInfo]:
    data = tmp_path / "data.tar"
    with data.open("wb") as out:
        subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=out, check=True)
    with tarfile.open(data) as archive:
        return {m.name.removeprefix("."): m for m in archive.getmembers()}


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_deb_is_named_and_described_for_this_version_and_architecture(build: Build) -> None:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert build.deb.name == f"edge-agent_{__version__}_{arch}.deb"
    assert _field(build.deb, "Package") == "edge-agent"
    assert _field(build.deb, "Version") == __version__
    assert _field(build.deb, "Architecture") == arch
    depends = _field(build.deb, "Depends")
    assert "systemd" in depends and "libc6 (>= " in depends
    assert "python" not in depends.lower()


def test_deb_ships_the_agent_config_unit_and_system_files_with_root_ownership(
    build: Build, tmp_path: Path
) -> None:
    members = _deb_members(build.deb, tmp_path)
    expected_modes = {
        "/opt/edge-agent/edge-agent": 0o755,
        "/etc/edge-agent": 0o750,
        "/etc/edge-agent/agent.toml": 0o640,
        "/usr/lib/systemd/system/edge-agent.service": 0o644,
        "/usr/lib/sysusers.d/edge-agent.conf": 0o644,
        "/usr/lib/tmpfiles.d/edge-agent.conf": 0o644,
        "/usr/share/doc/edge-agent/deploy.md": 0o644,
        "/usr/share/doc/edge-agent/copyright": 0o644,
    }
    for path, mode in expected_modes.items():
        assert path in members, path
        assert stat.S_IMODE(members[path].mode) == mode, path
    launcher = members["/usr/bin/edge-agent"]
    assert launcher.isfile() and stat.S_IMODE(launcher.mode) == 0o755
    assert "/opt/edge-agent/edge-agent-exec" in members
    assert "/opt/edge-agent/edge-verify" in members
    assert members["/usr/bin/edge-verify"].linkname == "/opt/edge-agent/edge-verify"
    assert {(m.uname, m.gname) for m in members.values()} == {("root", "root")}
    assert not [p for p, m in members.items() if m.mode & (stat.S_ISUID | stat.S_ISGID)]
    assert not [p for p, m in members.items() if m.mode & stat.S_IWOTH and not m.issym()]
    shipped = (ROOT / "systemd" / "edge-agent.service").read_text()
    assert _extracted(build.deb, tmp_path, "/usr/lib/systemd/system/edge-agent.service") == shipped
    profiles = sorted(p.name for p in (ROOT / "firmware_profiles").glob("*.toml"))
    assert len(profiles) >= 3
    prefix = "/etc/edge-agent/firmware_profiles/"
    assert (
        sorted(p.removeprefix(prefix) for p in members if p.startswith(prefix) and p != prefix)
        == profiles
    )
    conffiles = subprocess.run(
        ["dpkg-deb", "-I", str(build.deb), "conffiles"], capture_output=True, text=True
    ).stdout.split()
    assert conffiles == ["/etc/edge-agent/agent.toml", *(prefix + p for p in profiles)]


def test_deb_ships_completion_and_man_pages_for_the_agent_and_edge_verify(
    build: Build, tmp_path: Path
) -> None:
    members = _deb_members(build.deb, tmp_path)
    for tool in ("edge-agent", "edge-verify"):
        for path in (
            f"/usr/share/bash-completion/completions/{tool}",
            f"/usr/share/zsh/vendor-completions/_{tool}",
            f"/usr/share/fish/vendor_completions.d/{tool}.fish",
            f"/usr/share/man/man1/{tool}.1.gz",
        ):
            assert path in members, path
            assert members[path].isfile() and stat.S_IMODE(members[path].mode) == 0o644, path
    assert not [p for p in members if "edge-hub" in p], "the agent's package ships no hub"
    man = require("man", "man-db")
    target = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(build.deb), str(target)], check=True)
    page = target / "usr/share/man/man1/edge-agent.1.gz"
    rendered = subprocess.run(
        [man, "-l", str(page)],
        env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert rendered.stderr == "" and rendered.stdout.startswith("EDGE-AGENT(1)"), rendered.stderr


def _extracted(deb: Path, tmp_path: Path, path: str) -> str:
    target = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return (target / path.lstrip("/")).read_text()


def test_deb_agent_runs_from_where_the_package_puts_it(build: Build, tmp_path: Path) -> None:
    target = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(build.deb), str(target)], check=True)
    result = subprocess.run(
        _sandboxed([str(target / "opt/edge-agent/edge-agent"), "--version"]),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=True,
    )
    assert result.stdout.strip() == f"edge-agent {__version__}"


def test_shipped_config_is_empty_as_shipped_and_valid_when_uncommented() -> None:
    text = (ROOT / "packaging" / "deb" / "agent.toml").read_text()
    assert tomllib.loads(text) == {}
    setting = re.compile(r"^#(?=\[|[a-z_]+ = )")
    uncommented = tomllib.loads("\n".join(setting.sub("", line) for line in text.splitlines()))
    known = {k: v for k, v in uncommented.items() if k in {f.name for f in fields(AgentConfig)}}
    parse(AgentConfig, known)
    assert {"broker", "sync", "lineage", "socket"} <= set(known)
    # [log] mirrors --log-format, which the command line reads.
    assert set(uncommented) - set(known) <= {"log"}


# --- installing into a scratch root with the real dpkg ------------------------------------


@pytest.fixture
def scratch_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    for sub in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "usr/lib/systemd/system"):
        (root / sub).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    for target in ("multi-user.target", "network-online.target"):
        (root / "usr/lib/systemd/system" / target).write_text("[Unit]\n")
    yield root


def _dpkg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dpkg on ``root``: maintainer scripts run unchrooted with DPKG_ROOT set, as they must."""
    result = subprocess.run(
        ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _ids(root: Path, database: str, name: str) -> tuple[int, ...] | None:
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return tuple(int(f) for f in fields[2:4] if f.isdigit())
    return None


def _owner_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_install_creates_the_user_and_directories_with_their_owners_and_modes(
    build: Build, scratch_root: Path
) -> None:
    _dpkg(scratch_root, "--install", str(build.deb))
    user = _ids(scratch_root, "passwd", "edge-agent")
    assert user is not None
    uid, gid = user
    clients = _ids(scratch_root, "group", "edge-agent-clients")
    assert clients is not None
    passwd_line = next(
        line
        for line in (scratch_root / "etc/passwd").read_text().splitlines()
        if line.startswith("edge-agent:")
    )
    assert passwd_line.endswith(":/var/lib/edge-agent:/usr/sbin/nologin")
    assert _owner_mode(scratch_root / "etc/edge-agent") == (0, gid, 0o750)
    assert _owner_mode(scratch_root / "etc/edge-agent/agent.toml") == (0, gid, 0o640)
    assert _owner_mode(scratch_root / "var/lib/edge-agent") == (uid, gid, 0o700)
    assert _owner_mode(scratch_root / "run/edge-agent") == (uid, gid, 0o755)
    assert not (scratch_root / "etc/systemd/system/multi-user.target.wants").exists()

    _dpkg(scratch_root, "--install", str(build.deb))
    assert _ids(scratch_root, "passwd", "edge-agent") == (uid, gid)


def test_remove_disables_and_purge_keeps_the_lineage(build: Build, scratch_root: Path) -> None:
    _dpkg(scratch_root, "--install", str(build.deb))
    subprocess.run(
        ["systemctl", f"--root={scratch_root}", "--quiet", "enable", "edge-agent.service"],
        check=True,
        capture_output=True,
    )
    wants = scratch_root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert wants.is_symlink()
    lineage = scratch_root / "var/lib/edge-agent/lineage.db"
    lineage.write_bytes(b"evidence")

    _dpkg(scratch_root, "--remove", "edge-agent")
    assert not wants.is_symlink()
    assert not (scratch_root / "opt/edge-agent").exists()
    assert (scratch_root / "etc/edge-agent/agent.toml").exists()

    purged = _dpkg(scratch_root, "--purge", "edge-agent")
    assert not (scratch_root / "etc/edge-agent").exists()
    assert lineage.read_bytes() == b"evidence"
    assert "kept /var/lib/edge-agent" in purged.stderr
