"""The hub's key directory: PEM key files per role, and the current trust root.

Layout (``edge-hub keys init --out DIR``)::

    DIR/root.cbor                 the current trust root (give it to devices at init)
    DIR/root-v<N>.cbor            every root version ever made
    DIR/<role>-<n>.pem            private keys, PKCS#8 PEM, mode 0600
    DIR/<role>-<n>.pub.pem        public keys, SubjectPublicKeyInfo PEM
    DIR/retired/                  keys rotated out of the root

Private keys are the same PEM format ``openssl genpkey -algorithm ed25519`` writes, so an
operator can bring keys made with other tools (``--key FILE``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.protocol.keys import PrivateKey, private_key_from_pem
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot, verify_trusted_root
from edge_agent.support.cli import write_atomic

__all__ = [
    "ROOT_FILE",
    "ensure_key_dir",
    "load_private_key",
    "load_role_keys",
    "load_root",
    "role_key_paths",
    "write_private_key",
]

ROOT_FILE = "root.cbor"
MAX_PEM_BYTES = 16 * 1024


def load_private_key(path: Path) -> PrivateKey:
    """Load an unencrypted Ed25519 private key from a PEM file.

    A file byte for byte as ``edge-hub keys init`` and ``openssl genpkey -algorithm ed25519``
    write it is read without OpenSSL (``PrivateKey.to_pem`` of the key read gives back the
    same bytes); any other is read by ``cryptography``, which accepts every PEM form of the
    key and words the errors, imported only then (it is ~10 ms of every ``bundle build``).

    Raises:
        ConfigError: unreadable, encrypted, or not an Ed25519 key.
    """
    try:
        data = path.read_bytes()[: MAX_PEM_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(f"key file {path} is too large to be a PEM key")
    try:
        written = private_key_from_pem(data.decode("ascii"))
    except ValueError:
        written = None
    if written is not None and written.to_pem().encode("ascii") == data:
        return written
    return _load_any_pem(path, data)


def _load_any_pem(path: Path, data: bytes) -> PrivateKey:
    """A PEM key file in any form ``cryptography`` reads (imported here, for such files
    only), refused with its words otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key (edgegov signs with Ed25519 only)")
    return PrivateKey(key.private_bytes_raw())


def write_private_key(directory: Path, name: str, key: PrivateKey) -> Path:
    """Write ``key`` as ``name.pem`` (0600) and its public half as ``name.pub.pem``."""
    path = directory / f"{name}.pem"
    write_atomic(path, key.to_pem().encode("ascii"), mode=0o600)
    write_atomic(directory / f"{name}.pub.pem", key.public.to_pem().encode("ascii"))
    return path


def role_key_paths(directory: Path, role: Role) -> list[Path]:
    """The private key files of ``role`` in ``directory``, in name order."""
    return sorted(p for p in directory.glob(f"{role}-*.pem") if not p.name.endswith(".pub.pem"))


def load_root(path: Path) -> TrustRoot:
    """Load and self-verify a trust root file (expiry is not checked here).

    Raises:
        ConfigError: unreadable.
        RootError: not a valid, self-signed trust root.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read trust root {path}: {exc.strerror or exc}") from exc
    return verify_trusted_root(data, now=None)


def load_role_keys(
    directory: Path | None, role: Role, root: TrustRoot, extra: Iterable[Path] = ()
) -> list[PrivateKey]:
    """The private keys of ``role`` available here that ``root`` lists for that role.

    Raises:
        ConfigError: a given key file is unreadable or is not one of the role's keys.
    """
    listed = root.role(role).keys
    keys: dict[bytes, PrivateKey] = {}
    for path in role_key_paths(directory, role) if directory is not None else []:
        key = load_private_key(path)
        if key.public.key_id in listed:
            keys[key.public.key_id] = key
    for path in extra:
        key = load_private_key(path)
        if key.public.key_id not in listed:
            raise ConfigError(
                f"{path} is not a {role} key of trust root version {root.version} "
                f"(key id {key.public.key_id.hex()[:16]})"
            )
        keys[key.public.key_id] = key
    return list(keys.values())


def ensure_key_dir(directory: Path) -> None:
    """Create ``directory`` (0700) if needed.

    Raises:
        ConfigError: it cannot be created.
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create key directory {directory}: {exc.strerror}") from exc
