"""The device key: generated on the device at ``init``, kept in the state dir, never leaves it.

Stored as an unencrypted PKCS#8 PEM file of mode 0600, created exclusively so an existing
key is never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.errors import StateError
from edge_agent.protocol.keys import PrivateKey, private_key_from_pem

__all__ = ["KEY_NAME", "load_device_key", "load_or_create_device_key"]

KEY_NAME = "device.key"
MAX_KEY_FILE_BYTES = 4096


def load_or_create_device_key(state_dir: Path) -> PrivateKey:
    """The device key in ``state_dir``, generated (mode 0600) if there is none yet.

    Raises:
        StateError: the key file cannot be created or read.
    """
    path = state_dir / KEY_NAME
    key = PrivateKey.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_device_key(state_dir)
    except OSError as exc:
        raise StateError(f"cannot create the device key {path}: {exc}") from exc
    try:
        os.write(fd, key.to_pem().encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def load_device_key(state_dir: Path) -> PrivateKey:
    """Read the device key from ``state_dir``.

    Raises:
        StateError: missing, unreadable, too large or not an Ed25519 private key.
    """
    path = state_dir / KEY_NAME
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise StateError(f"cannot read the device key {path}: {exc}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise StateError(f"the device key file {path} is too large to be a key")
    try:
        return private_key_from_pem(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"the device key file {path} is damaged: {exc}") from exc
