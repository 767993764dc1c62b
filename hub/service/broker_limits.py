"""The embedded broker's limits, enforced by ``hub/service/broker.py``.

They are sized from the largest object edgegov sends: docs/mqtt.md ("Embedded broker limits")
gives the figures and what each limit protects against.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.protocol.limits import MAX_PACKET_BYTES

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEVICE_PUBLISH_BURST",
    "DEVICE_PUBLISH_RATE",
    "FD_RESERVE",
    "MAX_CONNECTIONS",
    "MAX_MESSAGE_BYTES",
    "MAX_PENDING_CONNECTIONS",
    "MAX_RETAINED_BYTES",
    "MAX_RETAINED_MESSAGES",
    "MAX_TOPIC_BYTES",
    "MAX_TOPIC_LEVELS",
    "REFUSAL_LOG_BURST",
    "REFUSAL_LOG_INTERVAL_S",
    "BrokerLimits",
]

MAX_TOPIC_BYTES = 256
"""Longest topic name or filter, UTF-8 bytes (AWS IoT's limit). edgegov's longest is 159:
``edgegov/v1/{region}/device/{id}/attestation`` with a 64-byte region and device id."""

MAX_TOPIC_LEVELS = 8
"""Most levels in a topic name or filter (7 slashes, AWS IoT's limit). edgegov's deepest topic
has 6 levels; a shared subscription (``$share/{group}/`` in front) to it has 8."""

MAX_MESSAGE_BYTES = MAX_PACKET_BYTES
"""Largest MQTT packet the embedded broker reads, as its fixed header's remaining length: the
same bound as the agents' and the shipped Mosquitto config's (``protocol.limits``), the
largest bundle (2 MiB, 1.9 times a measured 10,000-rule bundle of 1.06 MiB) with its topic
and packet id."""

MAX_RETAINED_MESSAGES = 50_000
"""Retained messages held at once: 10 per device for 5,000 devices (a device has 3 of its
own, status, ack and attestation, and at most 2 on its device channel), 5 times the largest
fleet the embedded broker carries well (bench/fleet.py: 1,000 agents)."""

MAX_RETAINED_BYTES = 128 * 1024 * 1024
"""Retained topic and payload bytes held at once: 5,000 devices' own retained objects (about
9 KiB each, 45 MiB) beside ten bundles of the largest size (20 MiB)."""

DEVICE_PUBLISH_RATE = 20.0
DEVICE_PUBLISH_BURST = 200
"""Messages a second (sustained, and at once) one connection may publish on device topics
(``edgegov/v1/{region}/device/...``): an agent sends a status every heartbeat, a lineage batch
at most every ship interval (0.5 s) and only after the last one's ack, and evidence when
challenged, so 20 a second is ten times its peak. What a connection publishes beyond it is
dropped by the broker, unread by anyone: a client flooding device topics (a compromised
device signing statuses as fast as it can, junk from anyone) then costs the broker and the
hub 20 messages a second, not the tens of thousands it could send, and cannot queue ahead
of honest devices' batches."""

CONNECT_TIMEOUT_S = 10.0
"""Seconds from accepting a TCP connection to reading its whole CONNECT packet; a connection
that has not sent one by then is dropped. A client sends CONNECT at once (it is its first
packet, a few dozen bytes): 10 s is room for a device on a congested link."""

MAX_CONNECTIONS = 2_000
"""Connections held at once, CONNECTed or not: twice the largest fleet the embedded broker
carries well (bench/fleet.py: 1,000 agents) plus the hub and its commands. An idle CONNECTed
connection costs amqtt about 60 KiB (2,000 took the hub from 61 to 179 MB), so this bounds
what connections can cost at about 120 MB. Lowered to the open-file limit less
``FD_RESERVE`` where that is smaller (``ulimit -n``; the shipped unit sets 65,536)."""

MAX_PENDING_CONNECTIONS = 1_000
"""Connections held at once that have not sent their CONNECT yet (about 8 KiB each). An
honest client's CONNECT follows its TCP handshake within a round trip; a connection that
stays pending is a slow or hostile one. When this many are pending (or ``MAX_CONNECTIONS``
are open, some of them pending), a new connection drops the oldest pending one."""

FD_RESERVE = 64
"""File descriptors kept out of the connection limit for the hub itself (registry, keys,
logs, its own MQTT connection)."""

REFUSAL_LOG_INTERVAL_S = 10.0
REFUSAL_LOG_BURST = 3
"""The broker logs each kind of refusal at most ``REFUSAL_LOG_BURST`` times in a row, then
once per ``REFUSAL_LOG_INTERVAL_S`` with the number left unlogged meanwhile."""


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """What the embedded broker holds at most (the defaults above; tests pass smaller ones)."""

    message_bytes: int = MAX_MESSAGE_BYTES
    topic_bytes: int = MAX_TOPIC_BYTES
    topic_levels: int = MAX_TOPIC_LEVELS
    retained_messages: int = MAX_RETAINED_MESSAGES
    retained_bytes: int = MAX_RETAINED_BYTES
    device_publish_rate: float = DEVICE_PUBLISH_RATE
    device_publish_burst: int = DEVICE_PUBLISH_BURST
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    connections: int = MAX_CONNECTIONS
    pending_connections: int = MAX_PENDING_CONNECTIONS

    def __post_init__(self) -> None:
        if (
            min(
                self.message_bytes,
                self.topic_bytes,
                self.topic_levels,
                self.retained_messages,
                self.retained_bytes,
                self.device_publish_rate,
                self.device_publish_burst,
                self.connections,
                self.pending_connections,
            )
            < 1
        ):
            raise ValueError("every broker limit must be at least 1")
        if self.connect_timeout_s <= 0:
            raise ValueError("the CONNECT deadline must be positive")
