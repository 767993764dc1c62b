"""Every counter of every decoded object is bounded to 0..MAX_COUNTER (2^53-1), at decode.

CBOR carries integers up to 2^64-1, SQLite stores signed 64-bit ones and JSON readers hold
2^53-1 exactly: one bound, enforced where the shared pure core decodes, so the hub and the
agent refuse the same objects, with the object's own error code, before anything is stored.
One table of (object kind, field, value) rows, each object signed for real (tests/factory.py),
as the rotation tables of python-tuf.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.errors import EdgeGovError, LineageError, StateError
from edge_agent.lineage.cli import _Layout
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.attestation import (
    NONCE_BYTES,
    AttestationResult,
    Challenge,
    Evidence,
    LineageHead,
    Verdict,
    sign_challenge,
    sign_evidence,
    sign_result,
    verify_challenge,
    verify_evidence,
    verify_result,
)
from edge_agent.protocol.bundle import BundleTarget, bundle_payload, sign_bundle, verify_bundle
from edge_agent.protocol.checkpoint import parse_checkpoint_body
from edge_agent.protocol.freshness import (
    FreshnessError,
    FreshnessToken,
    freshness_payload,
    sign_freshness,
    verify_freshness,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_COUNTER
from edge_agent.protocol.lineage_entries import Entry, Kind, decode_entry, encode_entry
from edge_agent.protocol.revocation import (
    Revocation,
    RevocationKind,
    revocation_payload,
    sign_revocation,
    verify_revocation,
)
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import sign_root, verify_trusted_root
from edge_agent.protocol.shipping import (
    Ack,
    DeviceStatus,
    LineageBatch,
    sign_ack,
    sign_batch,
    sign_status,
    verify_ack,
    verify_batch,
    verify_status,
)
from edge_agent.store import StateStore
from edge_agent.trust.clock import TimeFloor
from hub.cli.main import main as hub_main
from hub.hubdir.keys import load_role_keys, load_root
from tests.factory import DEVICE, NOW, SAMPLE_POLICY, HubSim

OUT_OF_RANGE = {"2^63": 2**63, "2^64-1": 2**64 - 1, "bound+1": MAX_COUNTER + 1, "-1": -1}
DEVICE_KEY = PrivateKey.generate()
GW = DEVICE.device_id
NONCE = bytes(NONCE_BYTES)
DIGEST = bytes(32)


def _payload_of(data: bytes) -> dict[str, object]:
    value = dcbor.decode(cose.peek_payload(data, max_bytes=1 << 23), max_bytes=1 << 23)
    assert isinstance(value, dict)
    return value


def _bundle(sim: HubSim, field: str, value: int) -> bytes:
    payload = _payload_of(sim.bundle(3, max_offline=3600))
    return sim.sign_raw(dcbor.encode({**payload, field: value}))


def _root(sim: HubSim, field: str, value: int) -> bytes:
    payload = dcbor.decode(sim.root_payload(), max_bytes=1 << 20)
    assert isinstance(payload, dict)
    if field == "roles.policy.threshold":
        payload["roles"]["policy"]["threshold"] = value
    else:
        payload[field] = value
    return sign_root(dcbor.encode(payload), sim.root_keys)


def _revocation(sim: HubSim, field: str, value: int) -> bytes:
    good = Revocation(1, NOW, RevocationKind.DEVICE, GW, "test")
    return sign_revocation(
        revocation_payload(dataclasses.replace(good, **{field: value})),
        region="eu-1",
        signers=sim.online_keys[Role.REVOKE],
    )


def _freshness(sim: HubSim, field: str, value: int) -> bytes:
    good = FreshnessToken("eu-1", "group/line-a", DIGEST, 3, NOW, NOW + 60, 0)
    return sign_freshness(
        freshness_payload(dataclasses.replace(good, **{field: value})),
        region="eu-1",
        key=sim.online_keys[Role.FRESHNESS][0],
    )


def _challenge(sim: HubSim, field: str, value: int) -> bytes:
    good = Challenge(GW, NONCE, NOW, NOW + 60)
    return sign_challenge(
        dataclasses.replace(good, **{field: value}), key=sim.online_keys[Role.VERIFIER][0]
    )


def _evidence(_: HubSim, field: str, value: int) -> bytes:
    good = Evidence(GW, NONCE, NOW, None, {}, LineageHead(0, DIGEST))
    if field == "lineage.size":
        return sign_evidence(
            dataclasses.replace(good, lineage=LineageHead(value, DIGEST)), DEVICE_KEY
        )
    return sign_evidence(dataclasses.replace(good, **{field: value}), DEVICE_KEY)


def _result(sim: HubSim, field: str, value: int) -> bytes:
    good = AttestationResult(GW, NONCE, Verdict.PASS, DIGEST, NOW, NOW + 60, "")
    return sign_result(
        dataclasses.replace(good, **{field: value}), key=sim.online_keys[Role.VERIFIER][0]
    )


def _batch(_: HubSim, field: str, value: int) -> bytes:
    good = LineageBatch(GW, 0, (b"entry",), "checkpoint")
    return sign_batch(dataclasses.replace(good, **{field: value}), DEVICE_KEY)


def _ack(sim: HubSim, field: str, value: int) -> bytes:
    good = Ack(GW, 1, DIGEST, NOW)
    return sign_ack(
        dataclasses.replace(good, **{field: value}), key=sim.online_keys[Role.FRESHNESS][0]
    )


def _status(_: HubSim, field: str, value: int) -> bytes:
    good = DeviceStatus(GW, NOW, True, 3, NOW + 60, "open", 10, 5)
    return sign_status(dataclasses.replace(good, **{field: value}), DEVICE_KEY)


@dataclass(frozen=True)
class ObjectKind:
    name: str
    fields: tuple[str, ...]
    make: Callable[[HubSim, str, int], bytes]
    verify: Callable[[HubSim, bytes], object]
    code: str
    good: Callable[[HubSim], bytes]


KINDS = [
    ObjectKind(
        "bundle",
        ("version", "issued_at", "expires_at", "max_offline"),
        _bundle,
        lambda s, d: verify_bundle(d, root=s.root(), region=DEVICE.region),
        "bundle_format",
        lambda s: _bundle(s, "version", 3),
    ),
    ObjectKind(
        "root",
        ("version", "issued_at", "expires_at", "roles.policy.threshold"),
        _root,
        lambda _, d: verify_trusted_root(d, now=NOW),
        "root_rejected",
        lambda s: _root(s, "version", 1),
    ),
    ObjectKind(
        "revocation",
        ("epoch", "issued_at"),
        _revocation,
        lambda s, d: verify_revocation(d, root=s.root(), region="eu-1"),
        "revocation_rejected",
        lambda s: _revocation(s, "epoch", 1),
    ),
    ObjectKind(
        "freshness token",
        ("bundle_version", "hub_time", "expires_at", "kill_epoch"),
        _freshness,
        lambda s, d: verify_freshness(d, root=s.root(), region="eu-1", now=NOW),
        "freshness_rejected",
        lambda s: _freshness(s, "kill_epoch", MAX_COUNTER),
    ),
    ObjectKind(
        "attestation challenge",
        ("issued_at", "expires_at"),
        _challenge,
        lambda s, d: verify_challenge(d, root=s.root(), device=GW, now=NOW),
        "attestation_rejected",
        lambda s: _challenge(s, "issued_at", NOW),
    ),
    ObjectKind(
        "attestation evidence",
        ("time", "lineage.size"),
        _evidence,
        lambda _, d: verify_evidence(d, device=GW, key=DEVICE_KEY.public),
        "attestation_rejected",
        lambda s: _evidence(s, "lineage.size", MAX_COUNTER),
    ),
    ObjectKind(
        "attestation result",
        ("issued_at", "expires_at"),
        _result,
        lambda s, d: verify_result(d, root=s.root(), device=GW),
        "attestation_rejected",
        lambda s: _result(s, "expires_at", MAX_COUNTER),
    ),
    ObjectKind(
        "lineage batch",
        ("first_seq",),
        _batch,
        lambda _, d: verify_batch(d, device=GW, key=DEVICE_KEY.public),
        "shipping_rejected",
        lambda s: _batch(s, "first_seq", MAX_COUNTER),
    ),
    ObjectKind(
        "lineage ack",
        ("acked", "hub_time"),
        _ack,
        lambda s, d: verify_ack(d, root=s.root(), device=GW),
        "shipping_rejected",
        lambda s: _ack(s, "acked", MAX_COUNTER),
    ),
    ObjectKind(
        "device status",
        ("time", "bundle_version", "expires_at", "lineage_size", "acked"),
        _status,
        lambda _, d: verify_status(d, device=GW, key=DEVICE_KEY.public),
        "shipping_rejected",
        lambda s: _status(s, "lineage_size", MAX_COUNTER),
    ),
]

ROWS = [
    pytest.param(kind, field, value, id=f"{kind.name}.{field}={label}")
    for kind in KINDS
    for field in kind.fields
    for label, value in OUT_OF_RANGE.items()
]


@pytest.fixture(scope="module")
def sim() -> HubSim:
    return HubSim()


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_counter_at_the_bound_or_in_range_is_accepted(sim: HubSim, kind: ObjectKind) -> None:
    assert kind.verify(sim, kind.good(sim)) is not None


@pytest.mark.parametrize(("kind", "field", "value"), ROWS)
def test_counter_out_of_range_is_refused_at_decode_with_the_object_code(
    sim: HubSim, kind: ObjectKind, field: str, value: int
) -> None:
    signed = kind.make(sim, field, value)

    with pytest.raises(EdgeGovError) as refused:
        kind.verify(sim, signed)

    assert refused.value.code == kind.code, refused.value
    assert field.rsplit(".", 1)[-1] in refused.value.message
    assert str(MAX_COUNTER) in refused.value.message


@pytest.mark.parametrize("version", ["9223372036854775808", "9007199254740992", "0", "٣", "07"])
def test_bundle_revocation_names_a_plain_version_within_the_bound(
    sim: HubSim, version: str
) -> None:
    signed = sign_revocation(
        revocation_payload(Revocation(1, NOW, RevocationKind.BUNDLE, version, "test")),
        region="eu-1",
        signers=sim.online_keys[Role.REVOKE],
    )

    with pytest.raises(EdgeGovError) as refused:
        verify_revocation(signed, root=sim.root(), region="eu-1")

    assert refused.value.code == "revocation_rejected"
    assert "version" in refused.value.message


def _entry_bytes(**fields: int) -> bytes:
    good = Entry(0, NOW, bytes(32), Kind.DECISION, True, "allowed", None, None, 3, None, "")
    value = cbor2.loads(encode_entry(good))
    value.update({_ENTRY_KEYS[name]: v for name, v in fields.items()})
    return cbor2.dumps(value)


_ENTRY_KEYS = {"seq": 0, "time": 1, "bundle_version": 8}


@pytest.mark.parametrize("field", sorted(_ENTRY_KEYS))
@pytest.mark.parametrize("value", list(OUT_OF_RANGE.values()), ids=list(OUT_OF_RANGE))
def test_lineage_entry_counter_out_of_range_is_refused(field: str, value: int) -> None:
    assert decode_entry(_entry_bytes(**{field: MAX_COUNTER})) is not None

    with pytest.raises(LineageError):
        decode_entry(_entry_bytes(**{field: value}))


@pytest.mark.parametrize("size", [2**63, 2**64 - 1, MAX_COUNTER + 1])
def test_checkpoint_tree_size_past_the_bound_is_refused(size: int) -> None:
    root = "A" * 43 + "="
    assert parse_checkpoint_body(f"origin\n{MAX_COUNTER}\n{root}\n").size == MAX_COUNTER

    with pytest.raises(LineageError, match="2\\^53-1"):
        parse_checkpoint_body(f"origin\n{size}\n{root}\n")


def test_freshness_token_with_a_huge_kill_epoch_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    sim = HubSim()
    init_state_dir(tmp_path / "state", DEVICE, sim.root_bytes(), NOW)
    bundle = sim.bundle(1)
    with LocalAgent.open(tmp_path / "state") as agent:
        agent.install_bundle(bundle, NOW)

        with pytest.raises(FreshnessError) as refused:
            agent.install_freshness(sim.freshness(bundle, kill_epoch=2**63), NOW)

        assert refused.value.code == "freshness_rejected"
        assert "kill_epoch" in refused.value.message
        assert agent.state.announced_epoch == 0
    with LocalAgent.open(tmp_path / "state") as reopened:
        assert reopened.state.announced_epoch == 0


def test_state_store_turns_an_integer_sqlite_cannot_hold_into_a_state_error(
    tmp_path: Path,
) -> None:
    init_state_dir(tmp_path / "state", DEVICE, HubSim().root_bytes(), NOW)
    store = StateStore.open(tmp_path / "state")
    try:
        with pytest.raises(StateError, match="cannot write"):
            store.record_freshness(
                data=None, floor=TimeFloor(NOW), generation=0, announced_epoch=2**63
            )
        assert store.load().announced_epoch == 0
    finally:
        store.close()


def test_agent_cli_refuses_a_bundle_of_version_2_63_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, state = tmp_path / "keys", tmp_path / "state"
    assert hub_main(["keys", "init", "--out", str(keys)]) == 0
    root = load_root(keys / "root.cbor")
    init_args = ["--device-id", GW, "--root", str(keys / "root.cbor"), "--region", "eu-1"]
    init_args += ["--profile", "generic-x86_64"]
    assert agent_main(["init", "--state-dir", str(state), *init_args]) == 0
    now = int(time.time())
    payload = bundle_payload(
        version=2**63,
        issued_at=now - 60,
        expires_at=now + 3600,
        target=BundleTarget(region="eu-1"),
        policy=SAMPLE_POLICY,
    )
    signers = load_role_keys(keys, Role.POLICY, root)
    (tmp_path / "huge.cbor").write_bytes(sign_bundle(payload, region="eu-1", signers=signers))
    # An earlier test's unretrieved future, collected during the command, would be logged
    # to this stderr by the handler the command installs: collect it now.
    gc.collect()
    capsys.readouterr()

    code = agent_main(["bundle", "install", str(tmp_path / "huge.cbor"), "--state-dir", str(state)])

    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("edge-agent: error: bundle.version must be an integer from 1 to")


@pytest.mark.parametrize(
    ("argv", "minimum"),
    [
        (["bundle", "build", "p.yaml", "--out", "b", "--version", "18446744073709551616"], 1),
        (["bundle", "build", "p.yaml", "--out", "b", "--version", str(2**63)], 1),
        (["bundle", "build", "p.yaml", "--out", "b", "--version", "0"], 1),
        (["revoke", "--bundle", str(2**63)], 1),
        (["revoke", "--bundle", "-1"], 1),
        (["lineage", "show", "gw-001", "--limit", str(2**64)], 0),
    ],
    ids=["build 2^64", "build 2^63", "build 0", "revoke 2^63", "revoke -1", "show limit 2^64"],
)
def test_hub_cli_refuses_an_out_of_range_number_before_doing_anything(
    argv: list[str], minimum: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        hub_main(argv)

    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert "Traceback" not in err
    assert err.splitlines()[-1].endswith(
        f"{argv[-1]!r} is not a whole number from {minimum} to {MAX_COUNTER} (2^53-1)"
    )


def test_hub_inspect_shows_an_expiry_past_year_9999_without_crashing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = HubSim()
    (tmp_path / "far.cbor").write_bytes(sim.bundle(3, expires_at=MAX_COUNTER))

    assert hub_main(["bundle", "inspect", str(tmp_path / "far.cbor")]) == 0

    assert f"expires   @{MAX_COUNTER}" in capsys.readouterr().out


def test_lineage_rows_show_a_time_past_year_9999_as_seconds() -> None:
    entry = Entry(7, MAX_COUNTER, bytes(32), Kind.BUNDLE_INSTALLED, True, "ok", detail="x")

    assert f"@{MAX_COUNTER}" in _Layout.for_width(80).row(entry)
