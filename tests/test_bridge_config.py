"""The shipped bridged-site configs (packaging/mosquitto/site.conf, edgegov-central.acl)
carry exactly the edgegov topic tree, each topic in its direction, as the protocol
(edge_agent/protocol/topics.py) defines it: whatever an agent subscribes to comes in from
the central broker, whatever it publishes goes out, nothing goes both ways, and the central
ACL lets a site bridge do exactly that."""

from __future__ import annotations

from pathlib import Path

from edge_agent.protocol import topics
from hub.cli.mosquitto_acl import DEVICE_WRITES

PACKAGING = Path(__file__).resolve().parents[1] / "packaging" / "mosquitto"
REGION = "eu-1"
DEVICE = "gw-x1"
GROUPS = ("line-a", "line-b")


def _settings(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            pairs.append((key, value))
    return pairs


def _bridge_topics() -> dict[str, list[str]]:
    """The bridge's topic patterns by direction; every one is QoS 1 without prefixes."""
    directions: dict[str, list[str]] = {"in": [], "out": [], "both": []}
    for key, value in _settings(PACKAGING / "site.conf"):
        if key == "topic":
            pattern, direction, qos = value.split()
            assert qos == "1", f"{pattern}: the bridge must carry edgegov topics at QoS 1"
            directions[direction].append(pattern)
    return directions


def covers(pattern: str, topic_filter: str) -> bool:
    """Whether every topic ``topic_filter`` matches is matched by ``pattern`` too."""
    wanted, offered = topic_filter.split("/"), pattern.split("/")
    for index, level in enumerate(offered):
        if level == "#":
            return True
        if index >= len(wanted):
            return False
        if level != "+" and level != wanted[index]:
            return False
        if level == "+" and wanted[index] == "#":
            return False
    return len(wanted) == len(offered)


def _down() -> tuple[str, ...]:
    return topics.agent_subscriptions(REGION, DEVICE, GROUPS)


def _up() -> tuple[str, ...]:
    return tuple(topics.device_topic(REGION, DEVICE, leaf) for leaf in DEVICE_WRITES)


def test_every_topic_an_agent_subscribes_to_is_bridged_in_from_the_central_broker() -> None:
    bridged = _bridge_topics()
    for topic_filter in _down():
        assert any(covers(p, topic_filter) for p in bridged["in"]), f"{topic_filter} not bridged in"
        assert not any(covers(p, topic_filter) for p in bridged["out"]), f"{topic_filter} goes out"


def test_every_topic_an_agent_publishes_is_bridged_out_to_the_central_broker() -> None:
    bridged = _bridge_topics()
    for topic in _up():
        assert any(covers(p, topic) for p in bridged["out"]), f"{topic} not bridged out"
        assert not any(covers(p, topic) for p in bridged["in"]), f"{topic} comes back in"


def test_every_device_topic_the_hub_consumes_is_bridged_out() -> None:
    bridged = _bridge_topics()
    for topic_filter in topics.hub_subscriptions(REGION, shared=False):
        if topic_filter.startswith(f"{topics.PREFIX}/{REGION}/device/"):
            assert any(covers(p, topic_filter) for p in bridged["out"]), topic_filter


def test_nothing_is_bridged_both_ways_or_outside_the_regions_topic_tree() -> None:
    bridged = _bridge_topics()
    assert bridged["both"] == []
    for pattern in bridged["in"] + bridged["out"]:
        assert pattern.startswith(f"{topics.PREFIX}/{REGION}/"), pattern
    assert len(bridged["out"]) == len(DEVICE_WRITES)


def test_each_bridged_pattern_is_needed_by_an_agent() -> None:
    bridged = _bridge_topics()
    for pattern in bridged["in"]:
        assert any(covers(pattern, f) for f in _down()), f"{pattern} carries nothing agents read"
    for pattern in bridged["out"]:
        assert any(covers(pattern, t) for t in _up()), f"{pattern} carries nothing agents write"


def test_the_bridge_keeps_a_persistent_session_under_its_own_login() -> None:
    settings = dict(_settings(PACKAGING / "site.conf"))
    assert settings["cleansession"] == "false"
    assert settings["bridge_protocol_version"] == "mqttv311"
    assert settings["try_private"] == "true"
    assert settings["remote_clientid"] == settings["remote_username"]
    assert settings["local_clientid"] != settings["remote_clientid"]
    assert settings["bridge_insecure"] == "false"
    assert settings["notifications_local_only"] == "true"
    assert int(settings["bridge_max_packet_size"]) == int(settings["max_packet_size"])


def test_the_central_acl_grants_each_site_bridge_exactly_its_bridged_topics() -> None:
    bridged = _bridge_topics()
    grants: dict[str, list[tuple[str, str]]] = {}
    user = ""
    for key, value in _settings(PACKAGING / "edgegov-central.acl"):
        if key == "user":
            user = value
            grants[user] = []
        elif key == "topic":
            access, _, pattern = value.partition(" ")
            grants[user].append((access, pattern))
    sites = [name for name in grants if name.startswith("site-")]
    assert sites
    expected = sorted([("read", p) for p in bridged["in"]] + [("write", p) for p in bridged["out"]])
    for site in sites:
        assert sorted(grants[site]) == expected, site
