"""Firmware profiles: every shipped one loads and measures here; bad ones stop the agent.

Where a measured file does not exist on this machine (the packaged agent, a Pi's boot
partition), the test lays it out in a fixture root; files that do exist are copied from the
machine, so real ones are measured where possible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from edge_agent.attest.config import AttestationConfig, open_attestor
from edge_agent.attest.measure import CHUNK_BYTES, FileFactProvider
from edge_agent.attest.profile import load_profile
from edge_agent.errors import ConfigError
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.firmware_profile import parse_profile
from tests.attest_support import PROFILE_TOML, make_root, small_profile, write_profile

PROFILES = Path(__file__).resolve().parent.parent / "firmware_profiles"
SHIPPED = sorted(p.stem for p in PROFILES.glob("*.toml"))
DEVICE = DeviceIdentity("gw-001", "eu-1", ("line-a",), "generic-x86_64")


def _fixture_root(root: Path, paths: list[str]) -> Path:
    """Every measured path present under ``root``: copied from this machine when it exists
    here, invented otherwise."""
    make_root(root)
    for path in paths:
        target = root / path.lstrip("/")
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(path).is_file():
            shutil.copyfile(path, target)
        elif path.endswith("_internal"):
            (target / "lib").mkdir(parents=True)
            (target / "lib/libpython3.11.so").write_bytes(b"\x7fELF" * 100)
            os.symlink("lib/libpython3.11.so", target / "libpython.so")
        else:
            target.write_bytes(f"fixture for {path}\n".encode())
    return root


def test_the_three_profiles_the_issue_names_are_shipped() -> None:
    assert {"generic-x86_64", "generic-arm64", "raspberry-pi-4"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_profile_loads_and_measures_on_this_machine(tmp_path: Path, name: str) -> None:
    profile = load_profile(PROFILES / f"{name}.toml")
    assert profile.name == name
    paths = [m.file or m.tree or "" for m in profile.measure if m.kind != "fact"]
    measured = FileFactProvider(profile, _fixture_root(tmp_path / "root", paths)).measure()
    assert measured.errors == ()
    assert [m.name for m in measured.items] == [m.name for m in profile.measure]
    assert all(m.digest is not None and len(m.digest) == 32 for m in measured.items)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_profile_comments_every_field(name: str) -> None:
    """Every setting outside the [[measure]] tables has a comment right above it, and the
    comment before the first [[measure]] explains each key a measure table may use."""
    text = (PROFILES / f"{name}.toml").read_text()
    head, _, _ = text.partition("\n[[measure]]")
    lines = head.splitlines()
    for index, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[index - 1].startswith("#"), f"{line!r} has no comment above it"
    block = head.rsplit("\n\n", 1)[-1]
    for key in ("`name`", "`file`", "`tree`", "`fact`", "`scope`", "`description`"):
        assert key in block


BAD_PROFILES = [
    ("unknown field", 'flavour = "x"\n' + PROFILE_TOML, "flavour: Extra inputs are not permitted"),
    ("not TOML", "name = \n", "is not valid TOML"),
    (
        "wrong type",
        'name = "p"\narchitecture = "x86_64"\nreattest_interval_s = "1m"\n',
        "reattest_interval_s",
    ),
    ("unknown architecture", PROFILE_TOML.replace('"x86_64"', '"sparc"'), "architecture"),
    ("interval out of range", PROFILE_TOML.replace("= {interval}", "= 0"), "reattest_interval_s"),
    (
        "no measurements",
        PROFILE_TOML.split("[[measure]]")[0] + "measure = []\n",
        "measure",
    ),
    (
        "two sources",
        PROFILE_TOML.replace('fact = "kernel_release"', 'fact = "kernel_release"\nfile = "/x"'),
        "exactly one of file, tree or fact",
    ),
    (
        "relative path",
        PROFILE_TOML.replace('"/etc/os-release"', '"etc/os-release"'),
        "absolute path",
    ),
    (
        "unknown fact",
        PROFILE_TOML.replace('"kernel_release"', '"cpu_temperature"'),
        "measure.3.fact",
    ),
    ("bad measure name", PROFILE_TOML.replace('"os-release"', '"OS release"'), "measure.2.name"),
    (
        "duplicate names",
        PROFILE_TOML.replace('"agent-config"', '"agent-binary"'),
        "agent-binary given more than once",
    ),
    ("unknown scope", PROFILE_TOML.replace('scope = "device"', 'scope = "fleet"'), "scope"),
]


@pytest.mark.parametrize(("text", "words"), [pytest.param(t, w, id=i) for i, t, w in BAD_PROFILES])
def test_malformed_profiles_give_a_clear_error(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=r"the firmware profile bad\.toml") as caught:
        parse_profile(text.format(name="p", interval=1).encode(), "bad.toml")
    assert words in str(caught.value)


def test_an_unreadable_or_oversized_profile_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the firmware profile"):
        load_profile(tmp_path / "missing.toml")
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 70_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_profile(big)


def _config(profile: Path, root: Path) -> AttestationConfig:
    return AttestationConfig(profile_file=str(profile), measure_root=str(root))


def test_the_agent_refuses_to_start_when_a_measured_file_is_unreadable(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    (root / "etc/edge-agent/agent.toml").unlink()
    profile = write_profile(tmp_path / "p.toml")
    with pytest.raises(ConfigError, match=r"cannot be measured here: agent-config .*agent\.toml"):
        open_attestor(_config(profile, root), DEVICE, machine="x86_64")


def test_the_agent_refuses_a_profile_for_another_device_class_or_architecture(
    tmp_path: Path,
) -> None:
    root = make_root(tmp_path / "root")
    other = write_profile(tmp_path / "other.toml", name="raspberry-pi-4")
    with pytest.raises(ConfigError, match="describes 'raspberry-pi-4'"):
        open_attestor(_config(other, root), DEVICE, machine="x86_64")
    mine = write_profile(tmp_path / "mine.toml")
    with pytest.raises(ConfigError, match="is for x86_64, but this machine is aarch64"):
        open_attestor(_config(mine, root), DEVICE, machine="aarch64")
    attestor = open_attestor(_config(mine, root), DEVICE, machine="amd64")
    assert attestor is not None and attestor.first.errors == ()


def test_without_a_profile_the_agent_runs_but_measures_nothing(tmp_path: Path) -> None:
    config = AttestationConfig(profile_dir=str(tmp_path))
    assert open_attestor(config, DEVICE) is None
    write_profile(tmp_path / "generic-x86_64.toml")
    with pytest.raises(ConfigError, match="cannot be measured"):
        open_attestor(config, DEVICE, machine="x86_64")


def test_a_change_is_seen_even_when_size_and_mtime_are_restored(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    provider = FileFactProvider(small_profile(), root)
    before = provider.measure()
    assert provider.measure() == before
    binary = root / "opt/edge-agent/edge-agent"
    stat = binary.stat()
    binary.write_bytes(binary.read_bytes().replace(b"fake", b"evil"))
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = provider.measure()
    changed = [a.name for a, b in zip(after.items, before.items, strict=True) if a != b]
    assert changed == ["agent-binary"]


def test_limits_and_odd_files_become_item_errors_not_crashes(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    text = (
        PROFILE_TOML.format(name="generic-x86_64", interval=1) + "[limits]\nmax_file_bytes = 100\n"
    )
    measured = FileFactProvider(parse_profile(text.encode(), "t"), root).measure()
    assert any("over the profile's max_file_bytes" in e for e in measured.errors)
    (root / "etc/os-release").unlink()
    os.mkfifo(root / "etc/os-release")
    measured = FileFactProvider(small_profile(), root).measure()
    assert [e.split(" ")[0] for e in measured.errors] == ["os-release"]
    (root / "etc/machine-id").write_text("not-a-machine-id\n")
    assert "machine-id" in " ".join(FileFactProvider(small_profile(), root).measure().errors)


def test_a_file_is_hashed_whole_in_reads_below_mallocs_mmap_threshold(tmp_path: Path) -> None:
    """Small reads keep the idle agent's heap small (a 1 MiB read buffer stayed resident);
    a file many chunks long still gets the digest of all its bytes."""
    assert CHUNK_BYTES <= 128 * 1024
    root = make_root(tmp_path / "root")
    content = os.urandom(3 * CHUNK_BYTES + 1)
    (root / "opt/edge-agent/edge-agent").write_bytes(content)
    measured = FileFactProvider(small_profile(), root).measure()
    assert measured.digests["agent-binary"] == hashlib.sha256(content).digest()
