"""Print the message a broker holds retained on one topic, as hex (nothing if none).

``python -m tests.retained_probe URL CAFILE TOPIC`` (``URL`` with the login) connects,
subscribes to ``TOPIC`` and prints what arrives flagged retained within a second. Multi-host
tests run it inside a host's network namespace, where the test process cannot connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from edge_agent.support.mqtt import BrokerSettings, connect

WAIT_S = 1.0


async def retained(settings: BrokerSettings, topic: str) -> bytes | None:
    async with connect(settings, client_id=settings.username or "retained-probe") as connection:
        await connection.subscribe([topic])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_S):
                async for message in connection.messages():
                    if message.topic == topic and message.retain:
                        return message.payload
    return None


def main(argv: list[str]) -> int:
    url, ca_file, topic = argv
    payload = asyncio.run(retained(BrokerSettings.from_url(url, ca_file=ca_file), topic))
    print("" if payload is None else payload.hex())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
