"""Console test helpers: a console on a hub directory, tokens, and logged-in clients.

``console = make_console(tmp_path)`` builds a hub directory (keys, devices gw-001 and
gw-002, :func:`tests.hub_support.make_hub_dir`), opens its registry and makes a
:class:`~hub.console.context.ConsoleContext` with a fixed clock. ``console.client(role)``
is a Starlette TestClient logged in with a fresh token of that role (``None``: anonymous);
``console.csrf(client)`` is its session's CSRF token for POSTs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from starlette.testclient import TestClient

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from hub.console.app import create_app
from hub.console.context import ConsoleContext
from hub.console.tokens import new_token, token_digest
from hub.hubdir.layout import HubDir
from hub.registry import (
    AttestationRecord,
    ConsoleToken,
    DeviceRecord,
    Registry,
    RejectionCount,
)
from tests.factory import NOW
from tests.hub_support import HubSetup, make_hub_dir

__all__ = ["Console", "add_token", "console_on", "login", "make_console", "populate_fleet"]

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
_LOGIN_CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]*)">')


def add_token(registry: Registry, name: str, role: str) -> str:
    """Store a console token ``name`` with ``role``; return the token."""
    token = new_token()
    registry.add_console_token(ConsoleToken(name, role, token_digest(token), NOW))
    return token


@dataclass
class Console:
    """A console app on a hub directory, with its registry open and a settable clock."""

    setup: HubSetup
    registry: Registry
    context: ConsoleContext
    now: list[int] = field(default_factory=lambda: [NOW])
    _count: int = 0

    @property
    def app(self) -> object:
        return create_app(self.context)

    def client(self, role: str | None = "viewer", *, secure: bool = False) -> TestClient:
        """A TestClient (on a new app over the same context), logged in as a new token of
        ``role`` (``None``: anonymous)."""
        base = "https://testserver" if secure else "http://testserver"
        client = TestClient(create_app(self.context), base_url=base, follow_redirects=False)
        if role is not None:
            self._count += 1
            token = add_token(self.registry, f"{role}-{self._count}", role)
            login(client, token)
        return client

    @staticmethod
    def csrf(client: TestClient) -> str:
        """The CSRF token of ``client``'s session (read from a page's meta tag)."""
        page = client.get("/devices")
        found = _CSRF_META.search(page.text)
        assert found and found.group(1), "no CSRF token on the page: is the client logged in?"
        return found.group(1)


def login(client: TestClient, token: str) -> None:
    """Log ``client`` in with ``token`` through the login form (asserting it worked)."""
    form = client.get("/login")
    found = _LOGIN_CSRF.search(form.text)
    assert found, form.text
    response = client.post("/login", data={"token": token, "csrf": found.group(1)})
    assert response.status_code == 303, response.text


def console_on(setup: HubSetup, registry: Registry, **overrides: object) -> Console:
    """A :class:`Console` on ``setup``'s hub directory and ``registry``."""
    hub_dir = HubDir(setup.path, setup.url)
    now = [NOW]
    context = ConsoleContext(
        registry=registry,
        hub_dir=hub_dir,
        keys=hub_dir.load_keys,
        clock=lambda: now[0],
        **({"hosts": frozenset({"testserver"})} | overrides),  # type: ignore[arg-type]
    )
    return Console(setup, registry, context, now)


@contextmanager
def make_console(path: Path, **overrides: object) -> Iterator[Console]:
    """A :class:`Console` on a new hub directory under ``path`` (registry closed after)."""
    setup = make_hub_dir(path / "hub")
    registry = HubDir(setup.path, setup.url).open_registry()
    try:
        yield console_on(setup, registry, **overrides)
    finally:
        registry.close()


GATES = (
    "open",
    "open",
    "open",
    "bundle_expired",
    "freshness_expired",
    "revoked",
    "attestation_failed",
    "lineage_unavailable",
)


def populate_fleet(
    registry: Registry,
    count: int,
    *,
    now: int = NOW,
    stale_after_s: int = 90,
    prefix: str = "dev",
    groups: int = 10,
) -> list[str]:
    """Register ``count`` devices in eu-1 (``{prefix}-00001`` ..., in ``groups`` groups) with
    a mix of states as of ``now``: most heard from within ``stale_after_s`` with a gate from
    :data:`GATES`, every 7th stale, every 11th never seen, every 5th offline, every 13th with
    a failing attestation; rejection counters on a few. One transaction per 1,000 devices, so
    a 10,000-device registry builds in seconds (bench/console.py). Returns the device ids."""
    ids = [f"{prefix}-{n:05d}" for n in range(1, count + 1)]
    for start in range(0, count, 1000):
        with registry.write_group():
            for n, device_id in enumerate(ids[start : start + 1000], start=start + 1):
                registry.add_device(
                    DeviceRecord(
                        device_id,
                        "eu-1",
                        (f"line-{n % groups}",),
                        "generic-x86_64",
                        PrivateKey.generate().public,
                        added_at=now - 86400,
                    )
                )
                if n % 11 == 0:
                    continue
                heard = now - (stale_after_s * 3 if n % 7 == 0 else n % stale_after_s)
                status = DeviceStatus(
                    device_id,
                    heard,
                    n % 5 != 0,
                    1 + n % 3,
                    now + 3600,
                    GATES[n % len(GATES)],
                    n % 50,
                    n % 50 - (n % 4),
                )
                registry.record_status(status, f"status-{device_id}".encode(), heard)
                verdict = "fail" if n % 13 == 0 else "pass"
                registry.record_attestation(
                    AttestationRecord(
                        device_id,
                        verdict,
                        "measured" if verdict == "pass" else "rootfs: not an expected value",
                        b"m" * 32,
                        b"n" * 16,
                        heard - 10,
                        heard + 900,
                        None,
                        0,
                        '{"rootfs": "' + "ab" * 32 + '"}',
                        b"r",
                        heard,
                    )
                )
            registry.add_rejections(
                [RejectionCount(ids[start], "bad_signature", 3, "signature does not verify")],
                now - 60,
            )
    return ids
