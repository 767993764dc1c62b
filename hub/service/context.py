"""What the parts of a running hub share, handed to each part when the service starts.

One :class:`ServiceContext` per :class:`~hub.service.server.HubService`: its registry and
keys, the newest trust root in its keys directory (re-read by the schedule: a root rotated
while the service runs), counters, the devices it knows, the rejection counters, what the
broker holds on the retained topics (:class:`~hub.service.retained.Retained`), the
signature-check budget, the outbox of the burst being stored, and the gateway every
registry operation goes through (:class:`~hub.registry.gateway.RegistryGateway`: off the
event loop, one at a time). It holds no task, and its only I/O is re-reading the keys directory's
trust roots when asked; the parts that use it are each one job (connection, schedule,
intake, one handler per topic family).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from edge_agent.errors import EdgeGovError, TransportError
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.root import TrustRoot
from edge_agent.support.mqtt import Connection
from hub.core.limits import RateLimiter, VerificationBudget
from hub.core.publications import Publication
from hub.hubdir.layout import HubDir, HubKeys
from hub.registry import DeviceRecord, Registry
from hub.registry.gateway import RegistryGateway
from hub.service.broker import EmbeddedBroker
from hub.service.config import HubConfig, HubStats
from hub.service.rejections import Rejections
from hub.service.retained import Retained

__all__ = ["CurrentConnection", "Devices", "ServiceContext", "every", "wall"]

logger = logging.getLogger(__name__)

CurrentConnection = Callable[[], Connection | None]
"""The hub's connection once it is ready (subscribed, everything retained republished)."""


def wall() -> int:
    """The hub's wall-clock time in whole seconds (what it signs and records)."""
    return int(time.time())


async def every(
    interval_s: float,
    work: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    unpublished: str,
    failed: str,
) -> None:
    """Run ``work`` every ``interval_s`` seconds until ``stop``. A round that fails is
    logged and the next one runs as planned: a :class:`TransportError` as a warning
    (``unpublished``, a format with the error), any other of our errors as an error
    (``failed``)."""
    while not stop.is_set():
        await asyncio.sleep(interval_s)
        try:
            await work()
        except TransportError as exc:
            logger.warning(unpublished, exc)
        except EdgeGovError as exc:
            logger.error(failed, exc)


class Devices:
    """The registered devices this process knows (re-read by the schedule), and registry
    lookups, rate limited, for a device it does not know yet: a flood of made-up ids costs
    the registry at most ``lookup_rate`` reads a second."""

    def __init__(self, registry: Registry, lookup_rate: float) -> None:
        self._registry = registry
        self._known: dict[str, DeviceRecord] = {}
        self._lookups = RateLimiter(lookup_rate, max(1, int(lookup_rate)))

    def refresh(self) -> None:
        self._known = {d.device_id: d for d in self._registry.devices()}

    def known(self) -> list[DeviceRecord]:
        return list(self._known.values())

    def cached(self, device_id: str) -> DeviceRecord | None:
        """The device if this process knows it (no registry read)."""
        return self._known.get(device_id)

    def lookup(self, device_id: str) -> DeviceRecord | None:
        """The device, read from the registry if not known yet and the lookup rate allows."""
        device = self._known.get(device_id)
        if device is None and self._lookups.allow("", time.monotonic()):
            device = self._registry.device(device_id)
            if device is not None:
                self._known[device_id] = device
        return device


@dataclass(slots=True, eq=False)
class ServiceContext:
    """The state the parts of one running hub share."""

    config: HubConfig
    hub_dir: HubDir
    registry: Registry
    keys: HubKeys
    stats: HubStats
    broker: EmbeddedBroker | None
    devices: Devices
    rejections: Rejections
    retained: Retained = field(default_factory=Retained)
    budget: VerificationBudget = field(init=False)
    """What signature checks of messages that then fail to verify may cost."""
    outbox: dict[str, Publication] = field(default_factory=dict)
    """What the burst being stored publishes once it is committed (newest per topic)."""
    db: RegistryGateway = field(default_factory=RegistryGateway)
    """Runs registry operations off the event loop, one at a time in submission order; what
    runs there may use :attr:`registry`, :attr:`devices`, :attr:`rejections` and
    :attr:`outbox`, and the loop touches them only through it once the service runs."""
    current_root: TrustRoot = field(init=False)
    """The newest trust root in the keys directory as last read (:meth:`reread_roots`): what
    recorded bundles are verified under, so one signed by a key ``edge-hub root rotate`` made
    while the service runs verifies without a restart."""
    witness: PrivateKey | None = field(init=False)
    """The witness key of :attr:`current_root` (its first verifier key held here), re-read with
    it: after a rotation that replaces the verifier keys, devices count only the new key's
    cosignatures."""

    def __post_init__(self) -> None:
        self.budget = VerificationBudget(
            self.config.unverified_topic_rate, self.config.unverified_total_rate
        )
        self.current_root = self.keys.root
        self.witness = self.keys.witness

    def reread_roots(self) -> tuple[TrustRoot, ...]:
        """Every root version the keys directory holds now, its newest becoming
        :attr:`current_root`; the roots loaded at start when they cannot be read (logged,
        and :attr:`current_root` is kept)."""
        try:
            keys = self.hub_dir.load_keys(self.config.keys_dir)
        except EdgeGovError as exc:
            logger.log(
                logging.WARNING if self.rejections.warning_allowed("*/roots") else logging.DEBUG,
                "trust roots not re-read (%s): using those loaded at start",
                exc,
            )
            return self.keys.roots
        if keys.root.version != self.current_root.version:
            logger.info("trust root version %d read from the keys directory", keys.root.version)
        self.current_root = keys.root
        self.witness = keys.witness
        return keys.roots

    @classmethod
    def start(
        cls,
        config: HubConfig,
        hub_dir: HubDir,
        registry: Registry,
        keys: HubKeys,
        stats: HubStats,
        broker: EmbeddedBroker | None,
    ) -> ServiceContext:
        """The shared state of a hub starting on ``registry`` and ``keys``, its devices read."""
        devices = Devices(registry, config.unknown_rate)
        devices.refresh()
        return cls(
            config, hub_dir, registry, keys, stats, broker, devices, Rejections(registry, stats)
        )
