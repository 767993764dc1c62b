"""Read or write the retained message of one topic on a broker, from inside a test host.

``python -m tests.retained_probe read URL CAFILE TOPIC`` prints, as hex, what the broker
holds retained on ``TOPIC`` (an empty line if nothing arrives within a second);
``python -m tests.retained_probe write URL CAFILE TOPIC HEX`` publishes ``HEX`` retained
there (no ``HEX``: an empty payload, which clears it). ``URL`` carries the login; the client id
is its username. Multi-host tests run it inside a host's network namespace
(:mod:`tests.netns_support`), where the test process cannot connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from edge_agent.support.mqtt import BrokerSettings, connect

WAIT_S = 1.0


async def read(settings: BrokerSettings, topic: str) -> bytes | None:
    """The payload held retained on ``topic``; ``None`` if none arrives within ``WAIT_S``."""
    async with connect(settings, client_id=settings.username or "retained-probe") as connection:
        await connection.subscribe([topic])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S):
                async for message in connection.messages():
                    if message.topic == topic and message.retain:
                        return message.payload
    return None


async def write(settings: BrokerSettings, topic: str, payload: bytes) -> None:
    async with connect(settings, client_id=settings.username or "retained-probe") as connection:
        await connection.publish(topic, payload, retain=True)


def main(argv: list[str]) -> int:
    verb, url, ca_file, topic, *rest = argv
    settings = BrokerSettings.from_url(url, ca_file=ca_file or None)
    if verb == "write":
        asyncio.run(write(settings, topic, bytes.fromhex(rest[0] if rest else "")))
        return 0
    payload = asyncio.run(read(settings, topic))
    print("" if payload is None else payload.hex())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
