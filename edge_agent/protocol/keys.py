"""Ed25519 keys as the agent holds them: raw bytes, a key id, PEM in and out without OpenSSL.

A key id is SHA-256 of the raw 32-byte public key: it names a key in the trust root and is
sent in COSE ``kid`` headers only as a hint. A public key is pinned to one COSE algorithm:
``-19`` (Ed25519, RFC 9864) by default, ``-8`` (EdDSA) only where the trust root says so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

__all__ = [
    "ALG_ED25519",
    "ALG_EDDSA",
    "PrivateKey",
    "PublicKey",
    "private_key_from_pem",
    "public_key_from_pem",
]

ALG_ED25519 = -19
ALG_EDDSA = -8
KNOWN_ALGS = frozenset({ALG_ED25519, ALG_EDDSA})

# DER prefixes of RFC 8410 SubjectPublicKeyInfo and PKCS#8 (v1) for Ed25519 (OID 1.3.101.112).
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key pinned to one COSE algorithm id."""

    raw: bytes
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        if self.alg not in KNOWN_ALGS:
            raise ValueError(f"algorithm {self.alg} is not an Ed25519 algorithm id")

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature over ``message``."""
        if len(signature) != 64:
            return False
        try:
            nacl.bindings.crypto_sign_open(signature + message, self.raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True

    def to_pem(self) -> str:
        return _pem("PUBLIC KEY", _SPKI_PREFIX + self.raw)


@dataclass(frozen=True, slots=True, repr=False)
class PrivateKey:
    """An Ed25519 signing key (its 32-byte seed). Never logged: ``repr`` hides the seed."""

    seed: bytes
    alg: int = ALG_ED25519
    _keypair: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)
    """(public key, libsodium secret key), derived once: deriving them costs as much as a
    signature, and hubs and agents sign with the same key many times."""

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 private key seed is 32 bytes")
        object.__setattr__(self, "_keypair", nacl.bindings.crypto_sign_seed_keypair(self.seed))

    def __repr__(self) -> str:
        return f"PrivateKey(key_id={self.public.key_id.hex()[:16]}…)"

    @classmethod
    def generate(cls, alg: int = ALG_ED25519) -> PrivateKey:
        return cls(bytes(nacl.signing.SigningKey.generate()), alg)

    @property
    def public(self) -> PublicKey:
        return PublicKey(self._keypair[0], self.alg)

    def sign(self, message: bytes) -> bytes:
        return nacl.bindings.crypto_sign(message, self._keypair[1])[:64]

    def to_pem(self) -> str:
        return _pem("PRIVATE KEY", _PKCS8_PREFIX + self.seed)


def _pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


def _unpem(text: str, label: str) -> bytes:
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"not a PEM {label.lower()}: no '{begin}' block")
    try:
        return base64.b64decode(text[start + len(begin) : stop].strip(), validate=False)
    except binascii.Error as exc:
        raise ValueError(f"the PEM {label.lower()} is not valid base64") from exc


def public_key_from_pem(text: str, alg: int = ALG_ED25519) -> PublicKey:
    """Read an Ed25519 SubjectPublicKeyInfo PEM (as ``openssl pkey -pubout`` writes).

    Raises:
        ValueError: not a PEM public key, or not an Ed25519 one.
    """
    der = _unpem(text, "PUBLIC KEY")
    if len(der) != 44 or not der.startswith(_SPKI_PREFIX):
        raise ValueError("the PEM public key is not an Ed25519 key")
    return PublicKey(der[len(_SPKI_PREFIX) :], alg)


def private_key_from_pem(text: str, alg: int = ALG_ED25519) -> PrivateKey:
    """Read an unencrypted Ed25519 PKCS#8 PEM (as ``openssl genpkey -algorithm ed25519``).

    Raises:
        ValueError: not an unencrypted PKCS#8 Ed25519 private key.
    """
    der = _unpem(text, "PRIVATE KEY")
    if len(der) != 48 or not der.startswith(_PKCS8_PREFIX):
        raise ValueError("the PEM private key is not an unencrypted Ed25519 PKCS#8 key")
    return PrivateKey(der[len(_PKCS8_PREFIX) :], alg)
