"""Whether a ``channels`` row can be published: its region and channel make the MQTT topics
its bundle and freshness token go to. A row that cannot (damage, or data written by no hub)
is skipped by the schedule, named in its log, and reported by ``edge-hub registry check``.
Pure: no I/O."""

from __future__ import annotations

from edge_agent.protocol import topics
from edge_agent.protocol.topics import Channel, ChannelKind

__all__ = ["channel_row_problem"]


def channel_row_problem(region: object, channel: object) -> str | None:
    """What is wrong with the ``channels`` row of ``region`` and ``channel`` as stored
    (``None``: nothing; it publishes)."""
    if not isinstance(region, str) or not isinstance(channel, str):
        return "its region and channel must be text"
    kind, slash, name = channel.partition("/")
    kinds = ", ".join(k.value for k in ChannelKind)
    if not slash or kind not in {k.value for k in ChannelKind}:
        return f"the channel is not KIND/NAME with KIND one of {kinds}"
    try:
        topics.bundle_topic(region, Channel(ChannelKind(kind), name))
    except ValueError as exc:
        return str(exc)
    return None
