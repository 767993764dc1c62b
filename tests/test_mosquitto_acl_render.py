"""``edge-hub device acl``: the Mosquitto ACL pins each registered device's writes to its
region, names every hub username, refuses names that would break the file or give a device
the hub's rights, and the shipped files agree with the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol.keys import PrivateKey
from edge_agent.support.mqtt import MAX_PACKET_BYTES
from hub.cli.mosquitto_acl import render_acl
from hub.registry import DeviceRecord
from tests.hub_support import make_hub_dir, run_cli

SHIPPED = Path(__file__).parent.parent / "packaging" / "mosquitto"


def _device(device_id: str, region: str) -> DeviceRecord:
    return DeviceRecord(
        device_id, region, ("line-a",), "generic-x86_64", PrivateKey.generate().public
    )


def _blocks(text: str) -> dict[str, list[str]]:
    """``user`` name -> its ``topic`` lines."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("user "):
            current = blocks.setdefault(line.removeprefix("user "), [])
        elif line.startswith("topic "):
            current.append(line)
    return blocks


def test_the_shipped_acl_is_the_generated_acl_for_no_devices() -> None:
    assert (SHIPPED / "edgegov.acl").read_text() == render_acl([])


def test_the_shipped_config_ties_client_ids_to_usernames_and_caps_packets_at_the_agents_limit() -> (
    None
):
    lines = (SHIPPED / "mosquitto.conf").read_text().splitlines()
    assert "use_username_as_clientid true" in lines
    assert f"max_packet_size {MAX_PACKET_BYTES}" in lines


def test_each_device_writes_only_its_own_topics_in_its_own_region() -> None:
    text = render_acl([_device("gw-002", "us-1"), _device("gw-001", "eu-1")], ("hub", "hub-2"))
    assert _blocks(text) == {
        "hub": ["topic readwrite #"],
        "hub-2": ["topic readwrite #"],
        "gw-001": [
            "topic write edgegov/v1/eu-1/device/gw-001/status",
            "topic write edgegov/v1/eu-1/device/gw-001/lineage",
            "topic write edgegov/v1/eu-1/device/gw-001/evidence",
        ],
        "gw-002": [
            "topic write edgegov/v1/us-1/device/gw-002/status",
            "topic write edgegov/v1/us-1/device/gw-002/lineage",
            "topic write edgegov/v1/us-1/device/gw-002/evidence",
        ],
    }
    assert not [line for line in text.splitlines() if line.startswith("pattern write")]


@pytest.mark.parametrize(
    ("devices", "hub_users", "message"),
    [
        pytest.param(
            [_device("hub-2", "eu-1")], ("hub", "hub-2"), "hub username", id="device-is-a-hub-user"
        ),
        pytest.param([], (), "at least one hub username", id="no-hub-user"),
        pytest.param([], ("hub x",), "cannot be used", id="hub-user-with-a-space"),
        pytest.param([_device("gw-001", "eu 1")], ("hub",), "region", id="region-with-a-space"),
    ],
)
def test_names_that_would_break_the_acl_are_refused(
    devices: list[DeviceRecord], hub_users: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        render_acl(devices, hub_users)


@pytest.mark.asyncio
async def test_edge_hub_device_acl_writes_the_registered_devices(tmp_path: Path) -> None:
    setup = make_hub_dir(tmp_path / "hub")
    out = tmp_path / "edgegov.acl"
    code = await run_cli(
        "device", "acl", "--hub-dir", str(setup.path), "--out", str(out), "--hub-user", "hub-a"
    )
    assert code == 0
    assert set(_blocks(out.read_text())) == {"hub-a", "gw-001", "gw-002"}
