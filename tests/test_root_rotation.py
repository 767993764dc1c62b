"""Trust-root rotation, TUF style: root N+1 needs a threshold of root N's keys and its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.errors import RootError
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import sign_root, verify_root_update, verify_trusted_root
from tests.factory import DAY, DEVICE, NOW, HubSim

NEW_KEYS = [PrivateKey.generate() for _ in range(3)]


@dataclass(frozen=True)
class Rotation:
    name: str
    make: Callable[[HubSim], bytes]
    accepted: bool
    code: str = ""


def _next(sim: HubSim, signers: list[PrivateKey], version: int = 2, **kw: int) -> bytes:
    return sign_root(sim.root_payload(version, root_keys=NEW_KEYS, **kw), signers)


ROTATIONS = [
    Rotation("both thresholds", lambda s: _next(s, s.root_keys[:2] + NEW_KEYS[:2]), True),
    Rotation("all old and all new keys", lambda s: _next(s, s.root_keys + NEW_KEYS), True),
    Rotation("only the old keys", lambda s: _next(s, s.root_keys), False, "root_rejected"),
    Rotation("only the new keys", lambda s: _next(s, NEW_KEYS), False, "root_rejected"),
    Rotation(
        "one old key short",
        lambda s: _next(s, s.root_keys[:1] + NEW_KEYS[:2]),
        False,
        "root_threshold",
    ),
    Rotation(
        "one new key short",
        lambda s: _next(s, s.root_keys[:2] + NEW_KEYS[:1]),
        False,
        "root_threshold",
    ),
    Rotation(
        "an old key repeated",
        lambda s: _next(s, [s.root_keys[0]] * 2 + NEW_KEYS[:2]),
        False,
        "root_threshold",
    ),
    Rotation(
        "the current version with other contents",
        lambda s: _next(s, s.root_keys + NEW_KEYS, version=1),
        False,
        "root_conflict",
    ),
    Rotation(
        "version skips ahead",
        lambda s: _next(s, s.root_keys + NEW_KEYS, version=3),
        False,
        "root_gap",
    ),
    Rotation(
        "version skips ahead, signed by keys only the missing version names",
        lambda s: _next(s, NEW_KEYS, version=3),
        False,
        "root_gap",
    ),
    Rotation(
        "the current version with other contents, signed by keys this device never trusted",
        lambda s: _next(s, NEW_KEYS, version=1),
        False,
        "root_conflict",
    ),
    Rotation(
        "expired",
        lambda s: _next(s, s.root_keys + NEW_KEYS, issued_at=NOW - 3 * DAY, expires_at=NOW - DAY),
        False,
        "root_expired",
    ),
    Rotation("a bundle offered as a root", lambda s: s.bundle(1), False, "root_rejected"),
    Rotation("random bytes", lambda s: b"\x84\x01\x02\x03\x04", False, "root_rejected"),
]


@pytest.mark.parametrize("case", ROTATIONS, ids=[r.name for r in ROTATIONS])
def test_root_rotation(case: Rotation) -> None:
    sim = HubSim()
    current = verify_trusted_root(sim.root_bytes(), now=NOW)
    data = case.make(sim)
    if case.accepted:
        assert verify_root_update(current, data, now=NOW).version == 2
    else:
        with pytest.raises(RootError) as refused:
            verify_root_update(current, data, now=NOW)
        assert refused.value.code == case.code, refused.value


@pytest.mark.parametrize(
    ("signers", "says"),
    [("old", "not newer than installed version 2 (rollback refused)"), ("new", "rollback")],
    ids=["the older root itself", "an older version signed by the new keys"],
)
def test_an_older_version_is_a_rollback(signers: str, says: str) -> None:
    sim = HubSim()
    v2 = verify_root_update(sim.root(), _next(sim, sim.root_keys + NEW_KEYS), now=NOW)
    older = sim.root_bytes() if signers == "old" else _next(sim, NEW_KEYS, version=1)
    with pytest.raises(RootError) as refused:
        verify_root_update(v2, older, now=NOW)
    assert refused.value.code == "root_rollback"
    assert says in refused.value.message


def test_the_current_version_with_other_contents_is_a_conflict_not_a_rollback() -> None:
    sim = HubSim()
    other = _next(sim, sim.root_keys + NEW_KEYS, version=1)
    with pytest.raises(RootError) as refused:
        verify_root_update(sim.root(), other, now=NOW)
    assert refused.value.message == (
        "trust root version 1 is already installed with different contents (conflict "
        "refused); a changed root needs the next version"
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"\x84\x01\x02\x03\x04", HubSim().root_bytes(version=2)[:-7]],
    ids=["empty", "not a COSE_Sign", "truncated"],
)
def test_bytes_that_are_no_envelope_are_called_not_a_trust_root(data: bytes) -> None:
    current = HubSim().root()

    with pytest.raises(RootError) as refused:
        verify_root_update(current, data, now=NOW)

    assert refused.value.message.startswith("not a trust root"), refused.value


def test_an_expired_root_is_still_a_link_in_the_chain() -> None:
    """TUF: N+1 is checked against N's thresholds and its own, not its expiry (the agent
    passes ``now=None``; the gate judges only the newest root's expiry)."""
    sim = HubSim()
    current = verify_trusted_root(sim.root_bytes(), now=NOW)
    expired = _next(sim, sim.root_keys + NEW_KEYS, issued_at=NOW - 3 * DAY, expires_at=NOW - DAY)
    assert verify_root_update(current, expired, now=None).version == 2


def test_rotated_root_persists_and_new_policy_key_takes_over(tmp_path: Path) -> None:
    sim = HubSim()
    init_state_dir(tmp_path, DEVICE, sim.root_bytes(), NOW)
    new_policy = [PrivateKey.generate()]
    root2 = sign_root(
        sim.root_payload(2, root_keys=NEW_KEYS, policy_keys=new_policy),
        sim.root_keys + NEW_KEYS,
    )
    with LocalAgent.open(tmp_path) as agent:
        agent.install_root(root2, NOW)
    sim.root_keys, sim.policy_keys = NEW_KEYS, new_policy
    with LocalAgent.open(tmp_path) as agent:
        assert agent.state.root.version == 2
        assert agent.install_bundle(sim.bundle(1), NOW).bundle.version == 1


def test_refused_root_leaves_pinned_root(tmp_path: Path) -> None:
    sim = HubSim()
    init_state_dir(tmp_path, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(tmp_path) as agent, pytest.raises(RootError):
        agent.install_root(_next(sim, NEW_KEYS), NOW)
    with LocalAgent.open(tmp_path) as agent:
        assert agent.state.root.version == 1


def test_init_refuses_root_not_signed_by_its_own_threshold(tmp_path: Path) -> None:
    sim = HubSim()
    data = sign_root(sim.root_payload(), sim.root_keys[:1])
    with pytest.raises(RootError):
        init_state_dir(tmp_path / "s", DEVICE, data, NOW)
    assert not (tmp_path / "s" / "state.db").exists()
