"""``--out`` of the evidence commands (``edge-hub lineage receipt|checkpoint|consistency``,
``edge-hub keys export``, ``edge-agent log receipt|checkpoint|consistency``) writes a new file
or, with ``--force``, replaces a regular one, and nothing else: a device node, a FIFO, a
socket, a directory or a symlink at the path is refused in one sentence (exit 2) and left as
it was. The atomic rename would otherwise turn any of them into a regular file (as root,
``--out /dev/full`` replaced /dev/full)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.support.cli import write_out
from hub.cli.main import main as hub_main
from tests.hub_support import make_hub_dir

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _symlink(path: Path) -> None:
    target = path.with_name("target")
    target.write_bytes(b"kept")
    path.symlink_to(target)


def _dangling_symlink(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


def _directory(path: Path) -> None:
    path.mkdir()


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


def _char_device(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 7))  # a private /dev/full


NOT_FILES: list[tuple[str, Callable[[Path], None], str]] = [
    ("fifo", _fifo, "a FIFO"),
    ("symlink to a file", _symlink, "a symbolic link"),
    ("dangling symlink", _dangling_symlink, "a symbolic link"),
    ("directory", _directory, "a directory"),
    ("socket", _socket, "a socket"),
    ("character device", _char_device, "a character device"),
]


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "out"


@pytest.mark.parametrize(
    ("make", "kind"), [r[1:] for r in NOT_FILES], ids=[r[0] for r in NOT_FILES]
)
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_path_that_is_not_a_regular_file_is_refused_and_left_as_it_was(
    out: Path, make: Callable[[Path], None], kind: str, force: bool
) -> None:
    make(out)
    before = os.lstat(out)
    with pytest.raises(ConfigError, match=f"it is {kind}, not a regular file"):
        write_out(out, b"receipt", force=force)
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (
        before.st_mode,
        before.st_ino,
        before.st_rdev,
    )
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_an_existing_file_is_replaced_only_with_force(out: Path) -> None:
    out.write_bytes(b"old")
    with pytest.raises(ConfigError, match=r"exists \(add --force to replace it\)"):
        write_out(out, b"new")
    assert out.read_bytes() == b"old"
    write_out(out, b"new", force=True)
    assert out.read_bytes() == b"new"


def test_a_new_file_gets_the_mode_asked_for(out: Path) -> None:
    write_out(out, b"receipt")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    write_out(out, b"public", mode=0o644, force=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_directory_that_takes_no_new_file_is_named_as_the_reason(force: bool) -> None:
    with pytest.raises(ConfigError, match="no new file can be created in /proc"):
        write_out(Path("/proc/version"), b"receipt", force=force)


def test_bundle_build_replaces_its_file_but_refuses_a_fifo(tmp_path: Path) -> None:
    """The other ``--out`` commands (bundle build, break-glass, attest expect) replace a
    regular file with ``--force`` and refuse what is not one."""
    hub = make_hub_dir(tmp_path / "hub")
    build = ["bundle", "build", str(EXAMPLE), "--keys", str(hub.keys), "--version", "1"]
    out, fifo = tmp_path / "b1.cbor", tmp_path / "fifo"
    out.write_bytes(b"old")
    os.mkfifo(fifo)
    assert hub_main([*build, "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"old"
    assert hub_main([*build, "--out", str(fifo), "--force"]) == 2
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
