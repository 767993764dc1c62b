"""How ``edge-hub serve`` runs (:class:`HubConfig`) and what it counts (:class:`HubStats`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.support.mqtt import BrokerSettings
from hub.console.listen import ConsoleListen
from hub.core.directory import DEFAULT_DIRECTORY_TTL_S
from hub.service.broker_limits import BrokerLimits
from hub.service.verifier import DEFAULT_CHALLENGE_TTL_S

__all__ = ["HubConfig", "HubStats"]


@dataclass(frozen=True, slots=True)
class HubConfig:
    """How ``edge-hub serve`` runs. ``broker=None`` starts the embedded amqtt broker on
    ``bind:port`` (port 0: a free one)."""

    hub_dir: Path
    broker: BrokerSettings | None = None
    registry: str | None = None
    """The registry when not the hub directory's ``hub.db``: a ``postgresql://`` URL or a
    ``hub.db`` path (see :class:`hub.hubdir.layout.HubDir`)."""
    bind: str = "127.0.0.1"
    port: int = 0
    keys_dir: Path | None = None
    freshness_interval_s: float = 10.0
    token_ttl_s: int = 60
    shared_subscriptions: bool | None = None
    """``None``: direct on the embedded broker, probed on any other; ``True`` is refused
    with the embedded broker, which grants ``$share/`` subscriptions but delivers nothing
    through them."""
    device_rate: float = 20.0
    """Messages per second each device may send (sustained); ``device_burst`` at once."""
    device_burst: int = 100
    unknown_rate: float = 20.0
    """Lookups per second for messages naming a device this process does not know yet."""
    unverified_topic_rate: float = 512 * 1024
    """Bytes a second that signature checks of messages which then fail to verify may cost
    on one device topic (a burst of four seconds' worth; see :class:`VerificationBudget`)."""
    unverified_total_rate: float = 32 * 1024 * 1024
    """The same, shared by all topics once a topic's own share is spent."""
    status_window_s: int = 120
    """A signed status is recorded only if its signed time is this close to the hub's."""
    client_id: str | None = None
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    write_serve_file: bool = True
    attest_interval_s: float = 300.0
    """Seconds between rounds challenging every registered device."""
    attest_ttl_s: int = 900
    """Seconds an attestation result is valid: a device denies when it is not renewed."""
    attest_retry_s: float = 10.0
    """Least seconds between on-demand challenges of one device (its status asked)."""
    challenge_ttl_s: int = DEFAULT_CHALLENGE_TTL_S
    directory_ttl_s: int = DEFAULT_DIRECTORY_TTL_S
    """Seconds a signed device directory is valid; the schedule issues the next version
    once less than half is left, and whenever the registered devices change."""
    broker_limits: BrokerLimits = field(default_factory=BrokerLimits)
    """The embedded broker's limits (unused with ``broker``)."""
    console: ConsoleListen | None = None
    """Serve the governance console there, on the hub's event loop (docs/console.md)."""
    rollout_interval_s: float = 1.0
    """Seconds between rounds of the rollout driver (soak timers, halt conditions:
    docs/rollout.md); a halt is published at most this long after its data is stored."""
    status_lines: Callable[[str], None] | None = None
    """Where the operator's status lines go (:mod:`hub.service.announce`; ``edge-hub
    serve`` prints them unless ``-q``); ``None``: none are made."""
    summary_interval_s: float = 60.0
    """Seconds between two summary lines (with ``status_lines``)."""

    def __post_init__(self) -> None:
        if self.rollout_interval_s <= 0:
            raise ValueError("the rollout interval must be positive")
        if self.summary_interval_s <= 0:
            raise ValueError("the summary interval must be positive")
        if self.freshness_interval_s <= 0 or self.token_ttl_s <= 0:
            raise ValueError("the freshness interval and token TTL must be positive")
        if self.token_ttl_s <= self.freshness_interval_s:
            raise ValueError("tokens must live longer than the interval they are refreshed at")
        if self.directory_ttl_s <= 2 * self.freshness_interval_s:
            raise ValueError("directories must live longer than two rounds of the schedule")
        if min(self.attest_interval_s, self.attest_retry_s, self.challenge_ttl_s) <= 0:
            raise ValueError("the attestation interval, retry and challenge TTL must be positive")
        if self.attest_ttl_s <= self.attest_interval_s:
            raise ValueError(
                "attestation results must live longer than the interval devices are challenged at"
            )
        if self.broker is None and self.shared_subscriptions:
            raise ValueError(
                "--shared on needs a broker that delivers $share/ subscriptions (--broker, "
                "e.g. Mosquitto 2): the embedded broker does not, so the hub would receive no "
                "status, lineage or evidence; use --shared auto or off"
            )


@dataclass(slots=True)
class HubStats:
    """Counters since start (for tests, logs and benchmarks)."""

    connections: int = 0
    batches_accepted: int = 0
    entries_stored: int = 0
    duplicates: int = 0
    acks_published: int = 0
    strays_cleared: int = 0
    """Retained messages the hub did not publish, cleared (or, on an ack topic, replaced)."""
    statuses: int = 0
    stale_statuses: int = 0
    """Verified statuses not recorded: older than the one held, or signed too far from now."""
    status_reads: int = 0
    """Direct reads of the retained statuses ended (with shared subscriptions: one per region
    on each connection, :class:`~hub.service.connection.Subscriptions`)."""
    freshness_published: int = 0
    challenges_sent: int = 0
    attestations: dict[str, int] = field(default_factory=dict)
    """Results published, by verdict."""
    rejections: dict[str, int] = field(default_factory=dict)
    queue_dropped: int = 0
    """Messages dropped on arrival: their device already had its share waiting."""
    messages: int = 0
    """Messages received from the broker (retained trust objects included)."""
    backlog_since: float | None = None
    """Monotonic time since which messages have been waiting to be handled (``None``: none
    waits): the ingest lag is how long ago that was."""
