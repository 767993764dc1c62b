"""The console's governance actions and audit log, through Starlette's TestClient.

The hub side is :class:`HubSim`: the same operations ``edge-hub bundle push``, ``revoke``
and ``device add`` run (:mod:`hub.service.governance`) on the test's registry and real keys,
with what they would publish kept in a list instead of sent. Each action is previewed (nothing
changes), then confirmed (recorded, "published", audited); every operator route is refused
for viewers and anonymous users and without the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from edge_agent.errors import ConfigError, TransportError
from edge_agent.protocol.attestation import Challenge
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.revocation import RevocationKind
from edge_agent.protocol.roles import Role
from hub.console.actions import CLI_HINTS, console_wording
from hub.console.app import create_app
from hub.console.operations import Published
from hub.console.previews import PREVIEW_TTL_S, content_digest
from hub.core.publications import Publication
from hub.core.push import PushPlan, resolve_key_id, revocation_region
from hub.hubdir.layout import HubDir, HubKeys
from hub.registry import DeviceRecord, IssuedRevocation, Registry, RegistryError
from hub.registry.gateway import RegistryGateway
from hub.service import governance
from tests.console_support import Console, make_console
from tests.factory import NOW
from tests.hub_support import make_bundle

PREVIEWS = [
    "/actions/push/preview",
    "/actions/revoke/preview",
    "/actions/challenge/preview",
    "/actions/register/preview",
]
CONFIRMS = ["/actions/push", "/actions/revoke", "/actions/challenge", "/actions/register"]
REVOKE_GW2 = {"scope": "device", "value": "gw-002", "reason": "reported stolen"}


class HubSim:
    """The running hub's governance actions on a registry and a hub directory's keys, the
    publications kept in :attr:`published` (as :class:`hub.service.governance.Governance`
    does, without a broker). Its registry work runs on ``db``, the gateway the console
    uses for the same connection, as the running hub's runs on its own: one thread at a
    time on a connection."""

    def __init__(self, registry: Registry, hub_dir: HubDir, db: RegistryGateway) -> None:
        self.registry = registry
        self.hub_dir = hub_dir
        self.db = db
        self.published: list[Publication] = []
        self.challenged: list[str] = []

    def keys(self) -> HubKeys:
        return self.hub_dir.load_keys()

    def _publish(self, publications: Sequence[Publication]) -> Published:
        self.published += publications
        return Published(len(publications))

    async def preview_push(self, data: bytes, *, lift_revocations: bool = False) -> PushPlan:
        return await self.db(
            governance.plan_bundle,
            self.registry,
            self.keys(),
            data,
            now=_now(),
            lift_revocations=lift_revocations,
        )

    async def push(
        self, data: bytes, *, lift_revocations: bool = False
    ) -> tuple[PushPlan, Published]:
        plan, publications = await self.db(
            governance.prepare_push,
            self.registry,
            self.keys(),
            data,
            now=_now(),
            token_ttl_s=60,
            lift_revocations=lift_revocations,
        )
        return plan, self._publish(publications)

    async def preview_revocation(
        self, scope: tuple[RevocationKind, str], *, region: str | None
    ) -> str:
        kind, value = scope
        inventory = await self.db(governance.inventory, self.registry)
        return revocation_region(inventory, kind, value, region, force=False)

    def resolve_key(self, text: str) -> str:
        return resolve_key_id(text, self.keys().root)

    async def revoke(
        self, scope: tuple[RevocationKind, str], *, region: str | None, reason: str
    ) -> tuple[IssuedRevocation, Published]:
        keys = self.keys()
        issued, publications = await self.db(
            governance.prepare_revocation,
            self.registry,
            keys,
            self.hub_dir.revoke_keys(keys.root),
            scope,
            region=region,
            reason=reason,
            now=_now(),
            token_ttl_s=60,
        )
        return issued, self._publish(publications)

    async def challenge(self, device_id: str) -> Challenge:
        if await self.db(self.registry.device, device_id) is None:
            raise ConfigError(f"device {device_id!r} is not registered")
        self.challenged.append(device_id)
        return Challenge(device_id, os.urandom(16), _now(), _now() + 60)

    def preview_register(
        self,
        device_id: str,
        *,
        region: str,
        groups: Sequence[str],
        profile: str,
        public_key_pem: str,
    ) -> DeviceRecord:
        return governance.device_record(
            device_id,
            region=region,
            groups=groups,
            profile=profile,
            public_key_pem=public_key_pem,
            added_at=_now(),
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
        record = self.preview_register(
            device_id, region=region, groups=groups, profile=profile, public_key_pem=public_key_pem
        )
        await self.db(self.registry.add_device, record)
        return record


def _now() -> int:
    """The hub's clock: bundles made by :func:`make_bundle` are issued at the wall clock."""
    return int(time.time())


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Console, HubSim]]:
    with make_console(tmp_path) as console:
        sim = HubSim(
            console.registry, HubDir(console.setup.path, console.setup.url), console.context.db
        )
        console.context.actions = sim
        yield console, sim


def _operator(console: Console) -> tuple[TestClient, str]:
    client = console.client("operator")
    return client, console.csrf(client)


def _previewed(
    console: Console, client: TestClient, action: str, form: dict[str, str]
) -> dict[str, str]:
    """``form`` with the nonce a passed preview of it would have given ``client``'s session:
    a confirm whose preview passed (the hub's state may have moved since)."""
    parts = {
        "revoke": lambda: (form["scope"], form["value"], form["region"], form["reason"]),
        "bundle_push": lambda: (form["digest"], "lift" if form.get("lift_revocations") else ""),
        "challenge": lambda: (form["device"],),
    }[action]()
    session = client.cookies["edgegov_session"]
    nonce = console.context.previews.issue(session, action, content_digest(*parts), console.now[0])
    return {**form, "preview": nonce}


def _bundle_file(console: Console, version: int = 1) -> bytes:
    return make_bundle(console.setup.keys, version)


def _pem() -> str:
    return PrivateKey.generate().public.to_pem()


# Who may act.


@pytest.mark.parametrize("path", PREVIEWS + CONFIRMS)
@pytest.mark.parametrize("role", [None, "viewer"])
def test_every_action_is_refused_for_viewers_and_anonymous_and_records_nothing(
    hub: tuple[Console, HubSim], path: str, role: str | None
) -> None:
    console, sim = hub
    client = console.client(role)
    csrf = console.csrf(client) if role else "x"
    response = client.post(path, data={**REVOKE_GW2, "csrf": csrf, "device": "gw-001"})
    assert response.status_code == (403 if role else 401)
    assert console.registry.audit_log() == []
    assert console.registry.current_revocations() == [] and sim.published == []


@pytest.mark.parametrize("role", [None, "viewer"])
def test_the_actions_page_is_for_operators_only(
    hub: tuple[Console, HubSim], role: str | None
) -> None:
    console, _ = hub
    response = console.client(role).get("/actions")
    assert response.status_code in ((403,) if role else (303, 401))
    assert console.client("operator").get("/actions").status_code == 200


@pytest.mark.parametrize("path", PREVIEWS + CONFIRMS)
@pytest.mark.parametrize("csrf", [None, "wrong", ""])
def test_an_operator_post_without_the_sessions_csrf_token_is_refused(
    hub: tuple[Console, HubSim], path: str, csrf: str | None
) -> None:
    console, sim = hub
    client, _ = _operator(console)
    data = {**REVOKE_GW2, "device": "gw-001"} | ({} if csrf is None else {"csrf": csrf})
    response = client.post(path, data=data)
    assert response.status_code == 403
    assert console.registry.audit_log() == []
    assert console.registry.current_revocations() == [] and sim.published == []


def test_the_csrf_token_of_another_session_is_refused(hub: tuple[Console, HubSim]) -> None:
    console, _ = hub
    client, _ = _operator(console)
    _, other = _operator(console)
    response = client.post("/actions/revoke", data={**REVOKE_GW2, "region": "eu-1", "csrf": other})
    assert response.status_code == 403
    assert console.registry.current_revocations() == []


def test_without_a_hub_the_actions_are_refused_and_say_why(tmp_path: Path) -> None:
    with make_console(tmp_path) as console:
        client, csrf = _operator(console)
        assert "actions are off" in client.get("/actions").text
        response = client.post("/actions/revoke/preview", data={**REVOKE_GW2, "csrf": csrf})
        assert response.status_code == 503
        assert "edge-hub serve" in response.text


# Revoke.


def test_a_revocation_preview_resolves_its_region_and_changes_nothing(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    page = client.post("/actions/revoke/preview", data={**REVOKE_GW2, "csrf": csrf})
    assert page.status_code == 200
    assert 'name="region" value="eu-1"' in page.text
    assert "reported stolen" in page.text and 'name="confirm"' not in page.text
    assert console.registry.current_revocations() == [] and sim.published == []
    assert console.registry.audit_log() == []


def test_a_confirmed_revocation_is_signed_recorded_published_and_audited(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    page = client.post(
        "/actions/revoke",
        data=_previewed(console, client, "revoke", {**REVOKE_GW2, "region": "eu-1", "csrf": csrf}),
    )
    assert page.status_code == 200, page.text
    (issued,) = console.registry.current_revocations()
    assert (issued.kind, issued.value, issued.reason, issued.epoch) == (
        "device",
        "gw-002",
        "reported stolen",
        1,
    )
    assert any(p.payload == issued.data for p in sim.published)
    (entry,) = console.registry.audit_log()
    assert entry.operator.startswith("operator-")
    assert (entry.action, entry.target, entry.reason, entry.outcome) == (
        "revoke",
        "device gw-002",
        "reported stolen",
        "done",
    )
    assert "epoch 1" in entry.detail and entry.finished_at is not None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"scope": "region", "value": "eu-1"}, "revoke one of"),
        ({"scope": "device", "value": ""}, "name the device"),
        ({"scope": "bundle", "value": "v2"}, "whole number"),
        ({"scope": "device", "value": "gw-002", "reason": " "}, "give a reason"),
        (
            {"scope": "device", "value": "gw-002", "reason": 'x\nlevel=info msg="forged"'},
            "one line of text",
        ),
        ({"scope": "device", "value": "gw-002", "reason": "a\x00b"}, "one line of text"),
        ({"scope": "device", "value": "x" * 129}, "longer than 128"),
    ],
)
def test_a_bad_revocation_form_is_a_400_naming_the_field(
    hub: tuple[Console, HubSim], fields: dict[str, str], problem: str
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    response = client.post(
        "/actions/revoke/preview", data={"reason": "why", **fields, "csrf": csrf}
    )
    assert response.status_code == 400
    assert problem in response.text


def test_revoking_what_the_hub_does_not_know_is_refused_at_preview_and_audited_at_confirm(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    unknown = {**REVOKE_GW2, "value": "gw-999", "csrf": csrf}
    preview = client.post("/actions/revoke/preview", data=unknown)
    assert preview.status_code == 400 and "not registered at this hub" in preview.text
    assert console.registry.audit_log() == []
    confirm = client.post(
        "/actions/revoke", data=_previewed(console, client, "revoke", {**unknown, "region": "eu-1"})
    )
    assert confirm.status_code == 400
    (entry,) = console.registry.audit_log()
    assert entry.outcome == "refused" and "not registered" in entry.detail
    assert console.registry.current_revocations() == [] and sim.published == []


def test_a_key_revocation_is_irreversible_and_needs_the_confirm_word(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    key_id = next(
        iter(HubDir(console.setup.path, console.setup.url).load_keys().root.roles[Role.POLICY].keys)
    ).hex()
    form = {"scope": "key", "value": key_id[:12], "reason": "leaked", "csrf": csrf}
    page = client.post("/actions/revoke/preview", data=form)
    assert page.status_code == 200
    assert "cannot be undone" in page.text and f'value="{key_id}"' in page.text
    confirm = {**form, "value": key_id, "region": "eu-1"}
    refused = client.post("/actions/revoke", data=confirm)
    assert refused.status_code == 400 and "to confirm a revocation nothing undoes" in refused.text
    assert console.registry.current_revocations() == []
    done = client.post(
        "/actions/revoke",
        data=_previewed(console, client, "revoke", {**confirm, "confirm": "revoke"}),
    )
    assert done.status_code == 200, done.text
    assert [r.value for r in console.registry.current_revocations()] == [key_id]


# Push.


def test_a_push_preview_shows_the_target_and_the_devices_it_reaches_and_records_nothing(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    data = _bundle_file(console)
    page = client.post(
        "/actions/push/preview", data={"csrf": csrf}, files={"bundle": ("b.cbor", data)}
    )
    assert page.status_code == 200, page.text
    assert hashlib.sha256(data).hexdigest() in page.text
    assert (
        "line-a" in page.text and "<li>gw-001</li>" in page.text and "<li>gw-002</li>" in page.text
    )
    assert console.registry.current_bundles() == [] and sim.published == []
    assert console.registry.audit_log() == []


def test_a_confirmed_push_is_verified_again_recorded_published_and_audited(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    data = _bundle_file(console)
    digest = hashlib.sha256(data).hexdigest()
    form = {"csrf": csrf, "digest": digest, "bundle": base64.b64encode(data).decode()}
    page = client.post("/actions/push", data=_previewed(console, client, "bundle_push", form))
    assert page.status_code == 200, page.text
    assert {b.digest.hex() for b in console.registry.current_bundles()} == {digest}
    assert any(p.payload == data for p in sim.published)
    (entry,) = console.registry.audit_log()
    assert (entry.action, entry.outcome) == ("bundle_push", "done")
    assert "2 registered device(s) targeted" in entry.detail


def test_a_confirmed_push_whose_bundle_is_not_the_previewed_one_is_refused(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    data = _bundle_file(console)
    other = hashlib.sha256(b"other").hexdigest()
    for form, problem in [
        ({"digest": other, "bundle": base64.b64encode(data).decode()}, "not the one previewed"),
        ({"digest": other, "bundle": "%%%"}, "not base64"),
        ({"digest": "sha256", "bundle": ""}, "no bundle digest"),
    ]:
        response = client.post("/actions/push", data={**form, "csrf": csrf})
        assert response.status_code == 400 and problem in response.text
    assert console.registry.current_bundles() == [] and console.registry.audit_log() == []


def test_a_bundle_its_devices_would_refuse_is_refused_at_preview_naming_why(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    for data, problem in [(b"\x00garbage", "bundle"), (b"", "1 to")]:
        response = client.post(
            "/actions/push/preview", data={"csrf": csrf}, files={"bundle": ("b.cbor", data)}
        )
        assert response.status_code == 400 and problem in response.text
    assert console.registry.current_bundles() == [] and sim.published == []


def test_a_rollback_is_refused_at_confirm_and_audited_as_refused(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    for version in (2, 1):
        data = _bundle_file(console, version)
        client.post(
            "/actions/push",
            data=_previewed(
                console,
                client,
                "bundle_push",
                {
                    "csrf": csrf,
                    "digest": hashlib.sha256(data).hexdigest(),
                    "bundle": base64.b64encode(data).decode(),
                },
            ),
        )
    refused, done = console.registry.audit_log()
    assert (done.outcome, refused.outcome) == ("done", "refused")
    assert "rollback" in refused.detail
    assert {b.version for b in console.registry.current_bundles()} == {2}


# Challenge and register.


def test_a_challenge_is_previewed_then_sent_and_audited(hub: tuple[Console, HubSim]) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    page = client.post("/actions/challenge/preview", data={"device": "gw-001", "csrf": csrf})
    assert page.status_code == 200 and "never attested" in page.text
    assert sim.challenged == []
    done = client.post(
        "/actions/challenge",
        data=_previewed(console, client, "challenge", {"device": "gw-001", "csrf": csrf}),
    )
    assert done.status_code == 200 and sim.challenged == ["gw-001"]
    (entry,) = console.registry.audit_log()
    assert (entry.action, entry.target, entry.outcome) == ("challenge", "gw-001", "done")
    unknown = client.post("/actions/challenge/preview", data={"device": "gw-9", "csrf": csrf})
    assert unknown.status_code == 400 and "not registered" in unknown.text


def test_a_device_is_previewed_with_its_key_id_then_registered_and_audited(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    pem = _pem()
    form = {
        "device_id": "gw-010",
        "region": "eu-1",
        "groups": "line-b, line-a",
        "profile": "generic-x86_64",
        "public_key": pem,
        "csrf": csrf,
    }
    page = client.post("/actions/register/preview", data=form)
    assert page.status_code == 200, page.text
    assert console.registry.device("gw-010") is None
    nonce = re.search(r'name="preview" value="([^"]+)"', page.text)
    assert nonce
    done = client.post("/actions/register", data={**form, "preview": nonce.group(1)})
    assert done.status_code == 200, done.text
    record = console.registry.device("gw-010")
    assert record is not None and record.groups == ("line-a", "line-b")
    assert record.public_key.to_pem() == pem
    (entry,) = console.registry.audit_log()
    assert (entry.action, entry.target, entry.outcome) == ("register", "gw-010", "done")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"public_key": "not a key"}, "PEM"),
        ({"device_id": "hub"}, "reserved"),
        ({"device_id": "gw/1"}, "device id"),
        ({"device_id": ".."}, "only dots"),
        ({"device_id": "."}, "only dots"),
        ({"region": "eu+1"}, "region"),
    ],
)
def test_a_bad_registration_is_refused_at_preview_naming_why(
    hub: tuple[Console, HubSim], fields: dict[str, str], problem: str
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    form = {
        "device_id": "gw-010",
        "region": "eu-1",
        "groups": "line-a",
        "profile": "generic-x86_64",
        "public_key": _pem(),
        "csrf": csrf,
    } | fields
    response = client.post("/actions/register/preview", data=form)
    assert response.status_code == 400 and problem in response.text
    assert console.registry.device("gw-010") is None


# The audit log.


def test_the_audit_log_pages_newest_first_and_viewers_may_read_it(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    for n in range(55):
        console.registry.begin_action(
            at=NOW + n, operator="alice", action="challenge", target=f"gw-{n:03}", reason=""
        )
    viewer = console.client("viewer")
    first = viewer.get("/audit")
    assert first.status_code == 200
    assert "gw-054" in first.text and "gw-005" in first.text and "gw-004" not in first.text
    assert "gw-054" in viewer.get("/audit?before=" + "9" * 19).text
    older = viewer.get("/audit?before=6")
    assert "gw-004" in older.text and "gw-000" in older.text and "Older" not in older.text
    assert console.client(None).get("/audit").status_code in (303, 401)


@pytest.mark.parametrize("before", ["x", "-1", "1" * 20])
def test_a_bad_audit_page_is_a_400(hub: tuple[Console, HubSim], before: str) -> None:
    console, _ = hub
    response = console.client("viewer").get(f"/audit?before={before}")
    assert response.status_code == 400


def test_what_operators_type_is_shown_in_the_audit_log_as_text(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    payload = '<img src=x onerror="alert(1)">'
    client.post(
        "/actions/revoke", data={**REVOKE_GW2, "reason": payload, "region": "eu-1", "csrf": csrf}
    )
    page = console.client("viewer").get("/audit")
    assert payload not in page.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page.text


# Failures.


def test_an_action_that_breaks_is_audited_as_failed_before_the_error_propagates(
    hub: tuple[Console, HubSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    console, sim = hub

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the hub's loop is gone")

    monkeypatch.setattr(sim, "revoke", broken)
    client, csrf = _operator(console)
    with pytest.raises(RuntimeError, match="loop is gone"):
        client.post(
            "/actions/revoke",
            data=_previewed(
                console, client, "revoke", {**REVOKE_GW2, "region": "eu-1", "csrf": csrf}
            ),
        )
    (entry,) = console.registry.audit_log()
    assert (entry.outcome, entry.detail) == ("failed", "internal error (RuntimeError)")


def test_an_action_whose_audit_record_cannot_be_written_is_not_carried_out(
    hub: tuple[Console, HubSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    console, sim = hub

    def full(**fields: object) -> int:
        raise RegistryError("cannot record an operator action: database or disk is full")

    monkeypatch.setattr(console.registry, "begin_action", full)
    client, csrf = _operator(console)
    with pytest.raises(RegistryError, match="disk is full"):
        client.post(
            "/actions/revoke",
            data=_previewed(
                console, client, "revoke", {**REVOKE_GW2, "region": "eu-1", "csrf": csrf}
            ),
        )
    assert console.registry.current_revocations() == [] and sim.published == []


def test_a_hub_that_cannot_reach_its_broker_makes_the_action_failed_saying_so(
    hub: tuple[Console, HubSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    console, sim = hub

    async def offline(device_id: str) -> Challenge:
        raise TransportError("the hub is not connected to its broker: no challenge sent")

    monkeypatch.setattr(sim, "challenge", offline)
    client, csrf = _operator(console)
    response = client.post(
        "/actions/challenge",
        data=_previewed(console, client, "challenge", {"device": "gw-001", "csrf": csrf}),
    )
    assert response.status_code == 500 and "not connected to its broker" in response.text
    (entry,) = console.registry.audit_log()
    assert entry.outcome == "failed" and "not connected" in entry.detail


def test_a_confirmed_key_revocation_must_name_a_key_of_the_current_root(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    form = {
        "scope": "key",
        "value": "ab" * 32,
        "region": "eu-1",
        "reason": "leaked",
        "confirm": "revoke",
        "csrf": csrf,
    }
    response = client.post("/actions/revoke", data=_previewed(console, client, "revoke", form))
    assert response.status_code == 400 and "matches 0 keys" in response.text
    assert console.registry.current_revocations() == [] and sim.published == []
    (entry,) = console.registry.audit_log()
    assert entry.outcome == "refused"


def test_a_bundle_version_is_revoked_as_the_number_it_is(hub: tuple[Console, HubSim]) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    data = _bundle_file(console, 7)
    client.post(
        "/actions/push",
        data=_previewed(
            console,
            client,
            "bundle_push",
            {
                "csrf": csrf,
                "digest": hashlib.sha256(data).hexdigest(),
                "bundle": base64.b64encode(data).decode(),
            },
        ),
    )
    form = {"scope": "bundle", "value": "007", "reason": "bad policy", "csrf": csrf}
    page = client.post("/actions/revoke/preview", data=form)
    assert page.status_code == 200 and 'name="value" value="7"' in page.text
    too_long = client.post("/actions/revoke/preview", data={**form, "value": "9" * 20})
    assert too_long.status_code == 400 and "whole number" in too_long.text


# One confirm per preview.


def _nonce(page: str) -> str:
    found = re.search(r'name="preview" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def _confirm_at_once(
    console: Console, client: TestClient, path: str, form: dict[str, str], times: int
) -> list[httpx.Response]:
    """``times`` identical confirms sent at once on the console's own event loop."""
    transport = httpx.ASGITransport(app=create_app(console.context))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", cookies=dict(client.cookies)
    ) as browser:
        return list(await asyncio.gather(*(browser.post(path, data=form) for _ in range(times))))


@pytest.mark.asyncio
async def test_parallel_confirms_of_one_revocation_preview_sign_one_epoch(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    page = client.post("/actions/revoke/preview", data={**REVOKE_GW2, "csrf": csrf})
    form = {**REVOKE_GW2, "region": "eu-1", "csrf": csrf, "preview": _nonce(page.text)}
    responses = await _confirm_at_once(console, client, "/actions/revoke", form, 8)
    assert sorted(r.status_code for r in responses) == [200] + [409] * 7
    assert [r.epoch for r in console.registry.current_revocations()] == [1]
    outcomes = sorted(e.outcome for e in console.registry.audit_log())
    assert outcomes == ["done"] + ["refused"] * 7
    refused = [e for e in console.registry.audit_log() if e.outcome == "refused"]
    assert all(e.detail.startswith("already done") for e in refused)


@pytest.mark.asyncio
async def test_parallel_confirms_of_one_push_preview_push_once(
    hub: tuple[Console, HubSim],
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    data = _bundle_file(console)
    page = client.post(
        "/actions/push/preview", data={"csrf": csrf}, files={"bundle": ("b.cbor", data)}
    )
    form = {
        "csrf": csrf,
        "digest": hashlib.sha256(data).hexdigest(),
        "bundle": base64.b64encode(data).decode(),
        "preview": _nonce(page.text),
    }
    responses = await _confirm_at_once(console, client, "/actions/push", form, 6)
    assert sorted(r.status_code for r in responses) == [200] + [409] * 5
    assert sorted(e.outcome for e in console.registry.audit_log()) == ["done"] + ["refused"] * 5
    assert "already done" in next(r.text for r in responses if r.status_code == 409)


def test_a_confirm_that_matches_no_preview_is_refused_and_audited(
    hub: tuple[Console, HubSim],
) -> None:
    console, sim = hub
    client, csrf = _operator(console)
    page = client.post("/actions/revoke/preview", data={**REVOKE_GW2, "csrf": csrf})
    nonce = _nonce(page.text)
    _, other_csrf = other = _operator(console)
    data = _bundle_file(console)
    digest = hashlib.sha256(data).hexdigest()
    bundle = {"digest": digest, "bundle": base64.b64encode(data).decode(), "csrf": csrf}
    confirm = {**REVOKE_GW2, "region": "eu-1", "csrf": csrf}
    for sender, path, form in [
        (client, "/actions/push", bundle),
        (client, "/actions/push", {**bundle, "preview": nonce}),
        (client, "/actions/revoke", confirm),
        (client, "/actions/revoke", {**confirm, "reason": "edited", "preview": nonce}),
        (client, "/actions/revoke", {**confirm, "value": "gw-001", "preview": nonce}),
        (other[0], "/actions/revoke", {**confirm, "csrf": other_csrf, "preview": nonce}),
    ]:
        response = sender.post(path, data=form)
        assert response.status_code == 409 and "matches no preview" in response.text
    assert console.registry.current_revocations() == [] and sim.published == []
    assert console.registry.current_bundles() == []
    log = console.registry.audit_log()
    assert len(log) == 6 and {e.outcome for e in log} == {"refused"}
    console.now[0] += PREVIEW_TTL_S + 1
    expired = client.post("/actions/revoke", data={**confirm, "preview": nonce})
    assert expired.status_code == 409 and "expired" in expired.text
    assert console.registry.current_revocations() == []


# Refusals say what to do in the console.


@pytest.mark.parametrize(
    ("fields", "todo"),
    [
        ({"value": "gw-999"}, "check it on the Devices page"),
        ({"value": "gw-002", "region": "us-9"}, "leave the Region field empty"),
    ],
)
def test_a_refused_revocation_says_what_to_do_in_the_console_not_on_the_command_line(
    hub: tuple[Console, HubSim], fields: dict[str, str], todo: str
) -> None:
    console, _ = hub
    client, csrf = _operator(console)
    form = {**REVOKE_GW2, **fields, "csrf": csrf}
    preview = client.post("/actions/revoke/preview", data=form)
    assert preview.status_code == 400 and todo in preview.text
    assert "--" not in preview.text.split("<main>")[1]
    confirm = client.post(
        "/actions/revoke",
        data=_previewed(console, client, "revoke", {"region": "eu-1", **form}),
    )
    assert confirm.status_code == 400 and "--" not in confirm.text.split("<main>")[1]
    (entry,) = console.registry.audit_log()
    assert "--" not in entry.detail


def test_every_command_line_hint_of_the_shared_checks_has_console_wording() -> None:
    for cli, console_hint in CLI_HINTS:
        worded = console_wording(f"device 'gw-9' is not registered: {cli}")
        assert cli not in worded and console_hint in worded and "--" not in worded
