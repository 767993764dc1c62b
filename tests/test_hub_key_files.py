"""The hub's private key files: read as ``keys init`` and openssl write them without
OpenSSL, every other PEM form through ``cryptography``, with its refusals unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.errors import ConfigError
from edge_agent.protocol.keys import PrivateKey
from hub.hubdir import keys as key_files

SEED = bytes(range(32))


def _pem(key: Ed25519PrivateKey, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_a_key_file_as_keys_init_writes_it_is_read_without_cryptography(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = key_files.write_private_key(tmp_path, "policy-1", PrivateKey(SEED))
    assert written.read_bytes() == _pem(Ed25519PrivateKey.from_private_bytes(SEED))

    def refuse(path: Path, data: bytes) -> PrivateKey:
        raise AssertionError("read through cryptography")

    monkeypatch.setattr(key_files, "_load_any_pem", refuse)
    assert key_files.load_private_key(written) == PrivateKey(SEED)


@pytest.mark.parametrize(
    "text",
    [
        lambda pem: pem.replace(b"\n", b"\r\n"),
        lambda pem: b"a comment line\n" + pem,
        lambda pem: pem.rstrip(b"\n"),
    ],
    ids=["CRLF", "text before the block", "no final newline"],
)
def test_other_pem_forms_of_the_key_are_read_through_cryptography(
    tmp_path: Path, text: object
) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(text(_pem(Ed25519PrivateKey.from_private_bytes(SEED))))  # type: ignore[operator]
    assert key_files.load_private_key(path) == PrivateKey(SEED)


def test_encrypted_and_foreign_keys_are_refused_in_cryptographys_words(tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(_pem(Ed25519PrivateKey.from_private_bytes(SEED), b"secret"))
    with pytest.raises(ConfigError, match="is not an unencrypted PEM private key: "):
        key_files.load_private_key(encrypted)
    foreign = tmp_path / "x25519.pem"
    foreign.write_bytes(
        X25519PrivateKey.from_private_bytes(SEED).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="is not an Ed25519 key"):
        key_files.load_private_key(foreign)
