"""Every decoder that takes bytes from outside, as one table of fuzz targets.

A target is ``run(data)``: it hands ``data`` to one decoder, in the fixed world of
:mod:`tests.fuzz.world`, and checks what comes back. The property every target holds:

    ``run`` returns, or raises one of the target's ``expected`` errors (our own
    :class:`~edge_agent.errors.EdgeGovError` tree, or the error type the decoder documents);
    any other exception, an ``AssertionError`` of an oracle included, is a finding.

Objects that decide trust come in two targets each:

- ``<name>``: the bytes are the whole signed object. Whatever verifies must carry a payload
  this world signed (:func:`_signed_only`): no change to a signed object's bytes may smuggle
  in a payload nobody signed. Changing its unsigned parts (dropping a ``kid`` hint or one
  of more signatures than the threshold needs) may still verify, with the signed payload.
- ``<name>-signed``: the bytes are a *payload*, signed for real with the world's keys before
  it is verified, so the fuzzer reaches the schema checks behind the signature. What is
  accepted must agree with the payload read by an independent decoder (plain cbor2): the
  region, device, version, epoch or expiry that decided acceptance are the payload's, and
  nothing expired or meant for another device or region is accepted.

To add a target: write ``run`` and ``seeds`` (real objects from the world, a few edge
cases) and add a :class:`Target` row to :data:`TARGETS`; then regenerate the seed corpus
(``python -m tests.fuzz.make_corpus``). The quick test and the runner pick it up from here.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cbor2

from edge_agent.errors import EdgeGovError
from edge_agent.policy.bundle import compile_for_device
from edge_agent.policy.compiler import CompiledPolicy
from edge_agent.policy.engine import evaluate
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol import cose, dcbor
from edge_agent.protocol._device_scoped import device_aad
from edge_agent.protocol.attestation import (
    CHALLENGE_CONTENT_TYPE,
    EVIDENCE_CONTENT_TYPE,
    RESULT_CONTENT_TYPE,
    Verdict,
    verify_challenge,
    verify_evidence,
    verify_result,
)
from edge_agent.protocol.bundle import VerifiedBundle, sign_bundle
from edge_agent.protocol.checkpoint import sign_note, verify_checkpoint
from edge_agent.protocol.expectations import parse_expectations
from edge_agent.protocol.freshness import sign_freshness, verify_freshness
from edge_agent.protocol.lineage_entries import decode_entry
from edge_agent.protocol.lineage_export import (
    MAX_HEADER_BYTES,
    ExportHeader,
    decode_header,
    encode_header,
    verify_export,
)
from edge_agent.protocol.request import Request
from edge_agent.protocol.revocation import sign_revocation, verify_revocation
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import sign_root, verify_root_update, verify_trusted_root
from edge_agent.protocol.shipping import (
    BATCH_CONTENT_TYPE,
    verify_ack,
    verify_batch,
    verify_status,
)
from edge_agent.socket import _cbor, wire
from edge_agent.support.lineage_files import read_export
from edge_agent.support.mqtt import Incoming
from edge_agent.sync.config import load_config
from tests.factory import DAY
from tests.fuzz.world import DEVICE, NOW, key, payload_of, world

__all__ = ["TARGETS", "Target", "by_name"]

REGION = DEVICE.region
DEVICE_ID = DEVICE.device_id
MAX_PEEK_BYTES = 1 << 23


@dataclass(frozen=True)
class Target:
    """One decoder under fuzzing: what it reads, how to run it, what it may raise."""

    name: str
    what: str
    run: Callable[[bytes], object]
    seeds: Callable[[], list[bytes]]
    expected: tuple[type[BaseException], ...] = (EdgeGovError,)

    def check(self, data: bytes) -> None:
        """Run ``data``; an expected error is a pass, anything else propagates."""
        try:
            self.run(data)
        except self.expected:
            return


# --- helpers ---------------------------------------------------------------------------------


def _raw(payload: bytes) -> Mapping[object, object]:
    """The payload as an independent decoder (plain cbor2) reads it."""
    value = cbor2.loads(payload)
    assert isinstance(value, dict), "an accepted payload is a map"
    return value


def _signed_only(name: str, seeds: Callable[[], list[bytes]]) -> Callable[[bytes], None]:
    """An oracle for the raw target ``name``: anything that verifies carries a payload the
    world signed."""

    @cache
    def signed() -> frozenset[bytes]:
        return frozenset(_digest(data) for data in seeds())

    def check(data: bytes) -> None:
        assert _digest(data) in signed(), f"{name}: verified a payload nobody signed"

    return check


def _digest(data: bytes) -> bytes:
    try:
        return hashlib.sha256(payload_of(data)).digest()
    except EdgeGovError:
        return b""


def _edge_cases(valid: bytes) -> list[bytes]:
    """Truncations and small changes of a valid object, and a few non-objects."""
    return [b"", b"\x00", b"\xa0", b"\xd8\x62\x80", valid[: len(valid) // 2], valid + b"\x00"]


def _signed_pair(
    name: str,
    what: str,
    verify: Callable[[bytes], object],
    sign: Callable[[bytes], bytes],
    seeds: Callable[[], list[bytes]],
    agrees: Callable[[object, Mapping[object, object]], None],
    expected: tuple[type[BaseException], ...] = (EdgeGovError,),
) -> tuple[Target, Target]:
    """The raw target and the ``-signed`` target of one kind of signed object."""
    only_signed = _signed_only(name, seeds)

    def run_raw(data: bytes) -> object:
        value = verify(data)
        only_signed(data)
        return value

    def run_signed(payload: bytes) -> object:
        value = verify(sign(payload))
        agrees(value, _raw(payload))
        return value

    def payload_seeds() -> list[bytes]:
        return [payload_of(data) for data in seeds()] + [b"\xa0", dcbor.encode({"version": 1})]

    return (
        Target(name, what, run_raw, lambda: seeds() + _edge_cases(seeds()[0]), expected),
        Target(f"{name}-signed", f"{what} (payload, signed for real)", run_signed, payload_seeds),
    )


# --- deterministic CBOR --------------------------------------------------------------------


def _dcbor(data: bytes) -> object:
    """What the strict decoder accepts is exactly the canonical form of what it holds."""
    value = dcbor.decode(data, max_bytes=1 << 16)
    assert dcbor.encode(value) == data, "dcbor accepted bytes that are not their own encoding"
    assert cbor2.loads(data) == value, "dcbor and cbor2 read the same bytes differently"
    return value


def _dcbor_seeds() -> list[bytes]:
    w = world()
    return [
        payload_of(w.hub.bundle(1)),
        payload_of(w.result()),
        w.entries[0],
        dcbor.encode([0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -(2**63)]),
        cbor2.dumps([-(2**64), 2**64]),
        dcbor.encode({1: b"", 2: None, 3: True, 4: [[], {}]}),
    ]


# --- trust root ------------------------------------------------------------------------------


def _root_seeds() -> list[bytes]:
    hub = world().hub
    return [
        hub.root_bytes(),
        hub.root_bytes(version=2),
        hub.root_bytes(version=2, policy_keys=[key("policy-1")]),
    ]


def _verify_root_update(data: bytes) -> object:
    return verify_root_update(world().root, data, now=NOW)


_pinned_signed_only = _signed_only("root-pinned", _root_seeds)


def _verify_pinned_root(data: bytes) -> object:
    value = verify_trusted_root(data, now=NOW)
    _pinned_signed_only(data)
    return value


def _root_agrees(value: object, raw: Mapping[object, object]) -> None:
    assert getattr(value, "version", None) == raw.get("version") == world().root.version + 1


def _sign_root(payload: bytes) -> bytes:
    return sign_root(payload, world().hub.root_keys)


# --- bundle ----------------------------------------------------------------------------------


def _bundle_seeds() -> list[bytes]:
    hub = world().hub
    expectations = {
        "profiles": {"generic-x86_64": {"measurements": {"agent": [b"\x11" * 32]}}},
    }
    return [
        hub.bundle(1),
        hub.bundle(2, max_offline=3600),
        hub.bundle(3, attestation=expectations),
        hub.bundle(4, issued_at=NOW - 2 * DAY, expires_at=NOW - DAY),
    ]


def _verify_bundle(data: bytes) -> object:
    return compile_for_device(data, root=world().root, device=DEVICE, installed=None, now=NOW)


def _bundle_agrees(value: object, raw: Mapping[object, object]) -> None:
    assert isinstance(value, VerifiedBundle)
    target = raw.get("target")
    assert isinstance(target, dict) and target.get("region") == REGION, "bundle for eu-1 only"
    assert value.version == raw.get("version")
    expires_at = raw.get("expires_at")
    assert value.expires_at == expires_at
    assert isinstance(expires_at, int) and expires_at > NOW, "an expired bundle was accepted"
    _targets_device(target)
    policy = raw.get("policy")
    assert isinstance(policy, dict)
    rules = [r for r in policy.get("rules") or [] if isinstance(r, dict)]
    for request in _PROBES:
        _decides_as_written(value.policy, rules, request)


_PROBES = (
    Request("svc:camera", "exec", "/opt/camera/bin/capture"),
    Request("svc:camera", "exec", "/bin/sh"),
    Request("svc:thermo", "read", "/data/line/1", (("zone", "plant-a"),)),
    Request("svc:camera", "write", "/etc/passwd"),
)
"""Requests every accepted bundle is asked, to compare its decisions with its rules."""


def _decides_as_written(
    policy: CompiledPolicy, rules: list[dict[object, object]], request: Request
) -> None:
    """An allow comes from an allow rule naming the action; a deny rule that names the
    request outright (anyone, its action, its exact resource, no condition) wins."""
    match = evaluate(policy, request, NOW)
    if not match.allowed:
        return
    deciding = [r for r in rules if r.get("id") == match.rule_id]
    assert deciding, f"an allow by rule {match.rule_id!r}, which the payload does not hold"
    assert deciding[0].get("effect") == "allow", "an allow by a rule that is not an allow rule"
    actions = deciding[0].get("actions") or []
    assert request.action in actions or "*" in actions, "an allow for an action not named"
    for rule in rules:
        outright = (
            rule.get("effect") == "deny"
            and "*" in (rule.get("subjects") or [])
            and request.action in (rule.get("actions") or [])
            and request.resource in (rule.get("resources") or [])
            and not rule.get("when")
        )
        assert not outright, f"deny rule {rule.get('id')!r} names the request, yet it is allowed"


def _targets_device(target: Mapping[object, object]) -> None:
    """The device must be named by every non-empty list of the target (DESIGN section 2)."""
    for key_name, mine in (
        ("devices", DEVICE.device_id),
        ("profiles", DEVICE.profile),
    ):
        named = target.get(key_name) or []
        assert not named or mine in named, f"a bundle whose {key_name} miss the device"
    groups = target.get("groups") or []
    assert not groups or set(groups) & set(DEVICE.groups), "a bundle for other groups"


def _sign_bundle(payload: bytes) -> bytes:
    return sign_bundle(payload, region=REGION, signers=world().hub.policy_keys)


# --- revocation, freshness -------------------------------------------------------------------


def _revocation_seeds() -> list[bytes]:
    hub = world().hub
    return [
        hub.revocation(1),
        hub.revocation(2, "group", "line-a"),
        hub.revocation(3, "bundle", "7"),
        hub.revocation(4, "region", REGION),
    ]


def _verify_revocation(data: bytes) -> object:
    return verify_revocation(data, root=world().root, region=REGION)


def _revocation_agrees(value: object, raw: Mapping[object, object]) -> None:
    epoch = raw.get("epoch")
    assert getattr(value, "epoch", None) == epoch and isinstance(epoch, int) and epoch > 0
    assert str(getattr(value, "kind", "")) == raw.get("kind")
    assert getattr(value, "value", None) == raw.get("value")


def _sign_revocation(payload: bytes) -> bytes:
    return sign_revocation(payload, region=REGION, signers=world().hub.online_keys[Role.REVOKE])


def _freshness_seeds() -> list[bytes]:
    hub = world().hub
    bundle = hub.bundle(1)
    return [hub.freshness(bundle), hub.freshness(bundle, kill_epoch=3, ttl=3600)]


def _verify_freshness(data: bytes) -> object:
    return verify_freshness(data, root=world().root, region=REGION, now=NOW)


def _freshness_agrees(value: object, raw: Mapping[object, object]) -> None:
    assert raw.get("region") == REGION == getattr(value, "region", None)
    expires_at = raw.get("expires_at")
    assert isinstance(expires_at, int) and expires_at > NOW, "an expired token was accepted"
    for name in ("bundle_digest", "bundle_version", "hub_time", "kill_epoch"):
        assert getattr(value, name, None) == raw.get(name), f"token {name} differs from payload"


def _sign_freshness(payload: bytes) -> bytes:
    return sign_freshness(payload, region=REGION, key=world().hub.online_keys[Role.FRESHNESS][0])


# --- attestation -----------------------------------------------------------------------------


def _verifier_sign1(content_type: str, kind: str) -> Callable[[bytes], bytes]:
    def sign(payload: bytes) -> bytes:
        return cose.sign1(
            payload,
            key=world().hub.online_keys[Role.VERIFIER][0],
            content_type=content_type,
            external_aad=device_aad(Role.VERIFIER, kind, DEVICE_ID),
        )

    return sign


def _device_sign1(content_type: str, kind: str) -> Callable[[bytes], bytes]:
    def sign(payload: bytes) -> bytes:
        return cose.sign1(
            payload,
            key=world().device_key,
            content_type=content_type,
            external_aad=device_aad(Role.DEVICE, kind, DEVICE_ID),
        )

    return sign


def _same_device(value: object, raw: Mapping[object, object]) -> None:
    assert raw.get("device") == DEVICE_ID == getattr(value, "device", None), "another device"


def _challenge_agrees(value: object, raw: Mapping[object, object]) -> None:
    _same_device(value, raw)
    expires_at = raw.get("expires_at")
    assert isinstance(expires_at, int) and expires_at > NOW, "an expired challenge was accepted"
    assert getattr(value, "nonce", None) == raw.get("nonce")


def _result_agrees(value: object, raw: Mapping[object, object]) -> None:
    _same_device(value, raw)
    verdict = getattr(value, "verdict", None)
    assert verdict is not None and str(verdict) == raw.get("verdict")
    assert getattr(value, "passed", None) is (raw.get("verdict") == "pass")
    assert getattr(value, "expires_at", None) == raw.get("expires_at")


def _verify_challenge(data: bytes) -> object:
    return verify_challenge(data, root=world().root, device=DEVICE_ID, now=NOW)


def _verify_evidence(data: bytes) -> object:
    return verify_evidence(data, device=DEVICE_ID, key=world().device_key.public)


def _verify_result(data: bytes) -> object:
    return verify_result(data, root=world().root, device=DEVICE_ID)


def _expectations(data: bytes) -> object:
    return parse_expectations(dcbor.as_map(dcbor.decode(data, max_bytes=1 << 20), "attestation"))


def _expectations_seeds() -> list[bytes]:
    digest = b"\x11" * 32
    return [
        dcbor.encode({"profiles": {"generic-x86_64": {"measurements": {"agent": [digest]}}}}),
        dcbor.encode(
            {
                "profiles": {
                    "generic-x86_64": {
                        "measurements": {"agent": [digest, b"\x22" * 32]},
                        "devices": {"gw-001": {"kernel": [b"\x33" * 32]}},
                    }
                }
            }
        ),
        dcbor.encode({"profiles": {}}),
    ]


# --- lineage: batches, acks, status, checkpoints, entries, exports ---------------------------


def _batch_agrees(value: object, raw: Mapping[object, object]) -> None:
    _same_device(value, raw)
    assert tuple(raw.get("entries") or ()) == getattr(value, "entries", None)


def _verify_batch(data: bytes) -> object:
    return verify_batch(data, device=DEVICE_ID, key=world().device_key.public)


def _checkpoint(data: bytes) -> object:
    return verify_checkpoint(data, world().device_key.public, world().origin)


def _checkpoint_signed(text: bytes) -> object:
    origin = world().origin
    try:
        body = text.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        note = sign_note(body, world().device_key, origin)
    except ValueError:
        return None
    checkpoint = verify_checkpoint(note, world().device_key.public, origin)
    lines = body.split("\n")
    assert lines[0] == checkpoint.origin == origin, "a checkpoint for another log"
    assert lines[1] == str(checkpoint.size), "a checkpoint size that is not the note's"
    return checkpoint


def _export(data: bytes) -> object:
    header, entries = read_export(io.BytesIO(data), MAX_HEADER_BYTES)
    return verify_export(decode_header(header), entries, world().device_key.public)


def _export_seeds() -> list[bytes]:
    w = world()
    full = ExportHeader(w.origin, 0, None, (), 8, (w.note(4), w.note(8)))
    tail = ExportHeader(w.origin, 0, None, (), 4, (w.note(4),))
    return [
        _export_file(encode_header(full), w.entries),
        _export_file(encode_header(tail), w.entries[:4]),
        _export_file(encode_header(full), w.entries[:7]),
    ]


def _export_file(header: bytes, entries: list[bytes]) -> bytes:
    return b"".join(dcbor.encode(item) for item in [header, *entries])


# --- the decision socket ---------------------------------------------------------------------


def _socket_request(data: bytes) -> object:
    length = wire.frame_length(data[: wire.HEADER_BYTES], wire.MAX_FRAME_BYTES)
    body = data[wire.HEADER_BYTES :]
    if len(body) != length:
        return None
    return wire.decode_request(body)


def _socket_cbor(data: bytes) -> object:
    """The socket codec decodes only what the protocol codec decodes, to the same value."""
    value = _cbor.decode(data)
    try:
        other = dcbor.decode(data, max_bytes=len(data))
    except EdgeGovError:
        return value
    assert other == value, "the socket codec and dcbor read the same bytes differently"
    return value


def _request_seeds() -> list[bytes]:
    return [
        wire.encode_request(wire.WireRequest(1, wire.Op.DECIDE, "exec", "/bin/sh")),
        wire.encode_request(
            wire.WireRequest(
                7, wire.Op.DECIDE, "read", "/data/x", (("zone", "plant-a"), ("shift", ""))
            )
        ),
        wire.encode_request(wire.WireRequest(2, wire.Op.IDENTIFY)),
        wire.frame(dcbor.encode({"v": 1, "id": 3, "op": "decide", "subject": "root"})),
    ]


def _response_seeds() -> list[bytes]:
    frames = [
        wire.encode_decision(
            1,
            wire.DecisionResult(
                False,
                "policy_denied",
                "denied by rule no-shells",
                "no-shells",
                5,
                b"\x00" * 32,
                NOW,
                "svc:camera",
                ("uid:1001", "exe:/opt/camera/bin/capture"),
            ),
        ),
        wire.encode_identity(2, wire.IdentityResult(4242, 1001, 1001, "svc:camera", ("uid:1001",))),
        wire.encode_error(3, "bad_request", "a request must be a CBOR map"),
        wire.encode_error(None, "unsupported_version", "version 9"),
    ]
    return [f[wire.HEADER_BYTES :] for f in frames]


# --- hub routing -----------------------------------------------------------------------------


class _HubRoute:
    """The hub's handling of one incoming MQTT message (topic, payload): route to a handler
    or reject with a code. Runs the hub's intake (``Intake.dispatch``) on a real registry in
    a temporary directory, with the rate limits lifted so the fuzzer reaches the handlers."""

    def __init__(self) -> None:
        from hub.cli.operations import init_keys
        from hub.registry import DeviceRecord
        from hub.registry.backends import open_registry
        from hub.service.config import HubConfig
        from hub.service.server import HubService

        self.directory = tempfile.TemporaryDirectory(prefix="edgegov-fuzz-hub-")
        path = Path(self.directory.name)
        init_keys(path / "keys", root_keys=3, root_threshold=2, now=int(time.time()), ttl=DAY)
        with open_registry(path / "hub.db") as registry:
            registry.add_device(
                DeviceRecord(
                    DEVICE_ID, REGION, DEVICE.groups, DEVICE.profile, world().device_key.public
                )
            )
        unlimited = 1e12
        self.hub = HubService(
            HubConfig(
                hub_dir=path,
                write_serve_file=False,
                device_rate=unlimited,
                device_burst=10**12,
                unknown_rate=unlimited,
            )
        )
        self.parts = self.hub._start(open_registry(path / "hub.db"), self.hub.hub_dir.load_keys())

    def __call__(self, data: bytes) -> object:
        topic, _, payload = data.partition(b"\x00")
        message = Incoming(topic.decode("utf-8", "replace"), payload, False)
        try:
            with self.hub.registry.write_group():
                self.parts.intake.dispatch(message)
        finally:
            self.parts.context.outbox.clear()
            self.parts.context.rejections.drain()
        return None


@cache
def _hub_route() -> _HubRoute:
    return _HubRoute()


def _route(data: bytes) -> object:
    return _hub_route()(data)


def _route_seeds() -> list[bytes]:
    w = world()
    base = f"edgegov/v1/{REGION}/device/{DEVICE_ID}/".encode()
    return [
        base + b"lineage\x00" + w.batch(0, 4),
        base + b"lineage\x00" + w.batch(4, 8),
        base + b"status\x00" + w.status(),
        base + b"evidence\x00" + w.evidence(),
        b"edgegov/v1/eu-2/device/gw-001/status\x00" + w.status(),
        b"edgegov/v1/eu-1/device/gw-999/lineage\x00" + w.batch(0, 4),
        b"edgegov/v1/eu-1/bundle/group/line-a\x00" + w.hub.bundle(1),
        b"edgegov/v1/_probe/x\x00probe",
    ]


# --- operator and device files ---------------------------------------------------------------


def _policy_source(data: bytes) -> object:
    return load_policy_source(data.decode("utf-8", "surrogateescape"))


def _policy_seeds() -> list[bytes]:
    example = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
    return [
        example.read_bytes(),
        b"target: {region: eu-1, devices: [gw-001]}\nttl: 1h\nrules: []\n",
        b"target: {region: eu-1}\nrules:\n  - id: a\n    effect: deny\n    subjects: ['*']\n"
        b"    actions: [exec]\n    resources: ['/**']\n"
        b"    when: {time_utc: '22:00-06:00', context: {zone: [a]}}\n",
        b"a: &x [1]\nb: *x\n",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ]


class _AgentConfig:
    """``load_config`` reads a path: the fuzz input is written to one file, over and over."""

    def __init__(self) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="edgegov-fuzz-config-")
        self.path = Path(self.directory.name) / "agent.toml"

    def __call__(self, data: bytes) -> object:
        self.path.write_bytes(data)
        config = load_config(self.path, {"url": "mqtt://127.0.0.1:1883"})
        config.lineage.to_config()
        return config.broker_settings(DEVICE_ID)


@cache
def _agent_config() -> _AgentConfig:
    return _AgentConfig()


def _config(data: bytes) -> object:
    return _agent_config()(data)


def _config_seeds() -> list[bytes]:
    shipped = Path(__file__).resolve().parents[2] / "packaging" / "deb" / "agent.toml"
    return [
        shipped.read_bytes(),
        b'[broker]\nurl = "mqtts://hub.example:8883"\nusername = "gw-001"\n'
        b"[sync]\nstatus_interval_s = 30\nship_interval_s = 1.0\n"
        b'[lineage]\ncheckpoint_every = 1000\nsynchronous = "FULL"\nverify_on_start = "tail"\n'
        b'[socket]\nmode = 0o660\n[log]\nformat = "json"\nlevel = "info"\n',
        b"[broker]\nurl = 3\n",
        b"[unknown]\n",
    ]


# --- the table -------------------------------------------------------------------------------


def _w(method: str) -> Callable[[], list[bytes]]:
    return lambda: [getattr(world(), method)()]


TARGETS: tuple[Target, ...] = (
    Target("dcbor", "deterministic CBOR (every payload)", _dcbor, _dcbor_seeds),
    *_signed_pair(
        "root",
        "trust root update (root N+1 over the pinned root)",
        _verify_root_update,
        _sign_root,
        _root_seeds,
        _root_agrees,
    ),
    Target(
        "root-pinned",
        "trust root pinned at init (self-signed)",
        _verify_pinned_root,
        lambda: [*_root_seeds(), *_edge_cases(_root_seeds()[0])],
    ),
    *_signed_pair(
        "bundle", "policy bundle", _verify_bundle, _sign_bundle, _bundle_seeds, _bundle_agrees
    ),
    *_signed_pair(
        "revocation",
        "revocation (kill switch)",
        _verify_revocation,
        _sign_revocation,
        _revocation_seeds,
        _revocation_agrees,
    ),
    *_signed_pair(
        "freshness",
        "freshness token",
        _verify_freshness,
        _sign_freshness,
        _freshness_seeds,
        _freshness_agrees,
    ),
    *_signed_pair(
        "challenge",
        "attestation challenge",
        _verify_challenge,
        _verifier_sign1(CHALLENGE_CONTENT_TYPE, "challenge"),
        lambda: [world().challenge(), world().challenge(b"\x02" * 32)],
        _challenge_agrees,
    ),
    *_signed_pair(
        "evidence",
        "attestation evidence",
        _verify_evidence,
        _device_sign1(EVIDENCE_CONTENT_TYPE, "evidence"),
        _w("evidence"),
        _same_device,
    ),
    *_signed_pair(
        "result",
        "attestation result",
        _verify_result,
        _verifier_sign1(RESULT_CONTENT_TYPE, "attestation"),
        lambda: [world().result(), world().result(Verdict.FAIL)],
        _result_agrees,
    ),
    Target("expectations", "bundle attestation expectations", _expectations, _expectations_seeds),
    *_signed_pair(
        "batch",
        "lineage shipping batch",
        _verify_batch,
        _device_sign1(BATCH_CONTENT_TYPE, "lineage"),
        lambda: [world().batch(0, 4), world().batch(4, 8)],
        _batch_agrees,
    ),
    Target(
        "ack",
        "lineage ack",
        lambda data: verify_ack(data, root=world().root, device=DEVICE_ID),
        _w("ack"),
    ),
    Target(
        "status",
        "device status",
        lambda data: verify_status(data, device=DEVICE_ID, key=world().device_key.public),
        _w("status"),
    ),
    Target(
        "checkpoint",
        "signed checkpoint note",
        _checkpoint,
        lambda: [world().note(4).encode(), world().note(0).encode()],
    ),
    Target(
        "checkpoint-signed",
        "checkpoint body (signed for real)",
        _checkpoint_signed,
        lambda: [w.split("\n\n")[0].encode() + b"\n" for w in (world().note(4),)],
    ),
    Target("lineage-entry", "lineage entry", decode_entry, lambda: list(world().entries[:3])),
    Target("lineage-export", "exported lineage file", _export, _export_seeds),
    Target(
        "socket-request",
        "decision-socket request frame",
        _socket_request,
        _request_seeds,
    ),
    Target(
        "socket-response",
        "decision-socket response body",
        wire.decode_response,
        _response_seeds,
    ),
    Target(
        "socket-cbor",
        "decision-socket CBOR codec",
        _socket_cbor,
        lambda: [f[wire.HEADER_BYTES :] for f in _request_seeds()] + _response_seeds(),
        expected=(ValueError, EdgeGovError),
    ),
    Target("hub-route", "hub routing of an MQTT message", _route, _route_seeds),
    Target("policy-source", "policy source YAML", _policy_source, _policy_seeds),
    Target("agent-config", "agent config TOML", _config, _config_seeds),
)


def by_name(name: str) -> Target:
    """The target called ``name``.

    Raises:
        KeyError: no such target.
    """
    for target in TARGETS:
        if target.name == name:
            return target
    raise KeyError(name)
