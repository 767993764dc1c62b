"""The operator's governance actions, shared by the ``edge-hub`` commands and the console.

What ``edge-hub bundle push``, ``revoke``, ``attest challenge`` and ``device add`` do to the
registry lives here once, as functions of an open registry and the hub's keys:

- :func:`plan_bundle` verifies a signed bundle exactly as its devices would
  (:func:`hub.core.bundles.verify_operator_bundle`) and plans where it goes
  (:func:`hub.core.push.plan_push`); nothing is recorded, so it is also the preview;
- :func:`prepare_push` records the planned bundle and returns what to publish (the bundle
  on each channel, fresh tokens pinning it);
- :func:`prepare_revocation` signs the region's next revocation with the hub's revoke keys,
  records it and returns what to publish (the revocation, fresh tokens with its epoch);
- :func:`device_record` checks what ``device add`` is given and builds the record;
- :func:`check_shadow` verifies a shadow bundle (a rollout's candidate) as its devices would.
- :func:`issue_region_directory` records the region's next signed device directory at
  once when a registration changed what it lists, before anything is published.

:class:`Governance` is the same actions on a running ``edge-hub serve``: it publishes on the
hub's own MQTT connection at once, so a console action reaches devices as promptly as the
schedule's own messages. Without a connection (the broker is away) the action stays
recorded and the hub publishes it when it reconnects (:meth:`Schedule.publish_all
<hub.service.schedule.Schedule.publish_all>`). Signing keys for roots and policy are never
read here: bundles arrive signed; only the online revoke, freshness and verifier keys sign.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from edge_agent.errors import BundleError, ConfigError, EdgeGovError, TransportError
from edge_agent.protocol import topics
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.keys import PrivateKey, public_key_from_pem
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.protocol.topics import Channel
from hub.console.operations import Published
from hub.core.bundles import verify_operator_bundle
from hub.core.publications import (
    Publication,
    parse_channel,
    revocation_publications,
    shadow_publication,
)
from hub.core.push import (
    HubInventory,
    PushPlan,
    plan_push,
    resolve_key_id,
    revocation_region,
    sign_next_revocation,
)
from hub.core.rollout import check_clear_of_rollouts
from hub.hubdir.layout import HubKeys
from hub.hubdir.profiles import check_profile
from hub.registry import (
    DeviceRecord,
    IssuedDirectory,
    IssuedRevocation,
    PublishedBundle,
    Registry,
)
from hub.service.context import CurrentConnection, ServiceContext, wall
from hub.service.evidence import EvidenceHandler
from hub.service.publish import issue_directories, issue_freshness

__all__ = [
    "RESERVED_DEVICE_IDS",
    "Governance",
    "check_shadow",
    "device_record",
    "inventory",
    "issue_region_directory",
    "plan_bundle",
    "prepare_push",
    "prepare_revocation",
]

logger = logging.getLogger(__name__)

RESERVED_DEVICE_IDS = frozenset({"hub"})
"""Names a device may not take: ``hub`` is the hub's MQTT username in the Mosquitto ACL."""


def plan_bundle(
    registry: Registry, keys: HubKeys, data: bytes, *, now: int, lift_revocations: bool = False
) -> PushPlan:
    """Verify ``data`` as its target devices would at the hub's clock ``now`` and plan
    where it goes against what the registry holds; nothing is recorded.

    Raises:
        BundleError: a device of the target would refuse it (signatures, expiry, issued
            ahead of ``now``, a rollback or conflict on a channel, a revoked version).
        ConfigError: it would lift revocations on devices it targets and
            ``lift_revocations`` is false, or an active rollout of its region uses one of
            its channels or devices (:func:`hub.core.rollout.check_clear_of_rollouts`).
    """
    bundle = verify_operator_bundle(data, root=keys.root, now=now)
    plan = plan_push(
        bundle,
        root=keys.root,
        devices=registry.devices(),
        current=registry.current_bundles(bundle.target.region),
        revocations=registry.current_revocations(),
        lift_revocations=lift_revocations,
    )
    check_clear_of_rollouts(
        registry.rollouts(active=True),
        region=bundle.target.region,
        channels=plan.channels,
        targeted=plan.targeted,
    )
    return plan


def prepare_push(
    registry: Registry,
    keys: HubKeys,
    data: bytes,
    *,
    now: int,
    token_ttl_s: int,
    lift_revocations: bool = False,
) -> tuple[PushPlan, list[Publication]]:
    """:func:`plan_bundle`, then record the bundle as current on its channels and return
    what to publish (the bundle on each channel, and fresh tokens pinning it).

    The plan and the records are one write group, so no rollout starts and no other push
    lands between what the plan read and what it records.

    Raises:
        BundleError, ConfigError: as :func:`plan_bundle` (nothing recorded).
        RegistryError: the write failed; nothing changed.
    """
    with registry.write_group():
        plan = plan_bundle(registry, keys, data, now=now, lift_revocations=lift_revocations)
        bundle = plan.bundle
        registry.record_bundle(
            bundle=PublishedBundle(
                region=bundle.target.region,
                channel="",
                version=bundle.version,
                digest=bundle.digest,
                data=bundle.raw,
                expires_at=bundle.expires_at,
                max_offline=bundle.max_offline,
                pushed_at=now,
            ),
            issued_at=bundle.issued_at,
            target=bundle.target.as_cbor(),
            channels=plan.channels,
        )
        publications = [
            Publication(topics.bundle_topic(bundle.target.region, parse_channel(c)), bundle.raw)
            for c in plan.channels
        ]
        publications += issue_freshness(
            registry,
            key=keys.freshness,
            now=now,
            ttl_s=token_ttl_s,
            region=bundle.target.region,
            channels=plan.channels,
        )
    return plan, publications


def check_shadow(keys: HubKeys, region: str, data: bytes, *, now: int) -> None:
    """Check that ``data`` is a shadow bundle the devices of ``region`` would accept as
    their bundle at the hub's clock ``now`` (:func:`verify_operator_bundle`: signatures,
    threshold, expiry, not issued ahead, policy compiles) and is for ``region``. Rollback
    and conflict are left to each device, against the bundle it holds (it refuses the
    shadow with the real bundle's code).

    Raises:
        BundleError: a device would refuse it (``bundle_target`` for another region).
    """
    bundle = verify_operator_bundle(data, root=keys.root, now=now)
    if bundle.target.region != region:
        raise BundleError(
            f"the shadow bundle is for region {bundle.target.region!r}, not {region!r}: "
            "its devices would refuse it",
            code="bundle_target",
        )


def inventory(registry: Registry) -> HubInventory:
    """What a revocation may name, read from ``registry``."""
    regions = tuple(registry.regions())
    versions = {region: tuple(registry.bundle_versions(region)) for region in regions}
    return HubInventory(tuple(registry.devices()), regions, versions)


def prepare_revocation(
    registry: Registry,
    keys: HubKeys,
    signers: Sequence[PrivateKey],
    scope: tuple[RevocationKind, str],
    *,
    region: str | None,
    reason: str,
    now: int,
    token_ttl_s: int,
    force: bool = False,
) -> tuple[IssuedRevocation, list[Publication]]:
    """Sign (with ``signers``, the hub's revoke keys) and record the region's next
    revocation; return it and what to publish (the revocation, and fresh tokens announcing
    its kill epoch).

    Raises:
        ConfigError: a scope this hub does not know (unless ``force``: see
            :func:`hub.core.push.revocation_region`), an ambiguous region, or a value that
            cannot go into a topic.
        RevocationError: the revoke keys fall short of the threshold.
        RegistryError: the write failed (or its epoch was taken meanwhile: run it again).
    """
    kind, value = scope
    region = revocation_region(inventory(registry), kind, value, region, force=force)
    issued = sign_next_revocation(
        root=keys.root,
        signers=signers,
        region=region,
        kind=kind,
        value=value,
        reason=reason,
        kill_epoch=registry.kill_epoch(region),
        now=now,
    )
    registry.record_revocation(issued)
    publications = revocation_publications([issued])
    publications += issue_freshness(
        registry, key=keys.freshness, now=now, ttl_s=token_ttl_s, region=region
    )
    return issued, publications


def device_record(
    device_id: str,
    *,
    region: str,
    groups: Sequence[str],
    profile: str,
    public_key_pem: str,
    added_at: int,
) -> DeviceRecord:
    """The record ``device add`` registers, each name checked as it will appear in topics.

    Raises:
        ConfigError: a name that cannot be a topic level, a reserved device id, a device id
            of dots only (``.`` and ``..`` are path steps in the console's ``/devices/ID``
            links), or a public key that is not an Ed25519 PEM public key.
    """
    try:
        for value, what in [(device_id, "device id"), (region, "region")] + [
            (g, "group") for g in groups
        ]:
            topics.check_topic_name(value, what)
        key = public_key_from_pem(public_key_pem)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if device_id in RESERVED_DEVICE_IDS:
        raise ConfigError(f"{device_id!r} is reserved (the hub's MQTT user); choose another")
    if not device_id.strip("."):
        raise ConfigError(
            f"device id {device_id!r} is only dots, which a URL path reads as a directory "
            "step: include a letter or digit"
        )
    if not profile:
        raise ConfigError("a device needs a firmware profile name")
    return DeviceRecord(
        device_id, region, tuple(sorted(set(groups))), profile, key, added_at=added_at
    )


def issue_region_directory(
    registry: Registry, witness: PrivateKey | None, *, region: str, now: int, ttl_s: int
) -> IssuedDirectory | None:
    """Record now the next device directory version of every region where one is due (a
    device added, removed or re-keyed: :func:`hub.core.directory.next_directory`), as
    ``edge-hub device add`` and a registration on the running hub both do, so agents can
    verify the new device's receipts as soon as the version reaches them: the running hub
    publishes it on its connection, or when it reconnects. Returns the directory ``region``
    holds then; ``None`` without a verifier key to sign with (the running hub issues it).

    Raises:
        RegistryError: the registry cannot be read or written.
    """
    if witness is None:
        return None
    issue_directories(registry, key=witness, now=now, ttl_s=ttl_s)
    return registry.directory(region)


class Governance:
    """The governance actions on a running hub: recorded in its registry, signed with its
    online keys, published on its own connection at once.

    ``refresh`` is the hub's schedule round (devices and regions re-read, subscriptions
    updated, the retained snapshot and freshness tokens republished), run after a device is
    registered so its region is subscribed at once.
    """

    def __init__(
        self,
        context: ServiceContext,
        evidence: EvidenceHandler,
        *,
        current: CurrentConnection,
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self._context = context
        self._evidence = evidence
        self._current = current
        self._refresh = refresh

    @property
    def registry(self) -> Registry:
        return self._context.registry

    def keys(self) -> HubKeys:
        """The hub's keys as the keys directory holds them now (as every ``edge-hub``
        command reads them: a root rotated while the hub runs is used at once).

        Raises:
            ConfigError: no root or no freshness key of the current root there.
            RootError: a root file does not verify.
        """
        context = self._context
        return context.hub_dir.load_keys(context.config.keys_dir)

    async def preview_push(self, data: bytes, *, lift_revocations: bool = False) -> PushPlan:
        """:func:`plan_bundle` at the hub's clock: what a push would do, recording nothing."""
        return await self._context.db(
            plan_bundle,
            self.registry,
            self.keys(),
            data,
            now=wall(),
            lift_revocations=lift_revocations,
        )

    async def push(
        self, data: bytes, *, lift_revocations: bool = False
    ) -> tuple[PushPlan, Published]:
        """Verify, record and publish a signed bundle (:func:`prepare_push`, on the registry
        gateway's worker: published only once recorded).

        Raises:
            BundleError, ConfigError, RegistryError: as :func:`prepare_push`.
        """
        plan, publications = await self._context.db(
            prepare_push,
            self.registry,
            self.keys(),
            data,
            now=wall(),
            token_ttl_s=self._context.config.token_ttl_s,
            lift_revocations=lift_revocations,
        )
        return plan, await self._publish(publications)

    async def preview_revocation(
        self, scope: tuple[RevocationKind, str], *, region: str | None
    ) -> str:
        """The region the revocation of ``scope`` would go to; nothing is signed.

        Raises:
            ConfigError: as :func:`hub.core.push.revocation_region` (never forced: the
                console revokes only what this hub knows).
        """
        kind, value = scope
        known = await self._context.db(inventory, self.registry)
        return revocation_region(known, kind, value, region, force=False)

    def resolve_key(self, text: str) -> str:
        """The full hex id of the current root's key whose id starts with ``text``.

        Raises:
            ConfigError: as :func:`hub.core.push.resolve_key_id`.
        """
        return resolve_key_id(text, self.keys().root)

    async def revoke(
        self,
        scope: tuple[RevocationKind, str],
        *,
        region: str | None,
        reason: str,
    ) -> tuple[IssuedRevocation, Published]:
        """Sign with the hub's revoke keys, record and publish a revocation
        (:func:`prepare_revocation`, on the registry gateway's worker: its kill epoch is
        recorded before it is published).

        Raises:
            ConfigError, RevocationError, RegistryError: as :func:`prepare_revocation`.
        """
        context = self._context
        keys = self.keys()
        signers = context.hub_dir.revoke_keys(keys.root, context.config.keys_dir)
        issued, publications = await context.db(
            prepare_revocation,
            self.registry,
            keys,
            signers,
            scope,
            region=region,
            reason=reason,
            now=wall(),
            token_ttl_s=context.config.token_ttl_s,
        )
        return issued, await self._publish(publications)

    async def challenge(self, device_id: str) -> Challenge:
        """Challenge a registered device's attestation now, on the hub's connection; the
        running hub verifies its answer (:mod:`hub.service.evidence`).

        Raises:
            ConfigError: the device is not registered, or the hub has no verifier key.
            TransportError: the hub is not connected to its broker (nothing was sent).
            RegistryError: the nonce could not be recorded.
        """
        device = await self._context.db(self.registry.device, device_id)
        if device is None:
            raise ConfigError(f"device {device_id!r} is not registered")
        conn = self._current()
        if conn is None:
            raise TransportError("the hub is not connected to its broker: no challenge sent")
        return (await self._evidence.challenge_now(device, conn)).challenge

    def preview_register(
        self,
        device_id: str,
        *,
        region: str,
        groups: Sequence[str],
        profile: str,
        public_key_pem: str,
    ) -> DeviceRecord:
        """The record :meth:`register` would store (:func:`device_record`); nothing written.

        Raises:
            ConfigError: as :func:`device_record`, or a firmware profile no device can be
                enrolled with (:func:`hub.hubdir.profiles.check_profile`).
        """
        check_profile(self._context.hub_dir, profile)
        return device_record(
            device_id,
            region=region,
            groups=groups,
            profile=profile,
            public_key_pem=public_key_pem,
            added_at=wall(),
        )

    async def register(
        self,
        device_id: str,
        *,
        region: str,
        groups: Sequence[str],
        profile: str,
        public_key_pem: str,
    ) -> DeviceRecord:
        """Register a device (:func:`device_record`) and record its region's next device
        directory version (:func:`issue_region_directory`), then run a schedule round so
        the hub knows it (and subscribes to its region) and publishes the directory at
        once; a round that cannot publish is logged (the device and the directory stay
        recorded, and the next round or reconnection publishes).

        Raises:
            ConfigError: a bad name or key (:func:`device_record`), or a device with that
                id or key is registered already.
            RegistryError: the write failed.
        """
        record = self.preview_register(
            device_id, region=region, groups=groups, profile=profile, public_key_pem=public_key_pem
        )
        await self._context.db(self._record_registration, record)
        try:
            await self._refresh()
        except TransportError as exc:
            logger.warning(
                "device %s registered; the round after it was not published: %s",
                record.device_id,
                exc,
            )
        return record

    async def publish_shadow(self, region: str, channel: Channel, data: bytes | None) -> None:
        """Publish ``data`` as ``channel``'s shadow bundle in ``region`` on the hub's
        connection now (retained), after :func:`check_shadow`; ``None`` clears the shadow
        (an empty retained message). Nothing is recorded: the caller (a rollout) keeps what
        it published and publishes it again after a hub restart (the embedded broker
        forgets retained messages when it stops) or a failure here.

        Raises:
            BundleError: ``data`` would be refused by the channel's devices (nothing sent).
            TransportError: the hub is not connected to its broker, or the publish failed.
        """
        if data is not None:
            check_shadow(self.keys(), region, data, now=wall())
        conn = self._current()
        if conn is None:
            raise TransportError("the hub is not connected to its broker: shadow not published")
        await self._context.retained.publish(conn, [shadow_publication(region, channel, data)])

    def _record_registration(self, record: DeviceRecord) -> None:
        """Register ``record`` and issue its region's directory: on the gateway's worker."""
        self.registry.add_device(record)
        self._issue_directory(record.region)

    def _issue_directory(self, region: str) -> None:
        try:
            witness = self.keys().witness
        except EdgeGovError as exc:
            logger.warning(
                "device directory of %s not issued now (%s); the schedule issues it", region, exc
            )
            return
        issue_region_directory(
            self.registry,
            witness,
            region=region,
            now=wall(),
            ttl_s=self._context.config.directory_ttl_s,
        )

    async def _publish(self, publications: list[Publication]) -> Published:
        conn = self._current()
        if conn is None:
            return Published(0, "the hub is not connected to its broker")
        try:
            await self._context.retained.publish(conn, publications)
        except TransportError as exc:
            logger.warning("governance action recorded, publish failed: %s", exc)
            return Published(0, str(exc))
        return Published(len(publications))
