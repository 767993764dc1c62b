"""The device keeps the hub witness's cosigned checkpoints that arrive with acks.

An ack may carry the device's own checkpoint note at the acknowledged size with the hub
witness's ``cosignature/v1`` line. The device keeps it in place of its own note there only
when every check holds (its own signature under its origin, the size and root the ack
states and its own root there, a cosignature by a verifier-role key of the trust root in
force); anything else is logged and ignored, and the ack's watermark moves as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.lineage.log import LineageLog
from edge_agent.protocol.checkpoint import Checkpoint, sign_checkpoint
from edge_agent.protocol.cosignature import cosign_note, verify_cosignature
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.protocol.shipping import Ack, sign_ack
from edge_agent.support.mqtt import BrokerSettings, Incoming
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from tests.factory import DEVICE, NOW, HubSim

REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
ACK_TOPIC = "edgegov/v1/eu-1/device/gw-001/ack"
DECISIONS = 12
COSIGNED_AT = NOW + 5


@pytest.fixture
def hub() -> HubSim:
    return HubSim()


@pytest.fixture
def daemon(tmp_path: Path, hub: HubSim) -> Iterator[AgentDaemon]:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW)
    agent = LocalAgent.open(state_dir)
    agent.install_bundle(hub.bundle(), NOW)
    for index in range(DECISIONS):
        agent.decide(REQUEST, NOW + index)
    try:
        yield AgentDaemon(agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: NOW)
    finally:
        agent.close()


def _lineage(daemon: AgentDaemon) -> LineageLog:
    lineage = daemon.agent.lineage
    assert lineage is not None and lineage.store is not None
    return lineage


def _witness(hub: HubSim) -> PrivateKey:
    return hub.online_keys[Role.VERIFIER][0]


def _ack(daemon: AgentDaemon, hub: HubSim, size: int, note: str | None) -> None:
    """Deliver the hub's ack of ``size`` entries (the device's own root there) with
    ``note`` as its checkpoint."""
    ack = Ack(DEVICE.device_id, size, _lineage(daemon).root_at(size), NOW, note)
    data = sign_ack(ack, key=hub.online_keys[Role.FRESHNESS][0])
    daemon.handle(Incoming(ACK_TOPIC, data, retain=False))


def _stored_note(daemon: AgentDaemon, size: int) -> str | None:
    store = _lineage(daemon).store
    assert store is not None
    found = [c.note for c in store.checkpoints(size) if c.size == size]
    return found[0] if found else None


@dataclass(frozen=True)
class Offer:
    """A checkpoint note an ack of the log's current size carries, and what it shows."""

    name: str
    make: Callable[[AgentDaemon, HubSim, int], str]
    why: str


def _own(daemon: AgentDaemon, size: int) -> str:
    return _lineage(daemon).checkpoint_note(size, NOW)


def _cosigned(daemon: AgentDaemon, hub: HubSim, size: int) -> str:
    return cosign_note(_own(daemon, size), _witness(hub), time=COSIGNED_AT)


def _garbled(note: str) -> str:
    """The witness line's signature with one base64 character changed (still base64)."""
    head, _, line = note.rstrip("\n").rpartition("\n")
    position = len(line) - 6
    swapped = "A" if line[position] != "A" else "B"
    return f"{head}\n{line[:position]}{swapped}{line[position + 1 :]}\n"


def _other_root(daemon: AgentDaemon, hub: HubSim, size: int) -> str:
    lineage = _lineage(daemon)
    key = daemon.agent.device_key
    forged = sign_checkpoint(Checkpoint(lineage.origin, size, b"\x07" * 32), key, lineage.origin)
    return cosign_note(forged, _witness(hub), time=COSIGNED_AT)


def _other_device(daemon: AgentDaemon, hub: HubSim, size: int) -> str:
    lineage = _lineage(daemon)
    stranger = PrivateKey.generate()
    note = sign_checkpoint(
        Checkpoint(lineage.origin, size, lineage.root_at(size)), stranger, lineage.origin
    )
    return cosign_note(note, _witness(hub), time=COSIGNED_AT)


REFUSED = [
    Offer(
        "cosigned by the hub's freshness key, not a verifier-role key",
        lambda d, h, n: cosign_note(_own(d, n), h.online_keys[Role.FRESHNESS][0], time=1),
        "no cosignature by witness key",
    ),
    Offer(
        "cosigned by a key outside the trust root",
        lambda d, h, n: cosign_note(_own(d, n), PrivateKey.generate(), time=1),
        "no cosignature by witness key",
    ),
    Offer(
        "the witness's cosignature garbled",
        lambda d, h, n: _garbled(_cosigned(d, h, n)),
        "invalid cosignature",
    ),
    Offer(
        "the device's own note without a cosignature",
        lambda d, h, n: _own(d, n),
        "no cosignature by witness key",
    ),
    Offer(
        "a cosigned checkpoint for another size",
        lambda d, h, n: _cosigned(d, h, n - 1),
        "not at the acknowledged size",
    ),
    Offer(
        "a cosigned checkpoint of another root",
        _other_root,
        "does not sign the root the hub acknowledged",
    ),
    Offer(
        "a cosigned checkpoint signed by another device key",
        _other_device,
        "no signature by key",
    ),
    Offer("not a signed note at all", lambda d, h, n: "garbage\n", "no blank line"),
]


def test_a_valid_cosigned_checkpoint_replaces_the_devices_own_note(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    lineage = _lineage(daemon)
    size = lineage.size
    own = _own(daemon, size)
    cosigned = _cosigned(daemon, hub, size)
    _ack(daemon, hub, size, cosigned)
    assert lineage.acknowledged == size
    assert _stored_note(daemon, size) == cosigned
    assert cosigned.startswith(own[:-1])
    assert verify_cosignature(cosigned, [_witness(hub).public]).time == COSIGNED_AT
    lineage.verify()


@pytest.mark.parametrize("offer", REFUSED, ids=lambda o: o.name)
def test_a_bad_cosigned_checkpoint_is_logged_and_ignored_and_the_watermark_still_moves(
    daemon: AgentDaemon, hub: HubSim, offer: Offer, caplog: pytest.LogCaptureFixture
) -> None:
    lineage = _lineage(daemon)
    size = lineage.size
    own = _own(daemon, size)
    note = offer.make(daemon, hub, size)
    with caplog.at_level(logging.WARNING, logger="edge_agent.sync.daemon"):
        _ack(daemon, hub, size, note)
    assert lineage.acknowledged == size
    assert _stored_note(daemon, size) == own
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cosigned checkpoint" in w and offer.why in w for w in warnings), warnings
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    lineage.verify()


def test_an_ack_without_a_checkpoint_moves_the_watermark_and_keeps_the_note(
    daemon: AgentDaemon, hub: HubSim, caplog: pytest.LogCaptureFixture
) -> None:
    lineage = _lineage(daemon)
    size = lineage.size
    own = _own(daemon, size)
    with caplog.at_level(logging.WARNING):
        _ack(daemon, hub, size, None)
    assert lineage.acknowledged == size
    assert _stored_note(daemon, size) == own
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_repeated_ack_brings_the_cosignature_the_first_one_lacked(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    lineage = _lineage(daemon)
    size = lineage.size
    _ack(daemon, hub, size, None)
    cosigned = _cosigned(daemon, hub, size)
    _ack(daemon, hub, size, cosigned)
    assert lineage.acknowledged == size
    assert _stored_note(daemon, size) == cosigned


def test_a_cosigned_checkpoint_at_a_size_with_no_stored_checkpoint_is_stored_as_one(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    lineage = _lineage(daemon)
    size = lineage.size - 3
    assert _stored_note(daemon, size) is None
    note = lineage.sign(size, lineage.root_at(size))
    cosigned = cosign_note(note, _witness(hub), time=COSIGNED_AT)
    _ack(daemon, hub, size, cosigned)
    assert lineage.acknowledged == size
    assert _stored_note(daemon, size) == cosigned
    lineage.verify()


def test_a_witness_key_rotated_out_of_the_root_no_longer_counts(
    daemon: AgentDaemon, hub: HubSim
) -> None:
    """The witness keys are those of the trust root in force when the ack arrives."""
    old_witness = _witness(hub)
    hub.online_keys[Role.VERIFIER] = [PrivateKey.generate()]
    daemon.agent.install_root(hub.root_bytes(version=2), NOW)
    lineage = _lineage(daemon)
    size = lineage.size
    own = _own(daemon, size)
    _ack(daemon, hub, size, cosign_note(own, old_witness, time=COSIGNED_AT))
    assert _stored_note(daemon, size) == own
    _ack(daemon, hub, size, _cosigned(daemon, hub, size))
    assert _stored_note(daemon, size) != own


def test_the_log_with_cosigned_checkpoints_verifies_after_a_restart(
    tmp_path: Path, daemon: AgentDaemon, hub: HubSim, capsys: pytest.CaptureFixture[str]
) -> None:
    lineage = _lineage(daemon)
    first = lineage.size - 4
    _ack(daemon, hub, first, cosign_note(_own(daemon, first), _witness(hub), time=1))
    for index in range(5):
        daemon.agent.decide(REQUEST, NOW + 50 + index)
    size = lineage.size
    _ack(daemon, hub, size, _cosigned(daemon, hub, size))
    for stored in (first, size):
        note = _stored_note(daemon, stored)
        assert note is not None and verify_cosignature(note, [_witness(hub).public])
    daemon.agent.close()
    state_dir = tmp_path / "state"
    with LocalAgent.open(state_dir) as agent:
        assert agent.lineage is not None and agent.lineage.fault is None
        report = agent.lineage.verify()
        assert report.size >= size
    assert agent_main(["log", "verify", "--state-dir", str(state_dir)]) == 0
    assert "lineage OK" in capsys.readouterr().out
