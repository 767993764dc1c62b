"""The governance actions (``/actions``, operator role only): push a signed bundle, revoke a
device, group, key or bundle version with a reason, challenge a device's attestation,
register a device.

Every action takes two CSRF-checked POSTs by an operator:

1. **preview** (``/actions/{kind}/preview``): the input is checked and the action planned by
   the running hub exactly as the ``edge-hub`` command would (a bundle verified as its
   devices would and its target and the devices it reaches shown; a revocation's region
   resolved; a device's key read), and nothing changes;
2. **confirm** (``/actions/{kind}``): the same input, sent again from the confirmation page,
   is checked again (time and the registry may have moved) and carried out by the hub
   (:class:`~hub.console.operations.HubActions`), which records it and publishes it on its
   own connection at once.

Each preview issues a one-shot nonce bound to the session, the action and exactly what was
previewed (:mod:`hub.console.previews`); a confirm must consume it, so an action is carried
out once per preview: a second confirm (a double click, parallel submits) is refused as
already done, and a confirm with no matching preview (never previewed, changed since) is
refused; both are recorded ``refused`` in the audit log.

Each confirmed action is written to the operator audit log as ``pending`` before it is
carried out (no record, no action) and given its outcome after: ``done``, ``refused`` (a
check said no: the sentence is shown) or ``failed``. A bundle or key revocation, which
nothing undoes, must also be confirmed by typing ``revoke``. The console holds no root or
policy key: bundles arrive signed, and only the hub's online keys sign revocations and
challenges.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edge_agent.errors import EdgeGovError, StateError, TransportError
from edge_agent.protocol.limits import MAX_BUNDLE_BYTES
from edge_agent.protocol.revocation import RevocationKind
from hub.console.auth import COOKIE, User, checked_form, console_context, require_operator
from hub.console.errors import BadRequest, ConsoleError
from hub.console.operations import HubActions
from hub.console.previews import Verdict, content_digest
from hub.console.render import render
from hub.core.push import irreversible_warning

__all__ = [
    "CONFIRM_WORD",
    "MAX_PEM_CHARS",
    "MAX_REASON_CHARS",
    "ROUTES",
    "HubUnavailable",
]

logger = logging.getLogger(__name__)

CONFIRM_WORD = "revoke"
"""Typed to confirm a revocation nothing undoes (as ``edge-hub revoke`` asks at a terminal)."""
MAX_REASON_CHARS = 500
MAX_NAME_CHARS = 128
MAX_PEM_CHARS = 4096
MAX_GROUPS = 32
MAX_VERSION_DIGITS = 19
MAX_UPLOAD_FORM_BYTES = MAX_BUNDLE_BYTES + 64 * 1024
"""A preview's multipart body: the bundle file and a few fields."""
MAX_CONFIRM_FORM_BYTES = (MAX_BUNDLE_BYTES * 4) // 3 + 64 * 1024
"""A push confirmation's body: the bundle again, base64 in a hidden field."""
KINDS = {
    "device": RevocationKind.DEVICE,
    "group": RevocationKind.GROUP,
    "key": RevocationKind.KEY,
    "bundle": RevocationKind.BUNDLE,
}
"""What the console revokes (a whole region only from ``edge-hub revoke --region``)."""
_DIGEST = re.compile(r"[0-9a-f]{64}")
PREVIEW_FIELD = "preview"
"""The confirmation form's one-shot preview nonce (:mod:`hub.console.previews`)."""


class HubUnavailable(ConsoleError):
    """The console runs without a hub to act through (a 503 page)."""

    status = 503
    title = "No hub"


def _actions(request: Request) -> HubActions:
    actions = console_context(request).actions
    if actions is None:
        raise HubUnavailable(
            "this console is not served by a running 'edge-hub serve': actions are off"
        )
    return actions


async def actions_page(request: Request) -> Response:
    """The four action forms."""
    require_operator(request)
    available = console_context(request).actions is not None
    return render(request, "actions.html", {"kinds": list(KINDS), "available": available})


# Push.


async def push_preview(request: Request) -> Response:
    """Verify an uploaded bundle and show where it goes, before confirming."""
    form = await checked_form(request, max_bytes=MAX_UPLOAD_FORM_BYTES)
    actions = _actions(request)
    upload = form.get("bundle")
    if not isinstance(upload, UploadFile):
        raise BadRequest("choose a signed bundle file (edge-hub bundle build --out FILE)")
    data = await upload.read(MAX_BUNDLE_BYTES + 1)
    if not data or len(data) > MAX_BUNDLE_BYTES:
        raise BadRequest(f"a bundle file holds 1 to {MAX_BUNDLE_BYTES} bytes")
    lift = _checkbox(form, "lift_revocations")
    try:
        plan = await actions.preview_push(data, lift_revocations=lift)
    except EdgeGovError as exc:
        return _refused_preview(request, "bundle push", exc)
    digest = _push_digest(hashlib.sha256(data).hexdigest(), lift)
    return render(
        request,
        "action_confirm.html",
        {
            "kind": "push",
            "plan": plan,
            "bundle_b64": base64.b64encode(data).decode("ascii"),
            "lift": lift,
            "preview": _issue(request, "bundle_push", digest),
        },
    )


async def push(request: Request) -> Response:
    """Push the confirmed bundle: verified again, recorded, published by the hub."""
    form = await checked_form(request, max_bytes=MAX_CONFIRM_FORM_BYTES)
    user = require_operator(request)
    actions = _actions(request)
    digest = _text(form, "digest", 64)
    if not _DIGEST.fullmatch(digest):
        raise BadRequest("the confirmation names no bundle digest: preview the bundle again")
    try:
        data = base64.b64decode(_text(form, "bundle", MAX_CONFIRM_FORM_BYTES), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("the confirmed bundle is not base64: preview it again") from exc
    if hashlib.sha256(data).hexdigest() != digest:
        raise BadRequest("the confirmed bundle is not the one previewed: preview it again")
    lift = _checkbox(form, "lift_revocations")
    verdict = _consume(request, form, "bundle_push", _push_digest(digest, lift))

    async def work() -> str:
        plan, published = await actions.push(data, lift_revocations=lift)
        bundle = plan.bundle
        return (
            f"bundle version {bundle.version} (sha256:{bundle.digest.hex()[:16]}) current on "
            f"{', '.join(plan.channels)} of {bundle.target.region}; "
            f"{len(plan.targeted)} registered device(s) targeted; {published.describe()}"
        )

    return await _carry_out(
        request, user, "bundle_push", f"bundle sha256:{digest[:16]}", "", verdict, work
    )


# Revoke.


async def revoke_preview(request: Request) -> Response:
    """Resolve a revocation's scope and region, before confirming."""
    form = await checked_form(request)
    actions = _actions(request)
    kind, value, region, reason = _revocation_input(form)
    try:
        if kind is RevocationKind.KEY:
            value = actions.resolve_key(value)
        region = await actions.preview_revocation((kind, value), region=region)
    except EdgeGovError as exc:
        return _refused_preview(request, "revocation", exc)
    return render(
        request,
        "action_confirm.html",
        {
            "kind": "revoke",
            "scope": str(kind),
            "value": value,
            "region": region,
            "reason": reason,
            "warning": irreversible_warning(kind, value, region),
            "confirm_word": CONFIRM_WORD,
            "preview": _issue(request, "revoke", content_digest(str(kind), value, region, reason)),
        },
    )


async def revoke(request: Request) -> Response:
    """Sign (revoke role), record and publish the confirmed revocation."""
    form = await checked_form(request)
    user = require_operator(request)
    actions = _actions(request)
    kind, value, region, reason = _revocation_input(form)
    if region is None:
        raise BadRequest("the confirmation names no region: preview the revocation again")
    if irreversible_warning(kind, value, region) and _text(form, "confirm", 32) != CONFIRM_WORD:
        raise BadRequest(f"type {CONFIRM_WORD!r} to confirm a revocation nothing undoes")
    verdict = _consume(request, form, "revoke", content_digest(str(kind), value, region, reason))

    async def work() -> str:
        key = actions.resolve_key(value) if kind is RevocationKind.KEY else value
        issued, published = await actions.revoke((kind, key), region=region, reason=reason)
        return (
            f"revocation epoch {issued.epoch} of {issued.region}: {issued.kind} "
            f"{issued.value} recorded; {published.describe()}"
        )

    return await _carry_out(request, user, "revoke", f"{kind} {value}", reason, verdict, work)


def _revocation_input(
    form: FormData,
) -> tuple[RevocationKind, str, str | None, str]:
    scope = _text(form, "scope", 16)
    if scope not in KINDS:
        raise BadRequest(f"revoke one of: {', '.join(KINDS)}")
    kind = KINDS[scope]
    value = _text(form, "value", MAX_NAME_CHARS).strip()
    if not value:
        raise BadRequest(f"name the {scope} to revoke")
    if kind is RevocationKind.BUNDLE:
        if not (value.isdigit() and len(value) <= MAX_VERSION_DIGITS and int(value) >= 1):
            raise BadRequest("a bundle version is a whole number, 1 or more")
        value = str(int(value))
    reason = _text(form, "reason", MAX_REASON_CHARS).strip()
    if not reason:
        raise BadRequest("give a reason: devices log it and operators read it in the audit log")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in reason):
        raise BadRequest(
            "a reason is one line of text: no line breaks or control characters (devices "
            "write it into their logs)"
        )
    region = _text(form, "region", MAX_NAME_CHARS).strip() or None
    return kind, value, region, reason


# Challenge.


async def challenge_preview(request: Request) -> Response:
    """Show the device and its last attestation, before confirming a challenge."""
    form = await checked_form(request)
    _actions(request)
    device_id = _text(form, "device", MAX_NAME_CHARS).strip()
    context = console_context(request)
    registry = context.registry
    device = await context.db(registry.device, device_id)
    if device is None:
        raise BadRequest(f"device {device_id!r} is not registered")
    attestation = await context.db(registry.attestation, device_id)
    return render(
        request,
        "action_confirm.html",
        {
            "kind": "challenge",
            "device": device,
            "attestation": attestation,
            "preview": _issue(request, "challenge", content_digest(device.device_id)),
        },
    )


async def challenge(request: Request) -> Response:
    """Send the confirmed challenge on the hub's connection."""
    form = await checked_form(request)
    user = require_operator(request)
    actions = _actions(request)
    device_id = _text(form, "device", MAX_NAME_CHARS).strip()
    verdict = _consume(request, form, "challenge", content_digest(device_id))

    async def work() -> str:
        sent = await actions.challenge(device_id)
        return (
            f"challenge sent to {device_id} (nonce {sent.nonce.hex()[:16]}…); the hub verifies "
            "its answer and the device page shows the verdict"
        )

    return await _carry_out(request, user, "challenge", device_id, "", verdict, work)


# Register.


async def register_preview(request: Request) -> Response:
    """Check a device's registration and show its key id, before confirming."""
    form = await checked_form(request)
    actions = _actions(request)
    fields = _registration(form)
    try:
        record = actions.preview_register(
            fields.device_id,
            region=fields.region,
            groups=fields.groups,
            profile=fields.profile,
            public_key_pem=fields.public_key_pem,
        )
    except EdgeGovError as exc:
        return _refused_preview(request, "registration", exc)
    return render(
        request,
        "action_confirm.html",
        {
            "kind": "register",
            "record": record,
            "pem": fields.public_key_pem,
            "preview": _issue(
                request,
                "register",
                _registration_digest(
                    _Registration(
                        record.device_id,
                        record.region,
                        record.groups,
                        record.profile,
                        fields.public_key_pem,
                    )
                ),
            ),
        },
    )


async def register(request: Request) -> Response:
    """Register the confirmed device with the running hub."""
    form = await checked_form(request)
    user = require_operator(request)
    actions = _actions(request)
    fields = _registration(form)
    verdict = _consume(request, form, "register", _registration_digest(fields))

    async def work() -> str:
        record = await actions.register(
            fields.device_id,
            region=fields.region,
            groups=fields.groups,
            profile=fields.profile,
            public_key_pem=fields.public_key_pem,
        )
        return (
            f"device {record.device_id} registered: region {record.region}, groups "
            f"{', '.join(record.groups) or '(none)'}, profile {record.profile}, key "
            f"{record.public_key.key_id.hex()[:16]}"
        )

    return await _carry_out(request, user, "register", fields.device_id, "", verdict, work)


@dataclass(frozen=True, slots=True)
class _Registration:
    """What the register form gives, bounded (checked by the hub's ``device_record``)."""

    device_id: str
    region: str
    groups: tuple[str, ...]
    profile: str
    public_key_pem: str


def _registration(form: FormData) -> _Registration:
    groups = tuple(_text(form, "groups", MAX_NAME_CHARS * 4).replace(",", " ").split())
    if len(groups) > MAX_GROUPS:
        raise BadRequest(f"a device is in at most {MAX_GROUPS} groups")
    return _Registration(
        device_id=_text(form, "device_id", MAX_NAME_CHARS).strip(),
        region=_text(form, "region", MAX_NAME_CHARS).strip(),
        groups=groups,
        profile=_text(form, "profile", MAX_NAME_CHARS).strip(),
        public_key_pem=_text(form, "public_key", MAX_PEM_CHARS),
    )


def _registration_digest(fields: _Registration) -> str:
    return content_digest(
        fields.device_id,
        fields.region,
        " ".join(sorted(set(fields.groups))),
        fields.profile,
        fields.public_key_pem,
    )


# Shared.


def _push_digest(bundle_sha256: str, lift: bool) -> str:
    return content_digest(bundle_sha256, "lift" if lift else "")


def _issue(request: Request, action: str, digest: str) -> str:
    """A one-shot nonce for this session's preview of ``action`` on ``digest``."""
    context = console_context(request)
    session = request.cookies.get(COOKIE, "")
    return context.previews.issue(session, action, digest, context.clock())


def _consume(request: Request, form: FormData, action: str, digest: str) -> Verdict:
    """Use the confirmation's preview nonce (synchronously: no other confirm runs between
    the check and the mark)."""
    context = console_context(request)
    nonce = _text(form, PREVIEW_FIELD, 64)
    session = request.cookies.get(COOKIE, "")
    return context.previews.consume(nonce, session, action, digest, context.clock())


async def _carry_out(
    request: Request,
    user: User,
    action: str,
    target: str,
    reason: str,
    verdict: Verdict,
    work: Callable[[], Awaitable[str]],
) -> Response:
    """Record ``action`` as pending, run ``work``, record its outcome, show the result.

    A confirmation its preview's nonce does not allow (``verdict``) is recorded ``refused``
    with why and nothing runs. Our refusals (a check said no) are ``refused``; storage and
    broker failures are ``failed``; anything else is ``failed`` too, then propagates (an
    error page)."""
    context = console_context(request)
    registry, db = context.registry, context.db
    action_id = await db(
        registry.begin_action,
        at=context.clock(),
        operator=user.name,
        action=action,
        target=target,
        reason=reason,
    )
    if verdict is not Verdict.GO:
        await db(
            registry.finish_action,
            action_id,
            outcome="refused",
            detail=verdict.refusal,
            at=context.clock(),
        )
        logger.info(
            "console action %s by %s on %s: refused (%s)", action, user.name, target, verdict
        )
        return render(
            request,
            "action_result.html",
            {"action": action, "target": target, "outcome": "refused", "detail": verdict.refusal},
            status=409,
        )
    try:
        detail = await work()
    except (StateError, TransportError) as exc:
        outcome, detail, status = "failed", str(exc), 500
    except EdgeGovError as exc:
        outcome, detail, status = "refused", console_wording(str(exc)), 400
    except Exception as exc:
        await db(
            registry.finish_action,
            action_id,
            outcome="failed",
            detail=f"internal error ({type(exc).__name__})",
            at=context.clock(),
        )
        raise
    else:
        outcome, status = "done", 200
    await db(registry.finish_action, action_id, outcome=outcome, detail=detail, at=context.clock())
    logger.info("console action %s by %s on %s: %s", action, user.name, target, outcome)
    return render(
        request,
        "action_result.html",
        {"action": action, "target": target, "outcome": outcome, "detail": detail},
        status=status,
    )


def _refused_preview(request: Request, what: str, exc: EdgeGovError) -> Response:
    """A preview the hub's checks refused: the sentence, and nothing changed."""
    detail = console_wording(str(exc))
    return render(
        request,
        "action_result.html",
        {"action": f"{what} preview", "target": "", "outcome": "refused", "detail": detail},
        status=400,
    )


CLI_HINTS = (
    (
        "check it (edge-hub fleet), or add --force to revoke anyway",
        "check it on the Devices page: the console revokes only what this hub knows",
    ),
    ("(drop --region)", "(leave the Region field empty)"),
    ("give --region", "fill in the Region field"),
    (
        "add --lift-revocations to re-open them on purpose",
        "tick the box to lift revocations to re-open them on purpose",
    ),
)
"""What the hub's shared checks tell a command-line user to do, and what to do instead in
the console."""


def console_wording(message: str) -> str:
    """``message`` (from a check shared with the ``edge-hub`` commands) with what it says to
    do on the command line replaced by what to do in the console."""
    for cli, console in CLI_HINTS:
        message = message.replace(cli, console)
    return message


def _text(form: FormData, name: str, max_chars: int) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text, not a file")
    if len(value) > max_chars:
        raise BadRequest(f"{name} is longer than {max_chars} characters")
    return value


def _checkbox(form: FormData, name: str) -> bool:
    return _text(form, name, 8) == "on"


ROUTES: list[BaseRoute] = [
    Route("/actions", actions_page, methods=["GET"], name="actions"),
    Route("/actions/push/preview", push_preview, methods=["POST"], name="push_preview"),
    Route("/actions/push", push, methods=["POST"], name="push"),
    Route("/actions/revoke/preview", revoke_preview, methods=["POST"], name="revoke_preview"),
    Route("/actions/revoke", revoke, methods=["POST"], name="revoke"),
    Route(
        "/actions/challenge/preview", challenge_preview, methods=["POST"], name="challenge_preview"
    ),
    Route("/actions/challenge", challenge, methods=["POST"], name="challenge"),
    Route("/actions/register/preview", register_preview, methods=["POST"], name="register_preview"),
    Route("/actions/register", register, methods=["POST"], name="register"),
]
