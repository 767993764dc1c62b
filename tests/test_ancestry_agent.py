"""The agent side of ancestry: the directory kept from the trust topic, parents cited on the
socket, receipts asked for, and the old wire bytes unchanged."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.client import AgentRequestError, AsyncClient, Client
from edge_agent.directory_file import DIRECTORY_FILE
from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol import topics
from edge_agent.protocol.directory import DirectoryDevice
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import decode_entry
from edge_agent.protocol.receipt import verify_receipt
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.socket.config import SocketConfig
from edge_agent.socket.wire import (
    MAX_PARENT_BYTES,
    DecisionResult,
    Op,
    WireRequest,
    decode_request,
    decode_response,
    encode_decision,
    encode_request,
)
from edge_agent.support.mqtt import BrokerSettings, Incoming
from edge_agent.sync.config import SyncConfig
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from edge_agent.trust.parent import MAX_PARENT_RECEIPT_BYTES
from tests.ancestry_support import CAMERA, CAMERA_KEY, DeviceLog, devices, directory_bytes
from tests.factory import DAY, DEVICE, HubSim
from tests.socket_helpers import Echo, embedded

DIRECTORY_TOPIC = topics.directory_topic(DEVICE.region)
RULE = {
    "id": "valve-only-from-vision",
    "effect": "allow",
    "subjects": ["*"],
    "actions": ["plc.write"],
    "resources": ["plc://line-a/*"],
    "when": {"parent": {"action": ["model.invoke"], "devices": ["group:cameras"], "max_age": 30}},
}
MODEL = {
    "id": "vision",
    "effect": "allow",
    "subjects": ["*"],
    "actions": ["model.invoke"],
    "resources": ["model://vision/*"],
}
CHILD = Request("svc:plc-bridge", "plc.write", "plc://line-a/valve-7")


class Fleet:
    """A hub and one enrolled agent (``gw-001``), dated from the real wall clock."""

    def __init__(self, state_dir: Path) -> None:
        self.hub = HubSim()
        self.wall = int(time.time())
        self.state_dir = state_dir
        root = self.hub.root_bytes(issued_at=self.wall - DAY, expires_at=self.wall + 365 * DAY)
        init_state_dir(state_dir, DEVICE, root, self.wall)
        policy = policy_payload(groups={}, workloads={}, rules=[RULE, MODEL])
        bundle = self.hub.bundle(
            1, policy=policy, issued_at=self.wall - 60, expires_at=self.wall + DAY
        )
        with LocalAgent.open(state_dir) as agent:
            agent.install_bundle(bundle, self.wall)

    def directory(self, version: int = 1, **kwargs: object) -> bytes:
        dated: dict[str, object] = {"issued_at": self.wall - 60, "expires_at": self.wall + DAY}
        return directory_bytes(self.hub, version=version, **(dated | kwargs))  # type: ignore[arg-type]

    def camera_receipt(self, age: int = 2) -> bytes:
        log = DeviceLog(CAMERA, CAMERA_KEY)
        return log.receipt(log.append(time=int(time.time()) - age))


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path / "state")


@pytest.fixture
def agent(fleet: Fleet) -> Iterator[LocalAgent]:
    with LocalAgent.open(fleet.state_dir) as opened:
        yield opened


def _daemon(agent: LocalAgent, wall: int) -> AgentDaemon:
    return AgentDaemon(agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: wall)


def _send(daemon: AgentDaemon, payload: bytes) -> None:
    daemon.handle(Incoming(DIRECTORY_TOPIC, payload, retain=True))


# --- the directory, kept from the trust topic --------------------------------------------


def test_the_directory_from_the_trust_topic_is_kept_and_survives_a_restart(
    fleet: Fleet, agent: LocalAgent
) -> None:
    _send(_daemon(agent, fleet.wall), fleet.directory(3))
    held = agent.directory.current()
    assert held is not None and held.version == 3
    assert (fleet.state_dir / DIRECTORY_FILE).read_bytes() == fleet.directory(3)
    with LocalAgent.open(fleet.state_dir) as again:
        reopened = again.directory.current()
        assert reopened is not None and reopened.version == 3


@pytest.mark.parametrize(
    ("name", "version", "kept"),
    [("older is a rollback", 2, 3), ("same keeps", 3, 3), ("newer replaces", 4, 4)],
)
def test_a_directory_update_never_goes_back(
    fleet: Fleet, agent: LocalAgent, name: str, version: int, kept: int
) -> None:
    daemon = _daemon(agent, fleet.wall)
    _send(daemon, fleet.directory(3))
    _send(daemon, fleet.directory(version))
    held = agent.directory.current()
    assert held is not None and held.version == kept
    assert (fleet.state_dir / DIRECTORY_FILE).read_bytes() == fleet.directory(kept)


@pytest.mark.parametrize(
    "payload",
    [b"garbage", b"\xd2\x84"],
    ids=["not CBOR", "truncated COSE"],
)
def test_a_bad_directory_is_refused_and_changes_nothing(
    fleet: Fleet, agent: LocalAgent, payload: bytes
) -> None:
    daemon = _daemon(agent, fleet.wall)
    _send(daemon, fleet.directory(1))
    _send(daemon, payload)
    held = agent.directory.current()
    assert held is not None and held.version == 1


def test_an_expired_directory_is_refused(fleet: Fleet, agent: LocalAgent) -> None:
    _send(_daemon(agent, fleet.wall), fleet.directory(1, expires_at=fleet.wall - 1))
    assert agent.directory.current() is None
    assert not (fleet.state_dir / DIRECTORY_FILE).exists()


def test_a_directory_file_edited_on_disk_is_not_trusted(fleet: Fleet) -> None:
    path = fleet.state_dir / DIRECTORY_FILE
    signed = fleet.directory(1)
    path.write_bytes(signed[:-1] + bytes([signed[-1] ^ 1]))
    with LocalAgent.open(fleet.state_dir) as agent:
        assert agent.directory.current() is None
        decision = agent.decide(CHILD, int(time.time()), parent=fleet.camera_receipt())
        assert decision.reason is Reason.PARENT_INVALID
        assert "holds no device directory" in decision.message


def _without_camera() -> list[DirectoryDevice]:
    return [device for device in devices() if device.id != CAMERA]


def _lose(path: Path) -> None:
    path.unlink()


def _damage(path: Path) -> None:
    path.write_bytes(b"junk")


@pytest.mark.parametrize("loss", [_lose, _damage], ids=["deleted", "damaged"])
def test_a_lost_directory_file_does_not_let_an_older_directory_back(
    fleet: Fleet, loss: Callable[[Path], None]
) -> None:
    with LocalAgent.open(fleet.state_dir) as agent:
        _send(_daemon(agent, fleet.wall), fleet.directory(5, listed=_without_camera()))
    loss(fleet.state_dir / DIRECTORY_FILE)
    with LocalAgent.open(fleet.state_dir) as agent:
        daemon = _daemon(agent, fleet.wall)
        _send(daemon, fleet.directory(2))
        assert agent.directory.current() is None
        refused = agent.decide(CHILD, int(time.time()), parent=fleet.camera_receipt())
        assert refused.reason is Reason.PARENT_INVALID
        _send(daemon, fleet.directory(5, listed=_without_camera()))
        held = agent.directory.current()
        assert held is not None and held.version == 5
        _send(daemon, fleet.directory(6))
        held = agent.directory.current()
        assert held is not None and held.version == 6


def test_an_older_directory_copied_over_the_file_is_refused_at_load(fleet: Fleet) -> None:
    with LocalAgent.open(fleet.state_dir) as agent:
        agent.install_directory(fleet.directory(5, listed=_without_camera()), fleet.wall)
    (fleet.state_dir / DIRECTORY_FILE).write_bytes(fleet.directory(2))
    with LocalAgent.open(fleet.state_dir) as agent:
        assert agent.directory.current() is None
        refused = agent.decide(CHILD, int(time.time()), parent=fleet.camera_receipt())
        assert refused.reason is Reason.PARENT_INVALID
        plain = agent.decide(
            Request("svc:x", "model.invoke", "model://vision/v3"), int(time.time())
        )
        assert plain.allowed


def test_a_floor_raised_by_another_process_refuses_the_older_file_this_one_holds(
    fleet: Fleet,
) -> None:
    with LocalAgent.open(fleet.state_dir) as reader, LocalAgent.open(fleet.state_dir) as writer:
        reader.install_directory(fleet.directory(2), fleet.wall)
        writer.install_directory(fleet.directory(5, listed=_without_camera()), fleet.wall)
        (fleet.state_dir / DIRECTORY_FILE).write_bytes(fleet.directory(2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            cited = reader.decide(CHILD, int(time.time()), parent=fleet.camera_receipt())
            if cited.reason is Reason.PARENT_INVALID:
                break
            time.sleep(0.05)
        assert cited.reason is Reason.PARENT_INVALID
        assert reader.directory.current() is None


def test_rotating_the_verifier_role_drops_the_directory_floor(fleet: Fleet) -> None:
    with LocalAgent.open(fleet.state_dir) as agent:
        agent.install_directory(fleet.directory(5), fleet.wall)
        fleet.hub.online_keys[Role.VERIFIER] = [PrivateKey(bytes(31) + b"\x07")]
        rotated = fleet.hub.root_bytes(
            version=2, issued_at=fleet.wall - 10, expires_at=fleet.wall + 365 * DAY
        )
        agent.install_root(rotated, fleet.wall)
        assert agent.state.directory_version == 0
        agent.install_directory(fleet.directory(1), fleet.wall)
        held = agent.directory.current()
        assert held is not None and held.version == 1
    with LocalAgent.open(fleet.state_dir) as again:
        assert again.state.directory_version == 1


def test_another_process_sees_a_directory_installed_after_it_opened(fleet: Fleet) -> None:
    with LocalAgent.open(fleet.state_dir) as reader, LocalAgent.open(fleet.state_dir) as writer:
        assert reader.directory.current() is None
        writer.install_directory(fleet.directory(2), fleet.wall)
        deadline = time.monotonic() + 5
        while reader.directory.current() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        held = reader.directory.current()
        assert held is not None and held.version == 2


# --- deciding with a parent ----------------------------------------------------------------


def test_a_parent_is_verified_at_decision_time_and_recorded_in_the_lineage(
    fleet: Fleet, agent: LocalAgent
) -> None:
    agent.install_directory(fleet.directory(1), fleet.wall)
    wall = int(time.time())
    assert agent.decide(CHILD, wall).reason is Reason.PARENT_MISSING
    decision = agent.decide(CHILD, wall, parent=fleet.camera_receipt())
    assert (decision.allowed, decision.reason) == (True, Reason.ALLOWED)
    assert agent.last_seq is not None and agent.lineage is not None
    stored = agent.lineage.prove(agent.last_seq, wall).entry
    cited = decode_entry(stored).request
    assert cited is not None and cited.parent is not None
    assert cited.parent.facts is not None and cited.parent.facts.device == CAMERA
    assert cited.parent.directory_version == 1
    stale = agent.decide(CHILD, wall, parent=fleet.camera_receipt(age=31))
    assert stale.reason is Reason.PARENT_INVALID


# --- the socket ---------------------------------------------------------------------------


def _config(tmp_path: Path) -> SocketConfig:
    return SocketConfig(path=tmp_path / "agent.sock")


def test_want_receipt_returns_a_receipt_the_verifier_accepts(
    tmp_path: Path, fleet: Fleet, agent: LocalAgent
) -> None:
    config = _config(tmp_path)
    with embedded(agent, config), Client(config.path) as client:
        result = client.decide("model.invoke", "model://vision/v3", want_receipt=True)
        plain = client.decide("model.invoke", "model://vision/v3")
    assert result.allowed and result.receipt is not None
    assert plain.receipt is None
    report = verify_receipt(result.receipt, device_key=agent.device_key.public)
    assert report.entry.request is not None
    assert report.entry.request.action == "model.invoke"
    assert report.entry.time == result.time


def test_a_parent_given_on_the_socket_is_decided(
    tmp_path: Path, fleet: Fleet, agent: LocalAgent
) -> None:
    agent.install_directory(fleet.directory(1), fleet.wall)
    config = _config(tmp_path)
    with embedded(agent, config), Client(config.path) as client:
        allowed = client.decide("plc.write", "plc://line-a/valve-7", parent=fleet.camera_receipt())
        missing = client.decide("plc.write", "plc://line-a/valve-7")
        forged = client.decide("plc.write", "plc://line-a/valve-7", parent=b"forged")
    assert (allowed.allowed, allowed.reason) == (True, "allowed")
    assert missing.reason == "parent_missing"
    assert (forged.allowed, forged.reason) == (False, "parent_invalid")


def test_a_chain_through_the_socket_uses_the_agents_own_receipt_as_the_next_parent(
    tmp_path: Path, fleet: Fleet, agent: LocalAgent
) -> None:
    listed = [DirectoryDevice(DEVICE.device_id, agent.device_key.public, 1, ("cameras",))]
    agent.install_directory(fleet.directory(1, listed=listed), fleet.wall)
    config = _config(tmp_path)
    with embedded(agent, config), Client(config.path) as client:
        parent = client.decide("model.invoke", "model://vision/v3", want_receipt=True)
        assert parent.receipt is not None
        child = client.decide("plc.write", "plc://line-a/valve-7", parent=parent.receipt)
    assert (child.allowed, child.reason) == (True, "allowed")


def test_concurrent_receipt_requests_share_checkpoints(
    tmp_path: Path, fleet: Fleet, agent: LocalAgent
) -> None:
    config = _config(tmp_path)
    receipts: list[bytes | None] = []
    lock = threading.Lock()

    def ask() -> None:
        with Client(config.path) as client:
            for _ in range(5):
                got = client.decide("model.invoke", "model://vision/v3", want_receipt=True)
                with lock:
                    receipts.append(got.receipt)

    with embedded(agent, config):
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(receipts) == 40 and all(r is not None for r in receipts)
    assert agent._receipts is not None
    assert agent._receipts.checkpoints_used < 40


def test_a_decider_that_cannot_cite_refuses_parent_and_receipt_requests(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with embedded(Echo(), config), Client(config.path) as client:
        assert client.decide("read", "/x").allowed
        with pytest.raises(AgentRequestError) as caught:
            client.decide("read", "/x", want_receipt=True)
        assert caught.value.code == "bad_request"


# --- the wire: old bytes unchanged, new fields bounded ---------------------------------

OLD_REQUEST = WireRequest(9, Op.DECIDE, "exec", "/opt/x", (("a", "1"),))
OLD_RESULT = DecisionResult(True, "allowed", "ok", "r1", 3, bytes(2), 1_800_000_000, "svc:a", ())
# Both as every release before issue 23 encoded them (frame header included).
OLD_REQUEST_HEX = (
    "0000003ba661760162696409626f706664656369646566616374696f6e646578656367636f6e74657874a1"
    "61616131687265736f75726365662f6f70742f78"
)
OLD_RESULT_HEX = (
    "00000085ad61760162696401626f6bf5626f70666465636964656472756c656272316474696d651a6b49d2"
    "0066726561736f6e67616c6c6f77656467616c6c6f776564f5676d657373616765626f6b677375626a6563"
    "74657376633a616973656c6563746f7273806d62756e646c655f6469676573744200006e62756e646c655f"
    "76657273696f6e03"
)


def test_old_requests_and_answers_keep_their_exact_bytes() -> None:
    assert encode_request(OLD_REQUEST) == bytes.fromhex(OLD_REQUEST_HEX)
    decoded = decode_request(bytes.fromhex(OLD_REQUEST_HEX)[4:])
    assert decoded == OLD_REQUEST
    assert (decoded.parent, decoded.want_receipt) == (None, False)
    assert encode_decision(1, OLD_RESULT) == bytes.fromhex(OLD_RESULT_HEX)


def test_parent_and_want_receipt_round_trip_and_are_bounded() -> None:
    assert MAX_PARENT_BYTES == MAX_PARENT_RECEIPT_BYTES
    request = WireRequest(3, Op.DECIDE, "plc.write", "plc://x", (), b"r" * 100, True)
    assert decode_request(encode_request(request)[4:]) == request
    with pytest.raises(ValueError):
        encode_request(request._replace(parent=b"r" * (MAX_PARENT_BYTES + 1)))
    with pytest.raises(ValueError):
        encode_request(request._replace(parent=b""))
    answered = OLD_RESULT._replace(receipt=b"receipt bytes")
    assert decode_response(encode_decision(1, answered)[4:]) == (1, answered)


def test_the_async_client_cites_parents_and_asks_for_receipts(
    tmp_path: Path, fleet: Fleet, agent: LocalAgent
) -> None:
    agent.install_directory(fleet.directory(1), fleet.wall)
    config = _config(tmp_path)

    async def ask() -> tuple[DecisionResult, DecisionResult]:
        async with AsyncClient(config.path) as client:
            own = await client.decide("model.invoke", "model://vision/v3", want_receipt=True)
            child = await client.decide(
                "plc.write", "plc://line-a/valve-7", parent=fleet.camera_receipt()
            )
            return own, child

    with embedded(agent, config):
        own, child = asyncio.run(ask())
    assert own.receipt is not None
    verify_receipt(own.receipt, device_key=agent.device_key.public)
    assert (child.allowed, child.reason) == (True, "allowed")


def test_a_burst_of_receipt_requests_signs_a_checkpoint_per_batch_not_per_request(
    fleet: Fleet, agent: LocalAgent
) -> None:
    maker = agent._receipts
    assert maker is not None
    model = Request("svc:vision", "model.invoke", "model://vision/v3")

    wall = int(time.time())
    # As the socket's responder asks it: each request from a thread of its pool.
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda _: agent.decide_cited(model, wall, None, True), range(64)))
    receipts = [receipt for _, receipt in answers]
    assert all(r is not None for r in receipts)
    assert len(set(receipts)) == 64
    assert 1 <= maker.checkpoints_used < 16


def test_log_show_json_prints_the_parent_only_where_there_is_one(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalAgent.open(fleet.state_dir) as agent:
        agent.install_directory(fleet.directory(1), fleet.wall)
        wall = int(time.time())
        agent.decide(CHILD, wall, parent=fleet.camera_receipt())
        agent.decide(CHILD, wall)
    capsys.readouterr()
    show = ["log", "show", "--kind", "decision", "--json", "--state-dir", str(fleet.state_dir)]
    assert agent_main(show) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entries[0]["parent"]["device"] == CAMERA
    assert entries[0]["parent"]["depth"] == 1
    assert "parent" not in entries[1]
