"""Decision receipts (RFC 9942 profile): every step holds for a real receipt, and each
tampering of the issue's matrix is refused with the failing step named."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import ReceiptError
from edge_agent.protocol import dcbor
from edge_agent.protocol.checkpoint import Checkpoint, sign_checkpoint
from edge_agent.protocol.cosignature import cosign_note
from edge_agent.protocol.keys import PrivateKey, PublicKey
from edge_agent.protocol.lineage_entries import Entry, Kind, decode_entry, encode_entry, entry_hash
from edge_agent.protocol.receipt import (
    MAX_RECEIPT_BYTES,
    ReceiptReport,
    Step,
    build_receipt,
    verify_receipt,
)
from edge_agent.protocol.roles import Role
from tests.factory import NOW
from tests.receipt_support import OTHER_DEVICE_KEY, STRANGER, ReceiptLog

LOG = ReceiptLog()
DEVICE = LOG.device.public
WITNESS = LOG.witness.public
ROOT = LOG.hub.root()
ALL_STEPS = tuple(Step)


def _steps(report: ReceiptReport) -> tuple[Step, ...]:
    return tuple(result.step for result in report.held)


@pytest.mark.parametrize("signer", ["device", "witness"])
def test_a_cosigned_receipt_with_root_and_bundle_holds_every_step(signer: str) -> None:
    key = LOG.device if signer == "device" else LOG.witness
    report = verify_receipt(
        LOG.receipt(signer=key, bundle=LOG.bundle), device_key=DEVICE, root=ROOT
    )
    assert _steps(report) == ALL_STEPS
    assert report.skipped == ()
    assert report.entry == decode_entry(LOG.entries[4])
    assert report.checkpoint.size == LOG.size and report.checkpoint.root == LOG.root()
    assert report.cosignature is not None and report.cosignature.key == WITNESS


def test_without_witness_keys_or_root_the_cosignature_and_bundle_steps_are_skipped() -> None:
    report = verify_receipt(LOG.receipt(), device_key=DEVICE)
    assert Step.COSIGNATURE not in _steps(report) and Step.BUNDLE not in _steps(report)
    assert {s.step for s in report.skipped} == {Step.COSIGNATURE, Step.BUNDLE}


def test_a_bundle_given_beside_the_receipt_counts_as_embedded() -> None:
    report = verify_receipt(LOG.receipt(), device_key=DEVICE, root=ROOT, bundle=LOG.bundle)
    assert Step.BUNDLE in _steps(report)


def test_every_leaf_of_a_tree_gets_a_receipt_that_verifies() -> None:
    log = ReceiptLog(size=13)
    for seq in range(13):
        report = verify_receipt(
            log.receipt(seq), device_key=DEVICE, witness_keys=[log.witness.public]
        )
        assert report.entry.seq == seq


# --- tampering ----------------------------------------------------------------------------


def _decode(data: bytes) -> list[Any]:
    value = cbor2.loads(data)
    return [_thaw(item) for item in value.value]


def _thaw(value: Any) -> Any:
    if isinstance(value, dict | cbor2.frozendict):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _encode(items: list[Any]) -> bytes:
    return dcbor.encode_tagged(18, items, mixed_int_keys=True)


def _edit_receipt(data: bytes, edit: Callable[[list[Any]], None]) -> bytes:
    """``data`` with its inner receipt's items edited (unprotected: no re-signing)."""
    statement = _decode(data)
    receipt = _decode(statement[1][394][0])
    edit(receipt)
    statement[1][394] = [_encode(receipt)]
    return _encode(statement)


def _edit_proof(data: bytes, edit: Callable[[list[Any]], None]) -> bytes:
    def change(receipt: list[Any]) -> None:
        proof = cbor2.loads(receipt[1][396][-1][0])
        edit(proof)
        receipt[1][396][-1] = [dcbor.encode(proof)]

    return _edit_receipt(data, change)


def _flip_entry_byte(data: bytes) -> bytes:
    statement = _decode(data)
    entry = statement[2]
    at = entry.index(b"/opt/camera")
    statement[2] = entry[:at] + b"/opt/cAmera" + entry[at + len(b"/opt/camera") :]
    return _encode(statement)


def _flip_path_hash(proof: list[Any]) -> None:
    proof[2][1] = bytes([proof[2][1][0] ^ 1]) + proof[2][1][1:]


def _replace_note(note: str) -> Callable[[bytes], bytes]:
    def edit(receipt: list[Any]) -> None:
        receipt[1][-65602] = note

    return lambda data: _edit_receipt(data, edit)


@dataclass(frozen=True)
class Tamper:
    name: str
    receipt: Callable[[], bytes]
    step: Step
    message: str
    witness_keys: tuple[PublicKey, ...] = (WITNESS,)
    root: bool = False
    device_key: PublicKey = DEVICE


_UNSIGNED_BUNDLE = LOG.hub.bundle(3, signers=[STRANGER])
_BAD_BUNDLE_LOG = ReceiptLog(hub=LOG.hub, bundle=_UNSIGNED_BUNDLE)

TAMPERS = [
    Tamper(
        "entry byte flipped",
        lambda: _flip_entry_byte(LOG.receipt()),
        Step.ROOT,
        "does not lead to the checkpoint's root",
    ),
    Tamper(
        "entry not a lineage entry",
        lambda: _encode([*_decode(LOG.receipt())[:2], b"\xa0", _decode(LOG.receipt())[3]]),
        Step.ENTRY,
        "not a lineage entry",
    ),
    Tamper(
        "wrong leaf index (unprotected)",
        lambda: _edit_proof(LOG.receipt(), lambda p: p.__setitem__(1, 3)),
        Step.INCLUSION_PATH,
        "signed headers say leaf 4",
    ),
    Tamper(
        "unprotected tree size changed",
        lambda: _edit_proof(LOG.receipt(), lambda p: p.__setitem__(0, 8)),
        Step.INCLUSION_PATH,
        "signed headers say leaf 4 of 7",
    ),
    Tamper(
        "path element flipped",
        lambda: _edit_proof(LOG.receipt(), _flip_path_hash),
        Step.ROOT,
        "does not lead to the checkpoint's root",
    ),
    Tamper(
        "path too short",
        lambda: _edit_proof(LOG.receipt(), lambda p: p[2].pop()),
        Step.INCLUSION_PATH,
        "the path has 2 hashes; leaf 4 of a tree of 7 needs 3",
    ),
    Tamper(
        "path too long",
        lambda: _edit_proof(LOG.receipt(), lambda p: p[2].append(bytes(32))),
        Step.INCLUSION_PATH,
        "the path has 4 hashes",
    ),
    Tamper(
        "checkpoint signed by another device key",
        lambda: _replace_note(LOG.note(key=OTHER_DEVICE_KEY))(LOG.receipt()),
        Step.CHECKPOINT_SIGNATURE,
        "not signed by this device key",
    ),
    Tamper(
        "receipt verified with another device's key",
        lambda: LOG.receipt(),
        Step.RECEIPT_SIGNATURE,
        "neither the device's nor a witness's",
        device_key=OTHER_DEVICE_KEY.public,
    ),
    Tamper(
        "receipt signed by a key that is not a witness",
        lambda: LOG.receipt(signer=STRANGER),
        Step.RECEIPT_SIGNATURE,
        "neither the device's nor a witness's",
    ),
    Tamper(
        "cosignature by a non-witness key",
        lambda: LOG.receipt(note=cosign_note(LOG.note(cosigned=False), STRANGER, time=NOW)),
        Step.COSIGNATURE,
        "no witness vouches",
    ),
    Tamper(
        "checkpoint the hub never cosigned (witness key given)",
        lambda: LOG.receipt(note=LOG.note(cosigned=False)),
        Step.COSIGNATURE,
        "no cosignature by witness key",
    ),
    Tamper(
        "checkpoint the hub never cosigned (root given)",
        lambda: LOG.receipt(note=LOG.note(cosigned=False)),
        Step.COSIGNATURE,
        "no cosignature by witness key",
        witness_keys=(),
        root=True,
    ),
    Tamper(
        "decision naming a bundle not signed by the policy role",
        lambda: _BAD_BUNDLE_LOG.receipt(bundle=_UNSIGNED_BUNDLE),
        Step.BUNDLE,
        "not signed by the policy role",
        root=True,
    ),
    Tamper(
        "bundle other than the one the entry names",
        lambda: LOG.receipt(bundle=LOG.hub.bundle(4)),
        Step.BUNDLE,
        "not the one the entry names",
        root=True,
    ),
    Tamper(
        "receipt signature over the root replaced",
        lambda: _edit_receipt(LOG.receipt(), lambda r: r.__setitem__(3, bytes(64))),
        Step.RECEIPT_SIGNATURE,
        "signature over the root does not verify",
    ),
    Tamper(
        "statement payload re-signed by nobody: statement signature replaced",
        lambda: _encode([*_decode(LOG.receipt())[:3], bytes(64)]),
        Step.RECEIPT_SIGNATURE,
        "signature over the entry does not verify",
    ),
    Tamper(
        "attached receipt payload",
        lambda: _edit_receipt(LOG.receipt(), lambda r: r.__setitem__(2, LOG.root())),
        Step.INCLUSION_PATH,
        "must be detached",
    ),
    Tamper("not CBOR at all", lambda: b"hello", Step.ENTRY, "not a readable receipt"),
    Tamper(
        "cosignature by the root's freshness key given as the witness",
        lambda: LOG.receipt(note=_cosigned_by(LOG.hub.online_keys[Role.FRESHNESS][0])),
        Step.COSIGNATURE,
        "is the trust root's freshness key: with a trust root, a witness key must be",
        witness_keys=(LOG.hub.online_keys[Role.FRESHNESS][0].public,),
        root=True,
    ),
    Tamper(
        "cosignature by the root's revoke key given as the witness",
        lambda: LOG.receipt(note=_cosigned_by(LOG.hub.online_keys[Role.REVOKE][0])),
        Step.COSIGNATURE,
        "is the trust root's revoke key: with a trust root, a witness key must be",
        witness_keys=(LOG.hub.online_keys[Role.REVOKE][0].public,),
        root=True,
    ),
    Tamper(
        "cosignature by the root's policy key given as the witness",
        lambda: LOG.receipt(note=_cosigned_by(LOG.hub.policy_keys[0])),
        Step.COSIGNATURE,
        "is the trust root's policy key: with a trust root, a witness key must be",
        witness_keys=(LOG.hub.policy_keys[0].public,),
        root=True,
    ),
    Tamper(
        "a witness key the root does not hold, with the root",
        lambda: LOG.receipt(note=_cosigned_by(STRANGER)),
        Step.COSIGNATURE,
        "is not in the trust root: with a trust root",
        witness_keys=(STRANGER.public,),
        root=True,
    ),
    Tamper(
        "the device cosigning its own checkpoint, its key given as the witness",
        lambda: LOG.receipt(note=_cosigned_by(LOG.device)),
        Step.COSIGNATURE,
        "a device cannot witness its own log",
        witness_keys=(DEVICE,),
    ),
    Tamper(
        "a checkpoint the device signed under a foreign origin",
        lambda: _foreign_origin_receipt("example.com/log"),
        Step.CHECKPOINT_SIGNATURE,
        "is not an edgegov device log",
    ),
    Tamper(
        "a checkpoint under a non-canonical device origin",
        lambda: _foreign_origin_receipt("edgegov/v1/device/gw-017/epoch/01"),
        Step.CHECKPOINT_SIGNATURE,
        "is not an edgegov device log",
    ),
]


def _cosigned_by(key: PrivateKey) -> str:
    return cosign_note(LOG.note(cosigned=False), key, time=NOW)


def _foreign_origin_receipt(origin: str) -> bytes:
    note = sign_checkpoint(Checkpoint(origin, LOG.size, LOG.root()), LOG.device, origin)
    return LOG.receipt(note=cosign_note(note, LOG.witness, time=NOW))


@pytest.mark.parametrize("case", TAMPERS, ids=[t.name for t in TAMPERS])
def test_tampered_receipts_are_refused_at_the_named_step(case: Tamper) -> None:
    with pytest.raises(ReceiptError, match=case.message) as caught:
        verify_receipt(
            case.receipt(),
            device_key=case.device_key,
            witness_keys=case.witness_keys,
            root=ROOT if case.root else None,
        )
    assert caught.value.step == case.step


def test_the_checkpoint_step_names_the_device_and_key_epoch_of_the_origin() -> None:
    report = verify_receipt(LOG.receipt(), device_key=DEVICE)
    detail = next(r.detail for r in report.held if r.step == Step.CHECKPOINT_SIGNATURE)
    assert detail.endswith("(device 'gw-017', key epoch 1)")


def test_the_root_alone_names_the_witness_keys() -> None:
    assert [*ROOT.role(Role.VERIFIER).keys.values()] == [WITNESS]
    report = verify_receipt(LOG.receipt(), device_key=DEVICE, root=ROOT)
    assert Step.COSIGNATURE in _steps(report)


def test_build_receipt_refuses_a_path_that_does_not_lead_to_the_checkpoint() -> None:
    with pytest.raises(ValueError, match="cannot make a receipt"):
        build_receipt(
            entry=LOG.entries[4],
            seq=4,
            tree_size=LOG.size,
            path=LOG.path(3),
            note=LOG.note(),
            signer=LOG.device,
            now=NOW,
        )


def test_build_receipt_refuses_an_entry_of_another_seq() -> None:
    with pytest.raises(ValueError, match="cannot make a receipt"):
        build_receipt(
            entry=LOG.entries[3],
            seq=4,
            tree_size=LOG.size,
            path=LOG.path(4),
            note=LOG.note(),
            signer=LOG.device,
            now=NOW,
        )


def test_a_receipt_over_the_size_cap_is_refused_before_parsing() -> None:
    with pytest.raises(ReceiptError, match="at most") as caught:
        verify_receipt(bytes(MAX_RECEIPT_BYTES + 2 * 1024 * 1024 + 64), device_key=DEVICE)
    assert caught.value.step == Step.ENTRY


def test_a_receipt_at_a_million_entries_is_under_two_kib() -> None:
    log = ReceiptLog(size=5)
    path = tuple(hashlib.sha256(bytes([i])).digest() for i in range(20))
    statement = _edit_proof(log.receipt(), lambda p: p.__setitem__(2, list(path)))
    assert len(statement) < 2048


# --- hostile bytes ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_receipt_error(data: bytes) -> None:
    with pytest.raises(ReceiptError):
        verify_receipt(data, device_key=DEVICE, witness_keys=[WITNESS])


_GOOD = LOG.receipt()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(_GOOD) - 1), st.integers(1, 255))
def test_any_changed_byte_of_a_receipt_is_refused(index: int, xor: int) -> None:
    changed = _GOOD[:index] + bytes([_GOOD[index] ^ xor]) + _GOOD[index + 1 :]
    with pytest.raises(ReceiptError):
        verify_receipt(changed, device_key=DEVICE, witness_keys=[WITNESS])


def _rejected_log(refused: bytes) -> ReceiptLog:
    """A log whose entry 2 records that the device refused the bundle ``refused``."""
    log = ReceiptLog(hub=LOG.hub, size=3)
    log.entries[2] = encode_entry(
        Entry(
            2,
            NOW + 2,
            entry_hash(log.entries[1]),
            Kind.BUNDLE_REJECTED,
            False,
            "bundle_untrusted",
            bundle_digest=hashlib.sha256(refused).digest(),
            bundle_version=9,
            detail="bundle v9 refused",
        )
    )
    return log


_FORGED = LOG.hub.bundle(9, signers=[STRANGER])
_GENUINE_REFUSED = LOG.hub.bundle(9)
_EXPIRED = LOG.hub.bundle(3, expires_at=NOW + 4)
_ISSUED_LATER = LOG.hub.bundle(3, issued_at=NOW + 3600)

BUNDLE_STEPS = [
    ("a decision under a bundle the root signed", LOG, 4, LOG.bundle, "signed by the policy role"),
    ("the bundle_installed entry of that bundle", LOG, 2, LOG.bundle, "valid at the entry's time"),
    (
        "a bundle_rejected entry with the forged bundle it refused",
        _rejected_log(_FORGED),
        2,
        _FORGED,
        "the one the device refused; it does not verify under the root (bundle_",
    ),
    (
        "a bundle_rejected entry with a signed bundle it refused for another reason",
        _rejected_log(_GENUINE_REFUSED),
        2,
        _GENUINE_REFUSED,
        "it verifies under the root (version 9): the device refused it as bundle_untrusted",
    ),
]


@pytest.mark.parametrize(
    ("log", "seq", "bundle", "detail"),
    [row[1:] for row in BUNDLE_STEPS],
    ids=[row[0] for row in BUNDLE_STEPS],
)
def test_the_bundle_step_holds_per_entry_kind(
    log: ReceiptLog, seq: int, bundle: bytes, detail: str
) -> None:
    report = verify_receipt(log.receipt(seq), device_key=DEVICE, root=ROOT, bundle=bundle)
    held = {result.step: result.detail for result in report.held}
    assert detail in held[Step.BUNDLE]


BUNDLE_FAILURES = [
    (
        "a bundle_rejected entry with a bundle other than the one it names",
        _rejected_log(_FORGED),
        2,
        LOG.bundle,
        "not the one the entry names",
    ),
    (
        "a decision logged after its bundle expired",
        ReceiptLog(hub=LOG.hub, bundle=_EXPIRED),
        4,
        _EXPIRED,
        f"had expired at the entry's time ({NOW + 4}; valid until {NOW + 4})",
    ),
    (
        "a decision logged long before its bundle was issued",
        ReceiptLog(hub=LOG.hub, bundle=_ISSUED_LATER),
        4,
        _ISSUED_LATER,
        f"is before bundle version 3 was issued ({NOW + 3600})",
    ),
    (
        "bundle_installed naming a bundle the policy role did not sign",
        ReceiptLog(hub=LOG.hub, bundle=_UNSIGNED_BUNDLE),
        2,
        _UNSIGNED_BUNDLE,
        "not signed by the policy role",
    ),
]


@pytest.mark.parametrize(
    ("log", "seq", "bundle", "message"),
    [row[1:] for row in BUNDLE_FAILURES],
    ids=[row[0] for row in BUNDLE_FAILURES],
)
def test_the_bundle_step_fails_per_entry_kind(
    log: ReceiptLog, seq: int, bundle: bytes, message: str
) -> None:
    with pytest.raises(ReceiptError, match=re.escape(message)) as caught:
        verify_receipt(log.receipt(seq), device_key=DEVICE, root=ROOT, bundle=bundle)
    assert caught.value.step == Step.BUNDLE
