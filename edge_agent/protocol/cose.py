"""COSE envelopes (RFC 9052): ``COSE_Sign1`` (tag 18) and ``COSE_Sign`` (tag 98), Ed25519 only.

Every signed edgegov object travels in one of these envelopes. Verification follows one order:

1. size cap (``max_bytes``) before any parsing;
2. strict decode of the COSE structure (deterministic CBOR, the right tag, headers that are
   well-formed, at most :data:`MAX_SIGNATURES` signatures, an embedded payload);
3. header rules: the algorithm only in the protected header (of the ``COSE_Sign1`` body; of
   each ``COSE_Signature``) and Ed25519 wherever it appears (a ``COSE_Sign`` body need not
   name one, but one it names is held to the same rule), no ``crit`` anywhere (we understand
   no critical extension), a content type in the body's protected header, nothing but a
   ``kid`` in any unprotected header;
4. signatures over the exact received bytes: the ``Sig_structure`` is built from the received
   protected-header bstr and payload bstr, never from re-encoded values;
5. the algorithm a ``COSE_Sign`` body names, which signs nothing, is ``-19``, or ``-8`` only
   when a key pinned to ``-8`` is among the keys whose signatures verified (as for a
   signature's own ``alg``: ``-8`` only where a key is pinned to it).

Invariants:
- A signature counts only for a key the caller authorised (``keys``) *and* only when its
  protected ``alg`` equals that key's pinned algorithm: ``-19`` (Ed25519, RFC 9864) normally,
  ``-8`` (EdDSA) only for keys pinned to it.
- ``kid`` is a lookup, never a grant (as a TUF keyid): a signature that names a kid is
  checked against that authorised key only, and one whose kid names no authorised key is not
  counted; a signature without a kid is tried against every authorised key. So the unsigned
  kid bytes cannot be altered without the object failing, and no kid can let a forgery
  through. Work is bounded by ``MAX_SIGNATURES`` times the number of keys.
- The result names the *set* of distinct key ids whose signatures verified, so a repeated
  signature or key counts once. Thresholds are the caller's business.
- Bad bytes only ever raise :class:`EnvelopeError`; when the bytes are not a well-formed
  envelope at all (steps 1-3: too large, not CBOR, wrong tag or shape, headers that break the
  rules, no content type) it is the subclass :class:`MalformedEnvelopeError`, so callers can
  report a format fault apart from a well-formed envelope of another kind (another content
  type) or whose signatures do not verify; when no authorised key's signature verifies it
  is the subclass :class:`UnverifiedEnvelopeError`, so callers can name the scope (region,
  device) the ``external_aad`` bound, which this module does not know.

This module does not decode the payload, check any schema, count thresholds or know roles:
callers pass the content type and ``external_aad`` (``roles.content_type``,
``roles.external_aad``) and decode the returned payload bytes themselves.

There is one verification path per structure (:func:`verify_sign1`, :func:`verify_sign`);
both accept any RFC 9052 content type, so the COSE working group's published vectors, whose
content type is a CoAP Content-Format number (``0``), go through the same code as edgegov's
own media-type strings.

RFC 9942 receipts and transparent statements carry proofs in unprotected headers and may
detach their payload, which the rules above refuse. They use a separate, explicit path:
:func:`sign1_open` writes one, :func:`parse_sign1_open` decodes one as strictly (size cap,
deterministic CBOR, tag 18, an Ed25519 ``alg`` only in the protected header, no ``crit``)
but hands every header to the caller, whose profile says which labels it requires and
which it refuses, and :meth:`OpenSign1.verify` checks its signature over a payload the
caller supplies (the embedded one or, for a detached payload, the one the caller rebuilt).
Header maps there may mix positive and negative labels (private-use labels are negative).

The low-level signing helpers (:func:`sig_structure`,
:func:`sign1_with_headers`, :func:`sign_with_headers`) exist for interoperability with other
COSE implementations and those vectors. :func:`peek_payload` and :func:`signature_kids` read
an envelope without verifying it, for display and for choosing keys or scope.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from edge_agent.errors import EnvelopeError
from edge_agent.protocol import dcbor
from edge_agent.protocol.dcbor import CborValue
from edge_agent.protocol.keys import ALG_ED25519, KNOWN_ALGS, PrivateKey, PublicKey
from edge_agent.protocol.limits import MAX_HEADER_BYTES, MAX_SIGNATURES

__all__ = [
    "HEADER_ALG",
    "HEADER_CONTENT_TYPE",
    "HEADER_CRIT",
    "HEADER_KID",
    "SIGN1_TAG",
    "SIGN_TAG",
    "ContentType",
    "MalformedEnvelopeError",
    "OpenSign1",
    "Signer",
    "UnverifiedEnvelopeError",
    "Verified",
    "parse_sign1_open",
    "peek_payload",
    "sig_structure",
    "sign",
    "sign1",
    "sign1_open",
    "sign1_with_headers",
    "sign_with_headers",
    "signature_kids",
    "verify_sign",
    "verify_sign1",
]

SIGN1_TAG = 18
SIGN_TAG = 98

HEADER_ALG = 1
HEADER_CRIT = 2
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4

ContentType: TypeAlias = str | int
"""RFC 9052 label 3: a media-type string (edgegov's own) or a CoAP Content-Format number."""

_NAMES = {SIGN1_TAG: "COSE_Sign1 envelope", SIGN_TAG: "COSE_Sign envelope"}
_ALG_NAMES = {-19: "Ed25519 (-19)", -8: "EdDSA (-8)"}


class MalformedEnvelopeError(EnvelopeError):
    """The bytes are not a well-formed COSE envelope: a format fault, not a signature one."""


class UnverifiedEnvelopeError(EnvelopeError):
    """A well-formed envelope of the expected content type in which no signature by an
    authorised key verifies over these bytes and this ``external_aad``: signed by another
    key, for another scope, or altered."""


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified envelope carries: its payload and who signed it."""

    payload: bytes
    signer_ids: frozenset[bytes]
    """Key ids (``PublicKey.key_id``) whose signatures verified, each once."""
    content_type: ContentType


@dataclass(frozen=True, slots=True)
class Signer:
    """One signer of a ``COSE_Sign`` and the header maps of its ``COSE_Signature``."""

    key: PrivateKey
    protected: Mapping[int, CborValue]
    unprotected: Mapping[int, CborValue]


@dataclass(frozen=True, slots=True)
class _Headers:
    raw_protected: bytes
    protected: Mapping[object, object]
    unprotected: Mapping[object, object]


@dataclass(frozen=True, slots=True)
class _Signature:
    alg: int
    kid: bytes | None
    sign_protected: bytes | None
    """The COSE_Signature's protected bstr as received; ``None`` for a COSE_Sign1."""
    value: bytes


@dataclass(frozen=True, slots=True)
class _Envelope:
    body: _Headers
    payload: bytes
    signatures: tuple[_Signature, ...]


# --- signing -----------------------------------------------------------------------------


def sign1(
    payload: bytes,
    *,
    key: PrivateKey,
    content_type: str,
    external_aad: bytes,
    kid: bytes | None = None,
) -> bytes:
    """Sign ``payload`` as a ``COSE_Sign1`` with protected ``{alg: key.alg, ctype}``.

    ``kid`` goes into the unprotected header when given (a hint for the verifier).
    """
    unprotected: dict[int, CborValue] = {} if kid is None else {HEADER_KID: kid}
    return sign1_with_headers(
        payload,
        key=key,
        protected={HEADER_ALG: key.alg, HEADER_CONTENT_TYPE: content_type},
        unprotected=unprotected,
        external_aad=external_aad,
    )


def sign(
    payload: bytes,
    *,
    keys: Sequence[PrivateKey],
    content_type: str,
    external_aad: bytes,
) -> bytes:
    """Sign ``payload`` as a ``COSE_Sign``, one signature per key, kid = the key id.

    The body's protected header is ``{ctype}``; each signature's is ``{alg: key.alg}``.

    Raises:
        ValueError: no keys, or more than ``MAX_SIGNATURES``.
    """
    return sign_with_headers(
        payload,
        body_protected={HEADER_CONTENT_TYPE: content_type},
        body_unprotected={},
        signers=[
            Signer(key, {HEADER_ALG: key.alg}, {HEADER_KID: key.public.key_id}) for key in keys
        ],
        external_aad=external_aad,
    )


def sig_structure(
    *,
    body_protected: bytes,
    sign_protected: bytes | None,
    external_aad: bytes,
    payload: bytes,
) -> bytes:
    """The RFC 9052 section 4.4 ``Sig_structure`` bytes: what Ed25519 actually signs.

    ``sign_protected`` is ``None`` for a ``COSE_Sign1`` (context ``"Signature1"``) and the
    signer's protected-header bstr for a ``COSE_Sign`` (context ``"Signature"``).
    """
    if sign_protected is None:
        return dcbor.encode(["Signature1", body_protected, external_aad, payload])
    return dcbor.encode(["Signature", body_protected, sign_protected, external_aad, payload])


def sign1_with_headers(
    payload: bytes,
    *,
    key: PrivateKey,
    protected: Mapping[int, CborValue],
    unprotected: Mapping[int, CborValue],
    external_aad: bytes,
) -> bytes:
    """Sign a ``COSE_Sign1`` with explicit header maps (interop and published vectors).

    Raises:
        ValueError: the protected ``alg`` is not the key's pinned algorithm.
    """
    _check_signing_alg(key, protected)
    body_protected = _encode_protected(protected)
    to_sign = sig_structure(
        body_protected=body_protected,
        sign_protected=None,
        external_aad=external_aad,
        payload=payload,
    )
    return dcbor.encode_tagged(
        SIGN1_TAG, [body_protected, {**unprotected}, payload, key.sign(to_sign)]
    )


def sign_with_headers(
    payload: bytes,
    *,
    body_protected: Mapping[int, CborValue],
    body_unprotected: Mapping[int, CborValue],
    signers: Sequence[Signer],
    external_aad: bytes,
) -> bytes:
    """Sign a ``COSE_Sign`` with explicit header maps (interop and published vectors).

    Raises:
        ValueError: no signers, more than ``MAX_SIGNATURES``, or a signer whose protected
            ``alg`` is not its key's pinned algorithm.
    """
    if not 1 <= len(signers) <= MAX_SIGNATURES:
        raise ValueError(f"a COSE_Sign needs 1 to {MAX_SIGNATURES} signers, not {len(signers)}")
    raw_body = _encode_protected(body_protected)
    signatures: list[object] = []
    for signer in signers:
        _check_signing_alg(signer.key, signer.protected)
        raw_sign = _encode_protected(signer.protected)
        to_sign = sig_structure(
            body_protected=raw_body,
            sign_protected=raw_sign,
            external_aad=external_aad,
            payload=payload,
        )
        signatures.append([raw_sign, {**signer.unprotected}, signer.key.sign(to_sign)])
    unprotected: dict[int, CborValue] = {**body_unprotected}
    return dcbor.encode_tagged(SIGN_TAG, [raw_body, unprotected, payload, signatures])


def _check_signing_alg(key: PrivateKey, protected: Mapping[int, CborValue]) -> None:
    if protected.get(HEADER_ALG) != key.alg:
        raise ValueError(f"the protected alg must be the key's pinned algorithm {key.alg}")


def _encode_protected(header: Mapping[int, CborValue]) -> bytes:
    # RFC 9052 section 3: an empty protected header is the zero-length bstr, not h'a0'.
    return dcbor.encode(dict(header)) if header else b""


# --- open COSE_Sign1 (RFC 9942 receipts) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenSign1:
    """A strictly decoded ``COSE_Sign1`` whose headers the caller's profile judges.

    ``payload`` is ``None`` when detached. Nothing here is verified until :meth:`verify`.
    """

    raw_protected: bytes
    protected: Mapping[object, object]
    unprotected: Mapping[object, object]
    payload: bytes | None
    alg: int
    signature: bytes

    def verify(self, key: PublicKey, payload: bytes) -> bool:
        """True when ``signature`` is ``key``'s over ``payload`` (external_aad empty)."""
        to_verify = sig_structure(
            body_protected=self.raw_protected,
            sign_protected=None,
            external_aad=b"",
            payload=payload,
        )
        return key.verify(to_verify, self.signature)


def sign1_open(
    payload: bytes,
    *,
    key: PrivateKey,
    protected: Mapping[int, CborValue],
    unprotected: Mapping[int, CborValue],
    detached: bool = False,
) -> bytes:
    """Sign ``payload`` as a ``COSE_Sign1`` with any header labels, external_aad empty.

    With ``detached`` the payload is signed but written as nil (RFC 9052 section 2).

    Raises:
        ValueError: the protected ``alg`` is not the key's pinned algorithm, or a header
            holds a value edgegov never encodes.
    """
    _check_signing_alg(key, protected)
    body_protected = dcbor.encode(dict(protected), mixed_int_keys=True)
    to_sign = sig_structure(
        body_protected=body_protected, sign_protected=None, external_aad=b"", payload=payload
    )
    return dcbor.encode_tagged(
        SIGN1_TAG,
        [body_protected, {**unprotected}, None if detached else payload, key.sign(to_sign)],
        mixed_int_keys=True,
    )


def parse_sign1_open(
    data: bytes, *, max_bytes: int, max_protected_bytes: int, what: str
) -> OpenSign1:
    """Strictly decode a ``COSE_Sign1`` written by :func:`sign1_open`, verifying nothing.

    Raises:
        MalformedEnvelopeError: too large, not deterministic CBOR, not tag 18, not four
            items, a protected header that is not a map or over ``max_protected_bytes``,
            ``alg`` missing, unprotected or not Ed25519, ``crit`` anywhere, a payload that
            is neither a byte string nor nil, a signature that is not a byte string.
    """
    try:
        items = dcbor.as_list(
            dcbor.decode_tagged(
                data, tag=SIGN1_TAG, max_bytes=max_bytes, what=what, mixed_int_keys=True
            ),
            what,
        )
        if len(items) != 4:
            raise EnvelopeError(f"{what} must be an array of 4 items, not {len(items)}")
        raw_protected, unprotected, payload, signature = items
        if not isinstance(raw_protected, bytes) or not raw_protected:
            raise EnvelopeError(f"{what} protected header must be a non-empty byte string")
        header = f"{what} protected header"
        protected = dcbor.as_map(
            dcbor.decode(
                raw_protected, max_bytes=max_protected_bytes, what=header, mixed_int_keys=True
            ),
            header,
        )
        unprotected_map = dcbor.as_map(unprotected, f"{what} unprotected header")
        if HEADER_CRIT in protected or HEADER_CRIT in unprotected_map:
            raise EnvelopeError(f"{what} marks header parameters as critical (crit)")
        if HEADER_ALG in unprotected_map or HEADER_ALG not in protected:
            raise EnvelopeError(f"{what} must name its algorithm in the protected header only")
        alg = _protected_alg(protected, what)
        if payload is not None and not isinstance(payload, bytes):
            raise EnvelopeError(f"{what} payload must be a byte string or nil")
        if not isinstance(signature, bytes):
            raise EnvelopeError(f"{what}: the signature must be a byte string")
    except EnvelopeError as exc:
        raise MalformedEnvelopeError(exc.message) from exc
    return OpenSign1(raw_protected, protected, unprotected_map, payload, alg, signature)


# --- verification ------------------------------------------------------------------------


def verify_sign1(
    data: bytes,
    *,
    keys: Mapping[bytes, PublicKey],
    content_type: ContentType,
    external_aad: bytes,
    max_bytes: int,
) -> Verified:
    """Verify a ``COSE_Sign1`` signed by one of ``keys`` (key id -> key) for ``content_type``.

    Raises:
        EnvelopeError: too large, malformed, bad headers, wrong content type, or no
            authorised key's signature verifies over these bytes and ``external_aad``.
    """
    return _verify(data, SIGN1_TAG, keys, content_type, external_aad, max_bytes)


def verify_sign(
    data: bytes,
    *,
    keys: Mapping[bytes, PublicKey],
    content_type: ContentType,
    external_aad: bytes,
    max_bytes: int,
) -> Verified:
    """Verify a ``COSE_Sign``; return every distinct authorised key id that signed it.

    Signatures by keys not in ``keys`` (or not pinned to their alg) are not counted; the
    caller checks the threshold on ``signer_ids``.

    Raises:
        EnvelopeError: too large, malformed, more than ``MAX_SIGNATURES`` signatures, bad
            headers, wrong content type, or no signature by an authorised key verifies.
    """
    return _verify(data, SIGN_TAG, keys, content_type, external_aad, max_bytes)


def peek_payload(data: bytes, *, max_bytes: int) -> bytes:
    """The UNVERIFIED payload of a ``COSE_Sign1`` or ``COSE_Sign``, for inspection only.

    Use it to find which keys or scope apply before verifying; never act on its content.
    The structure is decoded as strictly as for verification; no signature is checked.

    Raises:
        EnvelopeError: too large, or not a well-formed ``COSE_Sign1``/``COSE_Sign``.
    """
    if len(data) > max_bytes:
        raise MalformedEnvelopeError(
            f"signed object is {len(data)} bytes, over the {max_bytes}-byte limit"
        )
    if data[:1] == b"\xd2":
        return _parse(data, SIGN1_TAG, max_bytes).payload
    if data[:2] == b"\xd8\x62":
        return _parse(data, SIGN_TAG, max_bytes).payload
    raise MalformedEnvelopeError("not a COSE_Sign1 (tag 18) or COSE_Sign (tag 98) signed object")


def signature_kids(data: bytes, *, max_bytes: int) -> tuple[bytes | None, ...]:
    """The UNVERIFIED key id hint of each signature of a ``COSE_Sign``, in order, for display.

    ``None`` stands for a signature that names no kid. The structure is decoded as strictly as
    for verification; no signature is checked, so a kid here says nothing about who signed.

    Raises:
        MalformedEnvelopeError: too large, or not a well-formed ``COSE_Sign``.
    """
    return tuple(signature.kid for signature in _parse(data, SIGN_TAG, max_bytes).signatures)


def _verify(
    data: bytes,
    tag: int,
    keys: Mapping[bytes, PublicKey],
    content_type: ContentType,
    external_aad: bytes,
    max_bytes: int,
) -> Verified:
    """Steps 1-5 of the module docstring, in that order; the caller counts thresholds."""
    envelope = _parse(data, tag, max_bytes)
    _check_content_type(envelope.body, content_type)
    signer_ids = _verified_key_ids(envelope, keys, external_aad)
    if not signer_ids:
        raise UnverifiedEnvelopeError(_no_signer_message(envelope, keys, content_type))
    _check_body_alg(envelope.body, keys, signer_ids)
    return Verified(envelope.payload, signer_ids, content_type)


def _check_body_alg(
    body: _Headers, keys: Mapping[bytes, PublicKey], signer_ids: frozenset[bytes]
) -> None:
    """Step 5. A ``COSE_Sign1`` passes by construction: its body alg is its signature's,
    which verified only under a key pinned to it."""
    if HEADER_ALG not in body.protected:
        return
    alg = _alg(body, "body")
    if alg == ALG_ED25519 or any(keys[k].alg == alg for k in signer_ids):
        return
    raise EnvelopeError(
        f"the body names algorithm {_ALG_NAMES[alg]}, accepted only where a key is pinned to "
        "it, and no key pinned to it signed this object"
    )


def _check_content_type(body: _Headers, expected: ContentType) -> None:
    if HEADER_CONTENT_TYPE not in body.protected:
        raise MalformedEnvelopeError("signed object has no content type in its protected header")
    actual = body.protected[HEADER_CONTENT_TYPE]
    # Compare types too: CBOR true must never pass for content format 1.
    if type(actual) is not type(expected) or actual != expected:
        raise EnvelopeError(
            f"signed object has content type {actual!r}, expected {expected!r}: "
            "it is a different kind of object"
        )


def _verified_key_ids(
    envelope: _Envelope, keys: Mapping[bytes, PublicKey], external_aad: bytes
) -> frozenset[bytes]:
    found: set[bytes] = set()
    for signature in envelope.signatures:
        to_verify = sig_structure(
            body_protected=envelope.body.raw_protected,
            sign_protected=signature.sign_protected,
            external_aad=external_aad,
            payload=envelope.payload,
        )
        for key_id in _candidates(signature, keys, found):
            if keys[key_id].verify(to_verify, signature.value):
                found.add(key_id)
                break
    return frozenset(found)


def _candidates(
    signature: _Signature, keys: Mapping[bytes, PublicKey], found: set[bytes]
) -> Iterator[bytes]:
    """Authorised keys pinned to the signature's alg and not yet counted: only the kid's key
    when the signature names one, every such key when it names none."""
    eligible = [k for k, key in keys.items() if key.alg == signature.alg and k not in found]
    if signature.kid is None:
        yield from eligible
    elif signature.kid in eligible:
        yield signature.kid


def _no_signer_message(
    envelope: _Envelope, keys: Mapping[bytes, PublicKey], content_type: ContentType
) -> str:
    if not keys:
        return f"no key is trusted to sign {content_type!r} objects"
    pinned = {key.alg for key in keys.values()}
    used = {signature.alg for signature in envelope.signatures}
    if not used & pinned:
        names = ", ".join(sorted(_ALG_NAMES[alg] for alg in used))
        trusted = ", ".join(sorted(_ALG_NAMES[alg] for alg in pinned))
        return f"signed with algorithm {names}, but the keys trusted for it are pinned to {trusted}"
    return (
        "signed by a key not trusted for it or for another scope, or its signed bytes were "
        "altered (no signature verifies)"
    )


# --- strict structure --------------------------------------------------------------------


def _parse(data: bytes, tag: int, max_bytes: int) -> _Envelope:
    """Steps 1-3: size cap, strict decode, header rules. No signature is checked here.

    Raises:
        MalformedEnvelopeError: any of these steps fails.
    """
    try:
        return _parse_structure(data, tag, max_bytes)
    except EnvelopeError as exc:
        raise MalformedEnvelopeError(exc.message) from exc


def _parse_structure(data: bytes, tag: int, max_bytes: int) -> _Envelope:
    what = _NAMES[tag]
    items = dcbor.as_list(dcbor.decode_tagged(data, tag=tag, max_bytes=max_bytes, what=what), what)
    if len(items) != 4:
        raise EnvelopeError(f"{what} must be an array of 4 items, not {len(items)}")
    body = _headers(items[0], items[1], "body")
    if tag == SIGN_TAG and HEADER_ALG in body.protected:
        _alg(body, "body")
    payload = items[2]
    if payload is None:
        raise EnvelopeError(f"{what} has a detached payload (nil); the payload must be embedded")
    if not isinstance(payload, bytes):
        raise EnvelopeError(f"{what} payload must be a byte string")
    signatures: tuple[_Signature, ...]
    if tag == SIGN1_TAG:
        signatures = (_signature(body, None, items[3], "signed object"),)
    else:
        signatures = _cose_signatures(items[3])
    return _Envelope(body, payload, signatures)


def _cose_signatures(value: object) -> tuple[_Signature, ...]:
    entries = dcbor.as_list(value, "COSE_Sign signatures")
    if not entries:
        raise EnvelopeError("COSE_Sign envelope carries no signature")
    if len(entries) > MAX_SIGNATURES:
        raise EnvelopeError(
            f"COSE_Sign envelope carries {len(entries)} signatures, more than the "
            f"{MAX_SIGNATURES} allowed"
        )
    signatures = []
    for index, entry in enumerate(entries):
        where = f"signature {index}"
        items = dcbor.as_list(entry, f"COSE_Sign {where}")
        if len(items) != 3:
            raise EnvelopeError(f"COSE_Sign {where} must be an array of 3 items")
        headers = _headers(items[0], items[1], where)
        signatures.append(_signature(headers, headers.raw_protected, items[2], where))
    return tuple(signatures)


def _signature(
    headers: _Headers, sign_protected: bytes | None, value: object, where: str
) -> _Signature:
    if HEADER_ALG not in headers.protected:
        raise EnvelopeError(f"{where} has no algorithm (alg) in its protected header")
    alg = _alg(headers, where)
    if not isinstance(value, bytes):
        raise EnvelopeError(f"{where}: the signature must be a byte string")
    kid = headers.protected.get(HEADER_KID, headers.unprotected.get(HEADER_KID))
    if kid is not None and not isinstance(kid, bytes):
        raise EnvelopeError(f"{where} key id (kid) must be a byte string")
    return _Signature(alg, kid, sign_protected, value)


def _alg(headers: _Headers, where: str) -> int:
    """The protected ``alg`` of ``headers``, which must be Ed25519 (``-19`` or ``-8``)."""
    return _protected_alg(headers.protected, where)


def _protected_alg(protected: Mapping[object, object], where: str) -> int:
    """The ``alg`` of a protected header map holding one, which must be Ed25519."""
    alg = protected[HEADER_ALG]
    if isinstance(alg, bool) or not isinstance(alg, int) or alg not in KNOWN_ALGS:
        raise EnvelopeError(f"{where} uses algorithm {alg!r}; only Ed25519 (-19, -8) is accepted")
    return alg


def _headers(raw_protected: object, unprotected: object, where: str) -> _Headers:
    if not isinstance(raw_protected, bytes):
        raise EnvelopeError(f"{where} protected header must be a byte string")
    protected = _decode_protected(raw_protected, where)
    unprotected_map = dcbor.as_map(unprotected, f"{where} unprotected header")
    for header in (protected, unprotected_map):
        if any(not isinstance(label, int | str) for label in header):
            raise EnvelopeError(f"{where} header labels must be integers or text")
    if HEADER_CRIT in protected or HEADER_CRIT in unprotected_map:
        raise EnvelopeError(
            f"{where} marks header parameters as critical (crit); this device understands none"
        )
    if HEADER_ALG in unprotected_map:
        raise EnvelopeError(
            f"{where} has its algorithm in the unprotected header; it must be protected"
        )
    if HEADER_CONTENT_TYPE in unprotected_map:
        raise EnvelopeError(
            f"{where} has its content type in the unprotected header; it must be protected"
        )
    others = sorted(str(label) for label in unprotected_map if label != HEADER_KID)
    if others:
        # Anyone can rewrite unprotected headers; we act on none but the kid hint, so carrying
        # anything else there is refused rather than silently passed along.
        raise EnvelopeError(
            f"{where} unprotected header carries label(s) {', '.join(others)}; "
            "only a key id (kid) hint may be unprotected"
        )
    if HEADER_KID in protected and HEADER_KID in unprotected_map:
        raise EnvelopeError(
            f"{where} has a key id (kid) in both the protected and unprotected header"
        )
    return _Headers(raw_protected, protected, unprotected_map)


def _decode_protected(raw: bytes, where: str) -> Mapping[object, object]:
    if not raw:
        return {}
    value = dcbor.decode(raw, max_bytes=MAX_HEADER_BYTES, what=f"{where} protected header")
    return dcbor.as_map(value, f"{where} protected header")
