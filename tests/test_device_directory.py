"""The signed device directory: who signs it, what it may hold, rollback and expiry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edge_agent.protocol import cose, dcbor
from edge_agent.protocol.directory import (
    CONTENT_TYPE,
    MAX_DIRECTORY_BYTES,
    DirectoryDevice,
    DirectoryError,
    check_directory_update,
    verify_directory,
)
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.roles import Role, external_aad
from edge_agent.protocol.topics import agent_subscriptions, directory_topic, is_trust_topic
from tests.ancestry_support import (
    CAMERA,
    CAMERA_KEY,
    PLC_KEY,
    REGION,
    devices,
    directory_bytes,
    verified_directory,
)
from tests.factory import NOW, HubSim

HUB = HubSim()


def _raw_signed(payload: object, hub: HubSim = HUB) -> bytes:
    return cose.sign1(
        dcbor.encode(payload),
        key=hub.online_keys[Role.VERIFIER][0],
        content_type=CONTENT_TYPE,
        external_aad=external_aad(Role.VERIFIER, REGION),
    )


def _payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "region": REGION,
        "version": 1,
        "issued_at": NOW - 60,
        "expires_at": NOW + 60,
        "devices": [{"id": "a", "key": CAMERA_KEY.public.raw, "epoch": 1, "groups": ["g"]}],
    }
    payload.update(changes)
    return payload


def _device(id_: str, signer: PrivateKey, **changes: object) -> dict[str, object]:
    device: dict[str, object] = {"id": id_, "key": signer.public.raw, "epoch": 1, "groups": []}
    device.update(changes)
    return device


@dataclass(frozen=True)
class Offered:
    name: str
    make: Callable[[], bytes]
    accepted: bool
    fragment: str = ""


OFFERED = [
    Offered("signed by the verifier key", lambda: directory_bytes(HUB), True),
    Offered(
        "signed by the revoke key",
        lambda: directory_bytes(HUB, key=HUB.online_keys[Role.REVOKE][0]),
        False,
        "not trusted",
    ),
    Offered(
        "signed for another region",
        lambda: directory_bytes(HUB, region="us-2"),
        False,
        "device directory refused",
    ),
    Offered("a byte changed", lambda: directory_bytes(HUB)[:-1] + b"\x00", False, "refused"),
    Offered("not CBOR at all", lambda: b"garbage", False, "refused"),
    Offered("names another region", lambda: _raw_signed(_payload(region="us-2")), False, "us-2"),
    Offered("version 0", lambda: _raw_signed(_payload(version=0)), False, "version"),
    Offered(
        "expires before issued",
        lambda: _raw_signed(_payload(expires_at=NOW - 61)),
        False,
        "expires before",
    ),
    Offered("an unknown field", lambda: _raw_signed(_payload(extra=1)), False, "unknown"),
    Offered(
        "devices out of order",
        lambda: _raw_signed(_payload(devices=[_device("b", CAMERA_KEY), _device("a", PLC_KEY)])),
        False,
        "out of order",
    ),
    Offered(
        "a device twice",
        lambda: _raw_signed(_payload(devices=[_device("a", CAMERA_KEY), _device("a", PLC_KEY)])),
        False,
        "twice",
    ),
    Offered(
        "two devices sharing a key",
        lambda: _raw_signed(_payload(devices=[_device("a", CAMERA_KEY), _device("b", CAMERA_KEY)])),
        False,
        "another device's key",
    ),
    Offered(
        "a short key",
        lambda: _raw_signed(_payload(devices=[_device("a", CAMERA_KEY, key=b"x" * 31)])),
        False,
        "32 bytes",
    ),
    Offered(
        "key epoch 0",
        lambda: _raw_signed(_payload(devices=[_device("a", CAMERA_KEY, epoch=0)])),
        False,
        "epoch",
    ),
    Offered(
        "unsorted groups",
        lambda: _raw_signed(_payload(devices=[_device("a", CAMERA_KEY, groups=["z", "a"])])),
        False,
        "sorted",
    ),
    Offered(
        "a device entry with a missing field",
        lambda: _raw_signed(_payload(devices=[{"id": "a", "key": CAMERA_KEY.public.raw}])),
        False,
        "lacks",
    ),
    Offered(
        "over the size cap",
        lambda: b"\x00" * (MAX_DIRECTORY_BYTES + 1),
        False,
        f"at most {MAX_DIRECTORY_BYTES}",
    ),
]


@pytest.mark.parametrize("case", OFFERED, ids=lambda c: c.name)
def test_directory_is_accepted_only_when_signed_and_well_formed(case: Offered) -> None:
    data = case.make()
    if case.accepted:
        directory = verify_directory(data, root=HUB.root(), region=REGION)
        assert directory.raw == data
        assert directory.devices[CAMERA].groups == ("cameras",)
        assert directory.by_origin[directory.devices[CAMERA].origin].id == CAMERA
        return
    with pytest.raises(DirectoryError) as caught:
        verify_directory(data, root=HUB.root(), region=REGION)
    assert case.fragment in caught.value.message
    assert caught.value.code == "directory_rejected"


@dataclass(frozen=True)
class Update:
    name: str
    held: int | None
    offered: int
    expires_at: int
    kept: int | None
    code: str = ""


UPDATES = [
    Update("first directory", None, 1, NOW + 60, 1),
    Update("newer version", 3, 4, NOW + 60, 4),
    Update("same version keeps the held one", 3, 3, NOW + 60, 3),
    Update("older version is a rollback", 3, 2, NOW + 60, None, "directory_rollback"),
    Update("newer but expired", 3, 4, NOW, None, "directory_expired"),
    Update("first but expired", None, 1, NOW - 1, None, "directory_expired"),
]


@pytest.mark.parametrize("case", UPDATES, ids=lambda c: c.name)
def test_directory_update_refuses_rollback_and_expiry(case: Update) -> None:
    held = None if case.held is None else verified_directory(HUB, version=case.held)
    offered = verified_directory(
        HUB, version=case.offered, expires_at=case.expires_at, issued_at=NOW - 600
    )
    if case.kept is None:
        with pytest.raises(DirectoryError) as caught:
            check_directory_update(held, offered, NOW)
        assert caught.value.code == case.code
        return
    kept = check_directory_update(held, offered, NOW)
    assert kept.version == case.kept
    if case.held == case.offered:
        assert kept is held


def test_directory_holds_many_devices_within_the_byte_cap() -> None:
    many = [
        DirectoryDevice(f"gw-{n:06d}", PrivateKey(n.to_bytes(32, "big")).public, 1, ("line-a",))
        for n in range(1, 5001)
    ]
    data = directory_bytes(HUB, listed=many)
    directory = verify_directory(data, root=HUB.root(), region=REGION)
    assert len(directory.devices) == 5000
    assert len(data) < MAX_DIRECTORY_BYTES


def test_directory_topic_is_a_retained_trust_topic_every_agent_subscribes_to() -> None:
    topic = directory_topic(REGION)
    assert topic == "edgegov/v1/eu-1/trust/directory"
    assert is_trust_topic(topic)
    assert topic in agent_subscriptions(REGION, "gw-1", ["g"])


def test_directory_device_list_matches_the_fleet() -> None:
    directory = verified_directory(HUB)
    assert sorted(directory.devices) == sorted(d.id for d in devices())
