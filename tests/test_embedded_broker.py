"""The embedded amqtt broker's workarounds (hub/service/broker.py): retained messages go only to
the client whose subscription they match, and many clients subscribing, leaving and being
broadcast to at once break nothing."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from edge_agent.support.mqtt import Incoming, connect
from hub.service import broker as broker_module
from hub.service.broker import EmbeddedBroker, _SubscriptionTable
from hub.service.broker_limits import BrokerLimits
from tests.brokers import amqtt_broker
from tests.hub_support import WAIT_S, Watcher, watching

CLIENTS = 60


@pytest.mark.asyncio
async def test_a_new_client_gets_no_retained_message_of_another_clients_subscription() -> None:
    async with amqtt_broker() as broker:
        settings = broker.settings
        async with watching(settings, ["edgegov/v1/eu-1/device/gw-001/ack"], "gw-001") as owner:
            await owner.connection.publish(
                "edgegov/v1/eu-1/device/gw-001/ack", b"for gw-001", retain=True
            )
            assert (await owner.next("edgegov/v1/eu-1/device/gw-001/ack")).payload == b"for gw-001"
            async with watching(settings, ["edgegov/v1/eu-1/device/gw-002/ack"], "gw-002") as other:
                await other.connection.publish(
                    "edgegov/v1/eu-1/device/gw-002/ack", b"for gw-002", retain=True
                )
                assert (await other.next(lambda m: True)).payload == b"for gw-002"
                assert other.queue.empty()


@pytest.mark.asyncio
async def test_a_client_still_gets_the_retained_messages_of_its_own_subscriptions() -> None:
    async with amqtt_broker() as broker:
        async with connect(broker.settings, client_id="hub") as hub:
            await hub.publish("edgegov/v1/eu-1/root/1", b"root", retain=True)
            await hub.publish("edgegov/v1/eu-1/revoke/device/gw-001", b"revoked", retain=True)
        async with watching(
            broker.settings, ["edgegov/v1/eu-1/root/+", "edgegov/v1/eu-1/revoke/#"], "late"
        ) as late:
            received = {(await late.next(lambda m: True)).topic for _ in range(2)}
    assert received == {"edgegov/v1/eu-1/root/1", "edgegov/v1/eu-1/revoke/device/gw-001"}


@pytest.mark.asyncio
async def test_clients_connecting_subscribing_and_leaving_during_broadcasts_miss_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="amqtt")
    async with amqtt_broker() as broker:
        settings = broker.settings
        async with connect(settings, client_id="hub") as hub:
            for index in range(CLIENTS):
                await hub.publish(f"edgegov/v1/eu-1/device/gw-{index}/ack", b"ack", retain=True)
            await hub.publish("edgegov/v1/eu-1/bundle/all/_", b"bundle", retain=True)

            async def device(index: int, subscribed: asyncio.Event) -> list[str]:
                # Each connects once the one before has subscribed: what amqtt got wrong
                # shows on a connect that follows other clients' subscriptions.
                await (events[index - 1].wait() if index else asyncio.sleep(0))
                filters = [
                    f"edgegov/v1/eu-1/device/gw-{index}/ack",
                    f"edgegov/v1/eu-1/device/gw-{index}/challenge",
                    "edgegov/v1/eu-1/bundle/all/#",
                ]
                async with watching(settings, filters, f"gw-{index}") as watcher:
                    topics = [(await watcher.next(lambda m: True)).topic for _ in range(2)]
                    subscribed.set()
                    topics.append((await watcher.next(lambda m: True)).topic)
                    return topics + [m.topic for m in _drain(watcher)]

            async def churn() -> None:
                for index in range(CLIENTS):
                    async with watching(
                        settings, [f"edgegov/v1/eu-1/device/churn-{index}/+"], f"churn-{index}"
                    ):
                        await asyncio.sleep(0)

            events = [asyncio.Event() for _ in range(CLIENTS)]
            devices = [asyncio.create_task(device(i, e)) for i, e in enumerate(events)]
            churning = asyncio.create_task(churn())
            subscribed = asyncio.gather(*(e.wait() for e in events))
            done, _ = await asyncio.wait(
                [subscribed, *devices], timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
            assert subscribed in done, [d.exception() for d in done if d is not subscribed]
            await hub.publish("edgegov/v1/eu-1/bundle/all/news", b"last")
            received = await asyncio.gather(*devices)
            await churning
    assert [sorted(t) for t in received] == [
        sorted(
            [
                "edgegov/v1/eu-1/bundle/all/_",
                f"edgegov/v1/eu-1/device/gw-{i}/ack",
                "edgegov/v1/eu-1/bundle/all/news",
            ]
        )
        for i in range(CLIENTS)
    ]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("amqtt")] == []


def test_the_subscription_table_can_change_while_it_is_walked() -> None:
    table = _SubscriptionTable({"a": [("s1", 1)], "b": [("s2", 1)]})
    for topic in table:
        table[f"{topic}/new"] = []
        del table[topic]
    for topic, _subscribers in table.items():
        table[f"{topic}/again"] = []
    assert sorted(table) == ["a/new", "a/new/again", "b/new", "b/new/again"]


def _drain(watcher: Watcher) -> list[Incoming]:
    return [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]


@pytest.mark.asyncio
async def test_a_shutdown_stuck_in_amqtt_is_abandoned_and_the_port_freed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(broker_module, "STOP_GRACE_S", 0.2)
    broker = EmbeddedBroker("127.0.0.1", 0, BrokerLimits(), frozenset())
    await broker.start()
    port = broker.port
    amqtt = broker._broker
    assert amqtt is not None
    monkeypatch.setattr(amqtt, "shutdown", asyncio.Event().wait)
    with caplog.at_level(logging.ERROR, logger="hub.service.broker"):
        await asyncio.wait_for(broker.stop(), timeout=10)
    assert "abandoning it and closing the listener" in caplog.text
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
