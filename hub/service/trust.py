"""The trust topics family: messages on topics the hub itself publishes on.

Roots, bundles, revocations and freshness tokens (retained, per region), and a device's ack,
challenge and attestation topics come back to the hub on its own subscriptions. None is
handled as a device's message; each is only noted (:meth:`TrustTopics.noted`): what the
broker now holds, so the schedule does not send the same bytes to every device again, and
whether it is a stray (something the hub did not publish), which the schedule clears.
"""

from __future__ import annotations

import time

from edge_agent.errors import EdgeGovError
from edge_agent.protocol.attestation import verify_challenge, verify_result
from edge_agent.protocol.shipping import verify_ack
from edge_agent.protocol.topics import DeviceLeaf, is_trust_topic
from edge_agent.support.mqtt import Incoming
from hub.core.routing import hub_device_leaf
from hub.service.context import ServiceContext, wall
from hub.service.retained import MAX_REMEMBERED

__all__ = ["TrustTopics"]


class TrustTopics:
    """Notes what comes back on the topics the hub publishes on."""

    def __init__(self, context: ServiceContext) -> None:
        self._context = context

    def noted(self, message: Incoming) -> bool:
        """Whether ``message`` is on a retained trust topic; if so, remember what the broker
        now holds there, whoever published it, so the schedule does not send the same bytes
        to every device again. Foreign bytes only differ from what the hub would publish,
        which it then does. On the embedded broker the hub asks it what it holds: a publish
        delivered but not retained (its store full) is no reason to skip the topic."""
        leaf = hub_device_leaf(message.topic)
        if leaf is not None:
            self._note_device_leaf(message, leaf)
            return True
        if not is_trust_topic(message.topic):
            return False
        retained, broker = self._context.retained, self._context.broker
        if not message.payload or (
            broker is not None and not broker.retains(message.topic, message.payload)
        ):
            # Cleared, or delivered but not retained (the embedded broker's store was full
            # for `edge-hub bundle push`'s own connection): this round publishes it again.
            retained.published.pop(message.topic, None)
            return True
        if message.topic not in retained.owned:
            retained.add_stray(message.topic)
        retained.note(message.topic, message.payload)
        return True

    def _note_device_leaf(self, message: Incoming, leaf: DeviceLeaf) -> None:
        """Note a message on a device's ack, challenge or attestation topic (which only the
        hub publishes on) as a stray unless it is what this hub published there, or signed
        by its trust root as another hub's would be (checked, for registered devices only,
        within the verification budget: past it, it is a stray; restoring an ack costs one
        publish)."""
        topic, payload = message.topic, message.payload
        retained, budget = self._context.retained, self._context.budget
        if not payload:
            retained.published.pop(topic, None)
            return
        if retained.holds(topic, payload) or len(retained.strays) >= MAX_REMEMBERED:
            return
        device_id = topic.split("/")[4]
        if self._context.devices.cached(device_id) is None:
            retained.add_stray(topic)
            return
        charged = budget.take(topic, payload, time.monotonic())
        if charged is not None and self._signed_by_a_hub(leaf, device_id, payload):
            budget.refund(charged, payload)
            return
        retained.add_stray(topic)

    def _signed_by_a_hub(self, leaf: DeviceLeaf, device_id: str, payload: bytes) -> bool:
        root = self._context.keys.root
        try:
            if leaf is DeviceLeaf.ACK:
                verify_ack(payload, root=root, device=device_id)
            elif leaf is DeviceLeaf.ATTESTATION:
                verify_result(payload, root=root, device=device_id)
            else:
                verify_challenge(payload, root=root, device=device_id, now=wall())
        except EdgeGovError:
            return False
        return True
