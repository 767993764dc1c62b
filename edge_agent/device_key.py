"""The device key: generated on the device at ``init``, kept in the state dir, never leaves it.

Stored as an unencrypted PKCS#8 PEM file of mode 0600, created exclusively so an existing
key is never overwritten, and whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from edge_agent.errors import StateError
from edge_agent.protocol.keys import PrivateKey, private_key_from_pem
from edge_agent.support.files import read_regular_file

__all__ = ["KEY_NAME", "create_device_key", "load_device_key", "load_or_create_device_key"]

KEY_NAME = "device.key"
MAX_KEY_FILE_BYTES = 4096


def load_or_create_device_key(state_dir: Path) -> PrivateKey:
    """The device key in ``state_dir``, generated (mode 0600) if there is none yet.

    Raises:
        StateError: the key file cannot be created or read.
    """
    created = create_device_key(state_dir)
    return created if created is not None else load_device_key(state_dir)


def create_device_key(state_dir: Path) -> PrivateKey | None:
    """Generate the device key into ``state_dir`` and return it; ``None`` when a key file is
    already there (it is kept, never overwritten).

    All or nothing: the key is written and synced under a temporary name, then linked into
    place (``link`` fails rather than replace an existing file), so a failure or a crash
    never leaves a partial key file behind.

    Raises:
        StateError: the key file cannot be written.
    """
    path = state_dir / KEY_NAME
    if path.exists():
        return None
    key = PrivateKey.generate()
    temp = state_dir / f".{KEY_NAME}.init-{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, key.to_pem().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, path)
        _fsync_dir(state_dir)
    except FileExistsError:
        return None
    except OSError as exc:
        raise StateError(f"cannot create the device key {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    return key


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_device_key(state_dir: Path) -> PrivateKey:
    """Read the device key from ``state_dir``.

    Raises:
        StateError: missing, unreadable, too large or not an Ed25519 private key.
    """
    path = state_dir / KEY_NAME
    try:
        data = read_regular_file(path, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise StateError(f"cannot read the device key {path}: {exc}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise StateError(f"the device key file {path} is too large to be a key")
    try:
        return private_key_from_pem(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"the device key file {path} is damaged: {exc}") from exc
