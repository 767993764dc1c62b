"""The embedded MQTT broker ``edge-hub serve`` starts when no ``--broker`` is given: amqtt 0.12.

One command, no install, MQTT 3.1.1, in the hub's own event loop. What amqtt 0.12 does and
does not do, as the hub relies on it (checked against its source and pinned by tests):

- retained messages: kept in memory, delivered on subscribe, replaced by a newer retained
  publish, cleared by an empty one; **lost when the broker stops** (the hub re-publishes
  everything retained whenever it connects);
- QoS 1 both ways, and the last will (retained too) on an abnormal disconnect;
- **no shared subscriptions**: a ``$share/group/filter`` subscription is granted but taken
  as a literal filter that never matches, so the hub subscribes directly on amqtt
  (:attr:`EmbeddedBroker.shared_subscriptions` is ``False``);
- anonymous access, bound to loopback by default: it is for one host (a demo, a lab, a hub
  beside its devices). Production fleets use Mosquitto or a cluster with credentials and
  an ACL (``packaging/mosquitto/``).

Two amqtt 0.12 defects are worked around here (:class:`_Broker`, pinned by
``tests/test_embedded_broker.py``): on every connect it sent the new client the retained
messages matching *any* client's subscriptions (every agent got every other agent's acks,
and a fleet connecting cost the square of its size), and it walks its subscription table
across awaits, so a client subscribing or leaving meanwhile aborted that walk with
``RuntimeError: dictionary changed size during iteration`` (and the connecting client's
session with it).

amqtt is imported only here (and only by the hub: the agent never runs a broker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import TracebackType

from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.errors import BrokerError  # type: ignore[import-untyped]
from amqtt.session import Session  # type: ignore[import-untyped]

from edge_agent.errors import TransportError
from edge_agent.sync.mqtt import BrokerSettings

__all__ = ["EmbeddedBroker"]

logger = logging.getLogger(__name__)

_LISTENER = "default"


class _SubscriptionTable(dict[str, list[tuple[object, int]]]):
    """amqtt's filter -> subscribers table, iterated over snapshots: amqtt loops over it
    with awaits inside, while other clients' subscribes and disconnects change it."""

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> list[tuple[str, list[tuple[object, int]]]]:  # type: ignore[override]
        return list(super().items())


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker with the subscription table above, and retained messages sent to a
    client only for its own subscriptions (amqtt tried every client's on each connect)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SubscriptionTable()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        subscribers = self._subscriptions.get(subscription[0], ())
        if any(s.client_id == session.client_id for s, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port`` (port 0: a free port, fixed at first start).

    Use ``async with EmbeddedBroker() as broker:`` or :meth:`start` / :meth:`stop`; a stopped
    broker can be started again on the same port (its retained messages are gone).
    """

    shared_subscriptions = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not a TCP port")
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def settings(self) -> BrokerSettings:
        """How to connect to it (valid once started)."""
        if self._broker is None:
            raise RuntimeError("the embedded broker is not running")
        return BrokerSettings(self.host, self.port)

    async def start(self) -> BrokerSettings:
        """Start listening.

        Raises:
            TransportError: the address cannot be bound (port in use, bad host).
        """
        if self._broker is not None:
            raise RuntimeError("the embedded broker is running already")
        broker = _Broker(self._config(), plugin_namespace="edgegov.hub.broker.plugins")
        try:
            await broker.start()
        except BrokerError as exc:
            raise TransportError(
                f"cannot start the embedded MQTT broker on {self.host}:{self.port}: "
                f"{exc.__cause__ or exc} (choose another --port, or 0 for a free one)"
            ) from exc
        self._broker = broker
        self.port = _bound_port(broker, self.port)
        logger.info("embedded amqtt broker listening on %s:%d", self.host, self.port)
        return self.settings

    async def stop(self) -> None:
        """Stop the broker and close every client connection (idempotent)."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        await asyncio.shield(broker.shutdown())
        logger.info("embedded amqtt broker on %s:%d stopped", self.host, self.port)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _config(self) -> dict[str, object]:
        return {
            "listeners": {
                _LISTENER: {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}
            },
            # Only anonymous access; amqtt's event/packet loggers and $SYS publisher stay off.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }


def _bound_port(broker: Broker, requested: int) -> int:
    """The port the listener actually bound (differs from ``requested`` only for 0).

    amqtt exposes its servers only as a private mapping; pinned to amqtt 0.12, checked here.
    """
    if requested:
        return requested
    server = getattr(broker, "_servers", {}).get(_LISTENER)
    sockets = getattr(getattr(server, "instance", None), "sockets", None)
    if not sockets:
        raise TransportError("the embedded MQTT broker did not report its listening port")
    return int(sockets[0].getsockname()[1])
