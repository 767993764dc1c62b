"""What the broker holds on the retained topics the hub watches, and publishing to them.

The hub knows what the broker holds only from what it delivered back: every topic's digest
is noted when the hub publishes and when a message comes back on its subscriptions, so the
schedule does not send the same bytes to every device again, and the hub tells its own
messages from those it did not publish (strays, cleared by the schedule). The map belongs
to one connection: a reconnect starts afresh. At most :data:`MAX_REMEMBERED` topics are
remembered; past that the hub republishes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from edge_agent.support.mqtt import Connection
from hub.core.publications import Publication

__all__ = ["MAX_REMEMBERED", "PUBLISH_CHUNK", "STRAY_CLEAR_S", "Retained"]

PUBLISH_CHUNK = 64
"""QoS 1 publishes in flight at once when publishing many retained messages."""
MAX_REMEMBERED = 100_000
"""Retained topics whose current bytes the hub remembers; past that it republishes."""
STRAY_CLEAR_S = 1.0
"""Least seconds between two rounds clearing retained trust objects the hub does not own."""


class Retained:
    """The digests the broker holds per topic (this connection), the topics the hub owns,
    and the strays seen on them."""

    def __init__(self) -> None:
        self.published: dict[str, bytes] = {}
        """What the broker holds on each retained trust topic (sha256), on this connection."""
        self.owned: set[str] = set()
        """The retained trust topics the hub publishes on (as of its last snapshot)."""
        self.strays: set[str] = set()
        """Owned topics seen holding something the hub did not publish."""
        self.strays_due = 0.0
        """Monotonic time before which strays wait (they are cleared at most every
        ``STRAY_CLEAR_S``: each round re-reads the registry and the roots)."""

    def forget(self) -> None:
        """The connection is gone: what this one saw says nothing about the next."""
        self.published = {}
        self.strays = set()

    def note(self, topic: str, payload: bytes) -> None:
        """The broker now holds ``payload`` on ``topic``."""
        if topic in self.published or len(self.published) < MAX_REMEMBERED:
            self.published[topic] = hashlib.sha256(payload).digest()

    def holds(self, topic: str, payload: bytes) -> bool:
        """Whether the hub published exactly ``payload`` on ``topic`` (as far as it knows)."""
        return self.published.get(topic) == hashlib.sha256(payload).digest()

    def add_stray(self, topic: str) -> None:
        if len(self.strays) < MAX_REMEMBERED:
            self.strays.add(topic)

    async def publish(
        self, conn: Connection, publications: Sequence[Publication], *, remember: bool = False
    ) -> None:
        """Publish (QoS 1, a chunk in flight at a time); with ``remember``, skip what the
        broker holds with the same bytes already. Every topic's digest is noted, so that the
        hub tells its own messages coming back from those it did not publish.

        The digest is noted before the publish, so whatever reaches the broker after it (by
        anyone, seen on the hub's own subscription) overrides it in broker order; a failed
        publish forgets it.

        Raises:
            TransportError: a publish failed (the rest of its chunk was still sent).
        """
        published = self.published
        todo = []
        for publication in publications:
            digest = hashlib.sha256(publication.payload).digest()
            if remember and published.get(publication.topic) == digest:
                continue
            if publication.topic in published or len(published) < MAX_REMEMBERED:
                published[publication.topic] = digest
            todo.append((publication, digest))
        for start in range(0, len(todo), PUBLISH_CHUNK):
            chunk = todo[start : start + PUBLISH_CHUNK]
            results = await asyncio.gather(
                *(conn.publish(p.topic, p.payload, qos=p.qos, retain=p.retain) for p, _ in chunk),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                if remember:
                    for publication, digest in todo[start:]:
                        if published.get(publication.topic) == digest:
                            del published[publication.topic]
                raise failed[0]
