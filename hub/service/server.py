"""``edge-hub serve``: the hub's MQTT service (DESIGN.md section 5).

While it runs, the hub:

1. starts the embedded amqtt broker, unless it is given a broker;
2. connects to the broker, forever, with capped exponential backoff and full jitter;
3. on every connection: decides shared or direct lineage subscriptions, subscribes to the
   device topics of every region it knows, and re-publishes everything retained it is the
   source of (roots, bundles, revocations, acks), so a restarted broker loses nothing;
4. verifies each lineage batch against the device's stored log (:mod:`hub.core.ingest`), stores
   it in one transaction and only then publishes the signed, retained ack; records each
   device-signed status that is fresh (signed near the hub's time, newer than the one held:
   the only thing that moves "last heard from");
5. every ``freshness_interval_s`` publishes a signed freshness token for every channel with a
   bundle (whether or not the registry can record it), picks up devices, regions, bundles,
   revocations and a newer trust root added by other commands, and flushes the rejection
   counters;
6. attestation (:mod:`hub.service.evidence`, judged by :mod:`hub.service.verifier`): every
   ``attest_interval_s`` challenges every registered device with a fresh nonce, and at once
   (at most every ``attest_retry_s``) a device whose signed status reports
   ``attestation_failed`` or ``attestation_stale``; verifies each answer under the newest
   trust root it read and publishes the signed, retained result;
7. every ``rollout_interval_s`` moves staged rollouts on (:mod:`hub.service.rollout`);
8. clears (an empty retained message) what is retained on a trust or freshness topic of its
   regions that it does not publish on, and what it did not publish on a device's ack,
   challenge or attestation topic (a registered device's ack is restored instead), so
   agents do not fetch and refuse it on every reconnect.

Every message is bounded before it is parsed: a size cap per topic, then a signature check
paid from a budget of its own (:class:`~hub.core.limits.VerificationBudget`), and only for what
verified a token bucket per device, so traffic that is not a device's never spends that
device's budget. A message that fails is counted as a rejection against the registered
device whose topic it came on (one counter per code per device), or per code only when it
names no registered device, never acknowledged as that device's. Nothing a device sends can
stop the service: a message that fails in an unexpected way is logged and counted as
``internal_error``. docs/mqtt.md ("The hub under attack") has the rules and measurements.

This module is the composition root; each job is a module of its own:

- :mod:`hub.service.connection`: connect, subscribe, reconnect (2, 3);
- :mod:`hub.service.schedule`: the retained snapshot, freshness tokens, strays (3, 5, 8),
  by the one hub among those on the registry that holds the schedule lease
  (:mod:`hub.service.lease`);
- :mod:`hub.service.rollout`: staged rollouts (7);
- :mod:`hub.service.intake`: fair bursts, routing (:mod:`hub.core.routing`), verification,
  one transaction per burst;
- one handler per topic family: :mod:`hub.service.lineage` (4), :mod:`hub.service.status`
  (4), :mod:`hub.service.evidence` (6) and :mod:`hub.service.trust` (the topics the hub
  publishes on, 7);
- shared state: :mod:`hub.service.context`, :mod:`hub.service.retained`,
  :mod:`hub.service.rejections`; settings and counters: :mod:`hub.service.config`.

Use it in-process as ``async with HubService(HubConfig(hub_dir)) as hub: await
hub.wait_ready()`` (:class:`~hub.service.config.HubConfig`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from edge_agent.support.mqtt import BrokerSettings
from hub.console.context import ConsoleContext
from hub.console.listen import ConsoleListen
from hub.hubdir.layout import HubDir, HubKeys, ServeInfo
from hub.registry import Registry
from hub.service.announce import ServeAnnouncer, run_summaries
from hub.service.broker import EmbeddedBroker
from hub.service.config import HubConfig, HubStats
from hub.service.connection import HubConnection, Subscriptions
from hub.service.context import ServiceContext
from hub.service.evidence import EvidenceHandler
from hub.service.governance import Governance
from hub.service.intake import Intake
from hub.service.lease import ScheduleLease, lease_timing
from hub.service.lineage import LineageHandler
from hub.service.rollout import RolloutDriver
from hub.service.schedule import Schedule
from hub.service.status import StatusHandler
from hub.service.trust import TrustTopics

if TYPE_CHECKING:
    from hub.console.serve import ConsoleServer

__all__ = ["HubService"]

logger = logging.getLogger(__name__)

CANCEL_RETRY_S = 0.5
"""Seconds to wait for cancelled tasks before cancelling them again (see ``_cancel_all``)."""


@dataclass(frozen=True, slots=True)
class _Parts:
    """The parts of a started hub, wired to one :class:`ServiceContext`."""

    context: ServiceContext
    subscriptions: Subscriptions
    schedule: Schedule
    evidence: EvidenceHandler
    intake: Intake
    rollouts: RolloutDriver


class HubService:
    """The running hub: embedded broker (optional), MQTT connection loop, schedule."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.hub_dir = HubDir(config.hub_dir, config.registry)
        self.stats = HubStats()
        self._client_id = config.client_id or _default_client_id()
        self._broker: EmbeddedBroker | None = None
        self._settings: BrokerSettings | None = config.broker
        self._parts: _Parts | None = None
        self._connection: HubConnection | None = None
        self._governance: Governance | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._console: ConsoleServer | None = None
        self._announcer: ServeAnnouncer | None = None
        self._owns_serve_file = False

    # Lifecycle.

    @property
    def settings(self) -> BrokerSettings:
        """The broker the hub connects to (the embedded one's address once started)."""
        if self._settings is None:
            raise RuntimeError("the hub service is not started")
        return self._settings

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def embedded_broker(self) -> EmbeddedBroker | None:
        return self._broker

    @property
    def registry(self) -> Registry:
        return self._started.context.registry

    @property
    def governance(self) -> Governance:
        """The operator's actions on this running hub (the console's push, revoke,
        challenge and register), published on its own connection."""
        if self._governance is None:
            raise RuntimeError("the hub service is not started")
        return self._governance

    @property
    def console(self) -> ConsoleServer | None:
        """The console this hub serves (``config.console``), once started."""
        return self._console

    @property
    def shared(self) -> bool:
        """Whether lineage comes through shared subscriptions (decided on connecting)."""
        return self._parts is not None and self._parts.subscriptions.shared

    async def __aenter__(self) -> HubService:
        """Load keys, open the registry, start the broker (if embedded) and the tasks.

        Raises:
            ConfigError: the hub directory, keys or registry are not usable.
            TransportError: the embedded broker cannot listen.
        """
        try:
            keys = self.hub_dir.load_keys(self.config.keys_dir)
            if self.config.write_serve_file:
                self._owns_serve_file = self._stack.enter_context(self.hub_dir.serve_file_claim())
            registry = self._stack.enter_context(self.hub_dir.open_registry())
            if self.config.broker is None:
                self._broker = EmbeddedBroker(
                    self.config.bind,
                    self.config.port,
                    self.config.broker_limits,
                    unthrottled=frozenset({self._client_id}),
                )
                self._settings = await self._broker.start()
                self._stack.push_async_callback(self._broker.stop)
            if self.config.status_lines is not None:
                self._announcer = ServeAnnouncer(
                    self.settings.url, self.config.status_lines, self.stats
                )
            parts = self._start(registry, keys)
            self._stack.callback(parts.context.rejections.flush)
            # Closed first: the registry operation running finishes before the counters
            # are recorded and the registry closes.
            self._stack.callback(parts.context.db.close)
            connection = self._connect(parts)
            self._governance = Governance(
                parts.context, parts.evidence, current=connection.current, refresh=self.tick
            )
            if self._owns_serve_file:
                self._write_serve_file()
                self._stack.callback(self.hub_dir.remove_serve_info, os.getpid())
            elif self.config.write_serve_file:
                logger.warning(
                    "another edge-hub serve runs on %s: its serve.json stays (commands "
                    "publish through its broker)",
                    self.hub_dir.path,
                )
            group = await self._stack.enter_async_context(asyncio.TaskGroup())
            stop, current = self._stop, connection.current
            self._tasks = [
                group.create_task(connection.run(stop), name="edge-hub-mqtt"),
                group.create_task(parts.schedule.run(current, stop), name="edge-hub-schedule"),
                group.create_task(parts.evidence.run(current, stop), name="edge-hub-attest"),
                group.create_task(parts.rollouts.run(current, stop), name="edge-hub-rollout"),
            ]
            if self._announcer is not None:
                summaries = run_summaries(
                    self._announcer,
                    registry,
                    parts.context.db,
                    self.config.summary_interval_s,
                    stop,
                )
                self._tasks.append(group.create_task(summaries, name="edge-hub-summary"))
            if self.config.console is not None:
                self._console = await self._start_console(self.config.console)
        except BaseException:
            await self._stack.aclose()
            raise
        logger.info("hub serving on %s as %s", self.settings.url, self._client_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        await _cancel_all(self._tasks)
        await self._stack.aclose()

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until connected, subscribed and every retained message re-published.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            await self._connected.ready.wait()

    def request_stop(self) -> None:
        """Make :meth:`serve_forever` return (signal handlers call this)."""
        self._stop.set()

    async def serve_forever(self) -> None:
        """Run until :meth:`request_stop`.

        Raises:
            ConfigError: the broker settings cannot be used (TLS files unreadable).
        """
        await self._stop.wait()
        fatal = None if self._connection is None else self._connection.fatal
        if fatal is not None:
            raise fatal

    async def tick(self) -> None:
        """Run one round of the schedule now (freshness, reconciliation, counters)."""
        await self._started.schedule.tick(self._connected.current())

    async def tick_rollouts(self) -> None:
        """Run one round of the rollout driver now (docs/rollout.md)."""
        await self._started.rollouts.tick(self._connected.current())

    # Composition.

    def _start(self, registry: Registry, keys: HubKeys) -> _Parts:
        """Wire the parts of the hub to ``registry`` and ``keys`` (no task started)."""
        context = ServiceContext.start(
            self.config, self.hub_dir, registry, keys, self.stats, self._broker
        )
        subscriptions = Subscriptions(registry, context.db, self.stats)
        lease = ScheduleLease(
            registry,
            self._client_id,
            lease_timing(self.config.freshness_interval_s),
            None if self._announcer is None else self._announcer.note,
        )
        schedule = Schedule(context, subscriptions, lease)
        evidence = EvidenceHandler(context)
        intake = Intake(
            context,
            schedule,
            trust=TrustTopics(context),
            lineage=LineageHandler(context),
            status=StatusHandler(context, evidence),
            evidence=evidence,
        )
        self._parts = _Parts(
            context, subscriptions, schedule, evidence, intake, RolloutDriver(context)
        )
        return self._parts

    async def _start_console(self, listen: ConsoleListen) -> ConsoleServer:
        """Serve the console on ``listen`` until the hub stops.

        Raises:
            ConfigError: the console cannot listen there or its TLS files are not usable.
        """
        # The web stack (uvicorn, Starlette, Jinja2) is imported by a hub serving the
        # console only: every other edge-hub command starts without it.
        from hub.console.serve import ConsoleServer

        server = ConsoleServer(self._console_context(), listen)
        return await self._stack.enter_async_context(server)

    def _console_context(self) -> ConsoleContext:
        """What the console reads: a registry connection of its own (its pages read only
        what is committed) and the keys as the keys directory holds them now."""
        listen = self.config.console
        assert listen is not None
        context = ConsoleContext(
            registry=self._stack.enter_context(self.hub_dir.open_registry()),
            hub_dir=self.hub_dir,
            keys=lambda: self.hub_dir.load_keys(self.config.keys_dir),
            actions=self.governance,
            secure=listen.tls,
        )
        self._stack.callback(context.db.close)
        return context

    def _connect(self, parts: _Parts) -> HubConnection:
        """The connection of the started hub to its broker (not yet running)."""
        self._connection = HubConnection(
            self.config,
            self.stats,
            self.settings,
            self._client_id,
            parts.subscriptions,
            embedded=self._broker is not None,
            publish_all=parts.schedule.publish_all,
            serve=parts.intake.consume,
            on_shared=self._on_shared,
            forget=parts.context.retained.forget,
            announcer=self._announcer,
        )
        return self._connection

    @property
    def _started(self) -> _Parts:
        if self._parts is None:
            raise RuntimeError("the hub service is not started")
        return self._parts

    @property
    def _connected(self) -> HubConnection:
        if self._connection is None:
            raise RuntimeError("the hub service is not started")
        return self._connection

    def _on_shared(self) -> None:
        if self._owns_serve_file:
            self._write_serve_file()

    def _write_serve_file(self) -> None:
        self.hub_dir.write_serve_info(
            ServeInfo(
                self.settings,
                os.getpid(),
                self._broker is not None,
                self.shared,
                self.config.token_ttl_s,
                self.hub_dir.served_registry,
            )
        )


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until each has finished, cancelling again as needed: in
    Python 3.11 ``asyncio.wait_for`` (inside aiomqtt's publish) swallows a cancellation that
    races the PUBACK it waits for (CPython gh-86296), and the task would then keep serving."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        pending = [t for t in pending if not t.done()]


def _default_client_id() -> str:
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:32]
    return f"edge-hub-{host}-{os.getpid()}-{os.urandom(3).hex()}"
