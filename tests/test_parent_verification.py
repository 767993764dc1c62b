"""Parent verification: a receipt cited as a parent, judged against the held directory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge_agent.protocol import checkpoint, lineage_entries, receipt
from edge_agent.protocol.directory import Directory, DirectoryDevice
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, entry_hash
from edge_agent.protocol.request import Parent
from edge_agent.trust.parent import (
    MAX_PARENT_CLOCK_SKEW_S,
    MAX_PARENT_RECEIPT_BYTES,
    VerifiedParents,
    verify_parent,
)
from tests.ancestry_support import (
    CAMERA,
    CAMERA_KEY,
    OUTSIDER_KEY,
    PARENT_REQUEST,
    PLC,
    PLC_KEY,
    DeviceLog,
    devices,
    verified_directory,
)
from tests.factory import DAY, NOW, HubSim

HUB = HubSim()
DIRECTORY = verified_directory(HUB, version=4)


def _camera() -> DeviceLog:
    log = DeviceLog(CAMERA, CAMERA_KEY)
    log.append(time=NOW - 50)
    return log


def _valid() -> bytes:
    log = _camera()
    seq = log.append(time=NOW - 5)
    return log.receipt(seq)


def _tampered() -> bytes:
    data = bytearray(_valid())
    at = data.index(b"model://vision/v3")
    data[at] ^= 0x01
    return bytes(data)


def _by_outsider_key() -> bytes:
    log = _camera()
    seq = log.append()
    return log.receipt(seq, signer=OUTSIDER_KEY)


def _unlisted_device() -> bytes:
    log = DeviceLog("gw-unknown-77", PrivateKey(bytes(range(160, 192))))
    return log.receipt(log.append())


def _old_epoch() -> bytes:
    log = DeviceLog(CAMERA, CAMERA_KEY, epoch=2)
    return log.receipt(log.append())


def _deny() -> bytes:
    log = _camera()
    return log.receipt(log.append(allowed=False))


def _transition() -> bytes:
    log = _camera()
    return log.receipt(log.append(kind=Kind.BUNDLE_INSTALLED))


def _from_the_future() -> bytes:
    log = _camera()
    return log.receipt(log.append(time=NOW + MAX_PARENT_CLOCK_SKEW_S + 1))


def _within_skew() -> bytes:
    log = _camera()
    return log.receipt(log.append(time=NOW + MAX_PARENT_CLOCK_SKEW_S))


def _old() -> bytes:
    log = _camera()
    return log.receipt(log.append(time=NOW - 3 * DAY))


def _grandchild() -> bytes:
    """A receipt of a decision that itself cited a verified parent of depth 1."""
    parent = verify_parent(_valid(), DIRECTORY, NOW)
    log = DeviceLog(PLC, PLC_KEY)
    return log.receipt(log.append(parent=parent))


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    fragment: str = ""
    """Empty: the parent verifies; else a fragment of the refusal."""
    directory: Directory | None = DIRECTORY
    now: int = NOW


CASES = [
    Case("a fresh allow on a listed device", _valid),
    Case("an allow at the edge of the clock skew", _within_skew),
    Case("an old allow: verified, its age is the policy's", _old),
    Case("a tampered entry", _tampered, "does not verify (root)"),
    Case("signed by another device's key", _by_outsider_key, "checkpoint_signature"),
    Case("from a device not in the directory", _unlisted_device, "is no device of directory"),
    Case("under a key epoch the directory does not list", _old_epoch, "is no device of"),
    Case("a deny as parent", _deny, "was denied (policy_denied)"),
    Case("a trust transition as parent", _transition, "not a decision"),
    Case("from the future", _from_the_future, "in the future"),
    Case("garbage", lambda: b"\x00garbage", "does not verify (entry)"),
    Case("empty", lambda: b"", "does not verify"),
    Case("over the size bound", lambda: b"\x00" * (MAX_PARENT_RECEIPT_BYTES + 1), "over"),
    Case("no directory held", _valid, "holds no device directory", directory=None),
    Case("an expired directory", _valid, "expired", now=NOW + DAY + 1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_parent_verifies_only_as_an_allow_of_a_listed_device(case: Case) -> None:
    parent = verify_parent(case.make(), case.directory, case.now)
    version = case.directory.version if case.directory is not None else None
    assert parent.directory_version == version
    if not case.fragment:
        assert parent.facts is not None, parent.refusal
        assert parent.facts.device == CAMERA
        assert parent.facts.groups == ("cameras",)
        assert parent.facts.action == PARENT_REQUEST.action
        assert parent.facts.depth == 1
        return
    assert parent.facts is None
    assert parent.refusal.startswith("parent refused: ")
    assert case.fragment in parent.refusal


def test_facts_name_the_exact_entry_and_its_leaf_hash() -> None:
    log = _camera()
    seq = log.append(time=NOW - 7)
    parent = verify_parent(log.receipt(seq), DIRECTORY, NOW)
    assert parent.facts is not None
    assert (parent.facts.seq, parent.facts.time) == (seq, NOW - 7)
    assert parent.facts.leaf_hash == entry_hash(log.entries[seq])
    assert parent.facts.resource == PARENT_REQUEST.resource
    assert parent.facts.subject == PARENT_REQUEST.subject


def test_depth_is_the_parents_own_depth_plus_one() -> None:
    parent = verify_parent(_grandchild(), DIRECTORY, NOW)
    assert parent.facts is not None, parent.refusal
    assert parent.facts.depth == 2


def test_a_re_keyed_device_no_longer_verifies_its_old_receipts() -> None:
    rekeyed = [
        d if d.id != CAMERA else DirectoryDevice(CAMERA, CAMERA_KEY.public, 2, d.groups)
        for d in devices()
    ]
    directory = verified_directory(HUB, version=5, listed=rekeyed)
    assert verify_parent(_valid(), directory, NOW).facts is None
    assert verify_parent(_old_epoch(), directory, NOW).facts is not None


def test_the_same_receipt_gives_the_same_outcome_every_time() -> None:
    data = _valid()
    assert verify_parent(data, DIRECTORY, NOW) == verify_parent(data, DIRECTORY, NOW)
    assert isinstance(verify_parent(data, DIRECTORY, NOW), Parent)


CACHE = VerifiedParents()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_cache_gives_the_same_outcome_first_and_again(case: Case) -> None:
    data = case.make()
    plain = verify_parent(data, case.directory, case.now)
    assert verify_parent(data, case.directory, case.now, cache=CACHE) == plain
    assert verify_parent(data, case.directory, case.now, cache=CACHE) == plain


def test_a_cached_parent_is_still_judged_against_the_time_of_each_decision() -> None:
    cache = VerifiedParents()
    log = _camera()
    data = log.receipt(log.append(time=NOW + MAX_PARENT_CLOCK_SKEW_S + 10))
    assert verify_parent(data, DIRECTORY, NOW + 10, cache=cache).facts is not None
    assert "in the future" in verify_parent(data, DIRECTORY, NOW, cache=cache).refusal
    expired = verify_parent(data, DIRECTORY, NOW + DAY + 1, cache=cache)
    assert "expired" in expired.refusal


def test_a_parent_receipt_is_read_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path reads the checkpoint note once (split and parsed), decodes the entry
    once and never re-encodes it: the leaf hash is the one taken over the bytes received."""
    data = _valid()
    calls: Counter[str] = Counter()

    def counted(module: object, name: str) -> None:
        original = getattr(module, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(checkpoint, "split_note")
    counted(receipt, "split_note")
    counted(checkpoint, "parse_checkpoint_body")
    counted(receipt, "parse_checkpoint_body")
    counted(lineage_entries, "encode_entry")
    counted(lineage_entries, "draft_of")
    parent = verify_parent(data, DIRECTORY, NOW)
    assert parent.facts is not None, parent.refusal
    assert calls == Counter({"split_note": 1, "parse_checkpoint_body": 1})


def test_the_receipt_report_carries_the_leaf_hash_of_the_bytes_received() -> None:
    log = _camera()
    seq = log.append(time=NOW - 7)
    report = receipt.verify_device_receipt(
        log.receipt(seq), device_key=lambda origin: CAMERA_KEY.public
    )
    assert report.leaf_hash == entry_hash(log.entries[seq])
    assert report.held[1].detail == report.leaf_hash.hex()
