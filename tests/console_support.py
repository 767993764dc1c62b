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

from hub.console.app import create_app
from hub.console.auth import new_token, token_digest
from hub.console.context import ConsoleContext
from hub.hubdir.layout import HubDir
from hub.registry import ConsoleToken, Registry
from tests.factory import NOW
from tests.hub_support import HubSetup, make_hub_dir

__all__ = ["Console", "add_token", "console_on", "make_console"]

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
    hub_dir = HubDir(setup.path)
    now = [NOW]
    context = ConsoleContext(
        registry=registry,
        hub_dir=hub_dir,
        keys=hub_dir.load_keys,
        clock=lambda: now[0],
        **overrides,  # type: ignore[arg-type]
    )
    return Console(setup, registry, context, now)


@contextmanager
def make_console(path: Path, **overrides: object) -> Iterator[Console]:
    """A :class:`Console` on a new hub directory under ``path`` (registry closed after)."""
    setup = make_hub_dir(path / "hub")
    registry = HubDir(setup.path).open_registry()
    try:
        yield console_on(setup, registry, **overrides)
    finally:
        registry.close()
