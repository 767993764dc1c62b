"""The trust root (``root.cbor``): which keys may sign what, with thresholds, as in TUF.

A root is a COSE_Sign object (role ``root``, scope ``""``) whose payload is::

    {"version": uint, "issued_at": uint, "expires_at": uint,
     "keys": {key_id: {"pub": bstr32, "alg": -19 | -8,
                       ? "scope": {"regions": [..], "groups": [..]}}},
     "roles": {"root" | "policy" | "freshness" | "verifier" | "revoke":
               {"keys": [key_id, ...], "threshold": uint}}}

A key id is SHA-256 of the raw public key. A key ``scope`` (policy keys) limits which bundle
targets that key may authorise; an empty list means no restriction on that axis.

Invariants: the first root is pinned on the device at ``init`` and must be signed by a
threshold of its own root keys. Root N+1 is accepted only if signed by a threshold of root
N's root keys *and* a threshold of its own, and only as exactly version N+1. This module
verifies and builds roots; it does not persist them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from edge_agent.errors import EnvelopeError, RootError
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._schema import Fields, check_name
from edge_agent.protocol.keys import KNOWN_ALGS, PrivateKey, PublicKey
from edge_agent.protocol.limits import MAX_ROOT_BYTES
from edge_agent.protocol.roles import HUB_ROLES, Role, content_type, external_aad

__all__ = [
    "KeyScope",
    "RoleKeys",
    "TrustRoot",
    "build_root_payload",
    "sign_root",
    "verify_root_chain",
    "verify_root_update",
    "verify_trusted_root",
]

MAX_ROOT_KEYS = 64


@dataclass(frozen=True, slots=True)
class KeyScope:
    """Which bundle targets a key may authorise; an empty set means any."""

    regions: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def covers(self, region: str, groups: Sequence[str]) -> bool:
        """True when a bundle for ``region`` and ``groups`` lies inside this scope.

        A group-scoped key can only authorise bundles that name groups, all inside its scope:
        a bundle that targets devices by id alone could reach any group.
        """
        if self.regions and region not in self.regions:
            return False
        return not self.groups or (bool(groups) and set(groups) <= self.groups)


@dataclass(frozen=True, slots=True)
class RoleKeys:
    """The keys of one role and how many of them must sign."""

    keys: Mapping[bytes, PublicKey]
    threshold: int


@dataclass(frozen=True, slots=True)
class TrustRoot:
    """A verified trust root, with the exact bytes it was verified from."""

    version: int
    issued_at: int
    expires_at: int
    roles: Mapping[Role, RoleKeys]
    scopes: Mapping[bytes, KeyScope]
    raw: bytes

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    def role(self, role: Role) -> RoleKeys:
        return self.roles[role]


def verify_trusted_root(data: bytes, *, now: int | None) -> TrustRoot:
    """Verify a root offered for pinning (``init``): self-signed by a root-role threshold.

    ``now`` is checked against ``expires_at`` when given (``None`` when re-loading a root
    that was verified before, so an expired root on disk still loads and the gate decides).

    Raises:
        RootError: too large, malformed, badly signed, under threshold or expired.
    """
    payload = _peek(data)
    root = _parse(payload, data)
    _require_threshold(data, root, "its own")
    if now is not None and now >= root.expires_at:
        raise RootError(f"trust root version {root.version} expired", code="root_expired")
    return root


def verify_root_update(trusted: TrustRoot, data: bytes, *, now: int | None) -> TrustRoot:
    """Verify root N+1 against the trusted root N (TUF rotation).

    Steps: 1. size cap; 2. a threshold of root N's root keys signed the received bytes;
    3. strict decode and schema; 4. a threshold of the new root's own root keys signed them;
    5. the version is exactly N+1; 6. it has not expired at ``now``.

    When step 2 fails for a well-formed root whose (unverified) version is not N+1, the
    version refusal is raised instead: a root that skips versions is usually signed by keys
    a missing root N+1 introduced, and "install N+1 first" is what the operator can act on.
    Either way the root is refused; the unverified version only chooses the sentence.

    Raises:
        RootError: any step fails; the trusted root stays as it was.
    """
    if len(data) > MAX_ROOT_BYTES:
        raise RootError(f"trust root is larger than the {MAX_ROOT_BYTES}-byte limit")
    try:
        payload = _verified_payload(data, trusted, "the current root's")
    except RootError:
        claimed = _claimed_version(data)
        if claimed is not None:
            _check_next_version(trusted, claimed, data)
        raise
    new = _parse(payload, data)
    _require_threshold(data, new, "its own")
    _check_next_version(trusted, new.version, data)
    if now is not None and now >= new.expires_at:
        raise RootError(f"trust root version {new.version} expired", code="root_expired")
    return new


def verify_root_chain(trusted: TrustRoot, chain: Sequence[bytes]) -> tuple[TrustRoot, ...]:
    """Verify ``chain`` as roots N+1, N+2, ... after ``trusted``, each against the one before
    it (:func:`verify_root_update`, expiry not checked: TUF), so that a caller can install
    all of them or none.

    Raises:
        RootError: the first link that fails, naming its place in the chain.
    """
    roots: list[TrustRoot] = []
    current = trusted
    for place, data in enumerate(chain, start=1):
        try:
            current = verify_root_update(current, data, now=None)
        except RootError as exc:
            if len(chain) == 1:
                raise
            raise RootError(
                f"root {place} of {len(chain)} refused: {exc.message}", code=exc.code
            ) from exc
        roots.append(current)
    return tuple(roots)


def _check_next_version(trusted: TrustRoot, version: int, data: bytes) -> None:
    if version == trusted.version and data != trusted.raw:
        raise RootError(
            f"trust root version {version} is already installed with different contents "
            "(conflict refused); a changed root needs the next version",
            code="root_conflict",
        )
    if version <= trusted.version:
        raise RootError(
            f"trust root version {version} is not newer than installed version "
            f"{trusted.version} (rollback refused)",
            code="root_rollback",
        )
    if version != trusted.version + 1:
        raise RootError(
            f"trust root version {version} skips versions: install version "
            f"{trusted.version + 1} first",
            code="root_gap",
        )


def _claimed_version(data: bytes) -> int | None:
    """The version an unverified root claims, or ``None`` when it is not a well-formed root
    (used only to choose which refusal to report)."""
    try:
        return _parse(_peek(data), data).version
    except RootError:
        return None


def _peek(data: bytes) -> bytes:
    try:
        return cose.peek_payload(data, max_bytes=MAX_ROOT_BYTES)
    except EnvelopeError as exc:
        raise RootError(f"not a trust root: {exc.message}") from exc


def _verified_payload(data: bytes, signer: TrustRoot, whose: str) -> bytes:
    role = signer.role(Role.ROOT)
    try:
        verified = cose.verify_sign(
            data,
            keys=role.keys,
            content_type=content_type(Role.ROOT),
            external_aad=external_aad(Role.ROOT, ""),
            max_bytes=MAX_ROOT_BYTES,
        )
    except cose.MalformedEnvelopeError as exc:
        raise RootError(f"not a trust root: {exc.message}") from exc
    except EnvelopeError as exc:
        raise RootError(f"trust root not signed by {whose} root keys: {exc.message}") from exc
    if len(verified.signer_ids) < role.threshold:
        raise RootError(
            f"trust root signed by {len(verified.signer_ids)} of {whose} root keys, "
            f"{role.threshold} required",
            code="root_threshold",
        )
    return verified.payload


def _require_threshold(data: bytes, root: TrustRoot, whose: str) -> None:
    _verified_payload(data, root, whose)


def _parse(payload: bytes, raw: bytes) -> TrustRoot:
    try:
        value = dcbor.decode(payload, max_bytes=MAX_ROOT_BYTES, what="trust root payload")
    except EnvelopeError as exc:
        raise RootError(exc.message) from exc
    fields = Fields(
        value,
        "root",
        RootError,
        required=frozenset({"version", "issued_at", "expires_at", "keys", "roles"}),
    )
    version = fields.integer("version", minimum=1)
    issued_at = fields.integer("issued_at")
    expires_at = fields.integer("expires_at")
    if expires_at <= issued_at:
        raise RootError("root.expires_at must be after root.issued_at")
    keys, scopes = _parse_keys(fields.raw("keys"))
    roles = _parse_roles(fields.raw("roles"), keys)
    return TrustRoot(version, issued_at, expires_at, roles, scopes, raw)


def _parse_keys(value: object) -> tuple[dict[bytes, PublicKey], dict[bytes, KeyScope]]:
    if not isinstance(value, dict) or not value or len(value) > MAX_ROOT_KEYS:
        raise RootError(f"root.keys must be a map of 1 to {MAX_ROOT_KEYS} keys")
    keys: dict[bytes, PublicKey] = {}
    scopes: dict[bytes, KeyScope] = {}
    for key_id, entry in value.items():
        if not isinstance(key_id, bytes):
            raise RootError("root.keys must be keyed by key id byte strings")
        fields = Fields(
            entry,
            "root.keys[]",
            RootError,
            required=frozenset({"pub", "alg"}),
            optional=frozenset({"scope"}),
        )
        alg = fields.raw("alg")
        # The type first: a list or map is unhashable, and the set lookup would raise.
        if isinstance(alg, bool) or not isinstance(alg, int) or alg not in KNOWN_ALGS:
            raise RootError(f"root key {key_id.hex()[:16]} has an unsupported algorithm {alg!r}")
        public = PublicKey(fields.byte_string("pub", length=32), alg)
        if public.key_id != key_id:
            raise RootError(f"root key id {key_id.hex()[:16]} is not the SHA-256 of its key")
        keys[key_id] = public
        if fields.has("scope"):
            scope = Fields(
                fields.raw("scope"),
                "root.keys[].scope",
                RootError,
                required=frozenset({"regions", "groups"}),
            )
            scopes[key_id] = KeyScope(
                frozenset(scope.names("regions")), frozenset(scope.names("groups"))
            )
    return keys, scopes


def _parse_roles(value: object, keys: Mapping[bytes, PublicKey]) -> dict[Role, RoleKeys]:
    names = frozenset(str(r) for r in HUB_ROLES)
    fields = Fields(value, "root.roles", RootError, required=names)
    roles: dict[Role, RoleKeys] = {}
    for role in HUB_ROLES:
        entry = Fields(
            fields.raw(str(role)),
            f"root.roles.{role}",
            RootError,
            required=frozenset({"keys", "threshold"}),
        )
        key_ids = entry.raw("keys")
        if not isinstance(key_ids, list) or not key_ids:
            raise RootError(f"root.roles.{role}.keys must list at least one key id")
        if len(set(map(_hashable, key_ids))) != len(key_ids):
            raise RootError(f"root.roles.{role}.keys lists a key twice")
        role_keys: dict[bytes, PublicKey] = {}
        for key_id in key_ids:
            if not isinstance(key_id, bytes) or key_id not in keys:
                raise RootError(f"root.roles.{role} names a key that root.keys does not hold")
            role_keys[key_id] = keys[key_id]
        threshold = entry.integer("threshold", minimum=1)
        if threshold > len(role_keys):
            raise RootError(
                f"root.roles.{role}.threshold {threshold} exceeds its {len(role_keys)} keys"
            )
        roles[role] = RoleKeys(role_keys, threshold)
    return roles


def _hashable(value: object) -> object:
    return value if isinstance(value, bytes | str | int) else repr(value)


def build_root_payload(
    *,
    version: int,
    issued_at: int,
    expires_at: int,
    roles: Mapping[Role, tuple[Sequence[PublicKey], int]],
    scopes: Mapping[bytes, KeyScope] | None = None,
) -> bytes:
    """The deterministic CBOR payload of a root listing ``roles`` (keys, threshold)."""
    scopes = scopes or {}
    keys: dict[bytes, dict[str, object]] = {}
    for role_keys, _ in roles.values():
        for key in role_keys:
            entry: dict[str, object] = {"pub": key.raw, "alg": key.alg}
            scope = scopes.get(key.key_id)
            if scope is not None:
                entry["scope"] = {"regions": sorted(scope.regions), "groups": sorted(scope.groups)}
            keys[key.key_id] = entry
    role_map = {
        str(role): {"keys": [k.key_id for k in role_keys], "threshold": threshold}
        for role, (role_keys, threshold) in roles.items()
    }
    for name in role_map:
        check_name(name, "role", RootError)
    return dcbor.encode(
        {
            "version": version,
            "issued_at": issued_at,
            "expires_at": expires_at,
            "keys": keys,
            "roles": role_map,
        }
    )


def sign_root(payload: bytes, signers: Iterable[PrivateKey]) -> bytes:
    """A COSE_Sign trust root over ``payload``, one signature per distinct signer."""
    unique = {k.public.key_id: k for k in signers}
    return cose.sign(
        payload,
        keys=list(unique.values()),
        content_type=content_type(Role.ROOT),
        external_aad=external_aad(Role.ROOT, ""),
    )
