"""The console in a real browser: Debian's headless Chromium driven by Playwright
(``executable_path`` is the system binary; ``playwright install`` is never run), on a live
fleet (:mod:`tests.console_fleet`: ``edge-hub serve --console`` and three ``edge-agent run``).

Every page load goes through route interception that logs each request's URL and aborts
any that would leave 127.0.0.1; each test ends by asserting none did, and that no dialog
(``alert``) opened. Screenshots of each page go to ``$EDGEGOV_CONSOLE_SCREENSHOTS`` (the
docs' are taken with it set to ``docs/console``), else to the test's temporary directory.

Without chromium (or Playwright) these tests skip, except under ``CI=true``, where they fail:
CI must run them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from hub.hubdir.paths import ENV_REGISTRY
from tests.console_fleet import XSS, ConsoleFleet, console_fleet
from tests.hub_support import module_registry

try:
    from playwright.sync_api import (
        Browser,
        Dialog,
        Page,
        Playwright,
        Route,
        StorageState,
        sync_playwright,
    )
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium")
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WAIT_S = 60.0
LOCAL_HOSTS = frozenset({"127.0.0.1"})


def _require_browser() -> str:
    missing = []
    if CHROMIUM is None:
        missing.append("chromium (apt-get install chromium; scripts/install-system-deps.sh)")
    if sync_playwright is None:
        missing.append("playwright (pip install -e '.[test]')")
    if missing:
        message = f"the browser tests need {' and '.join(missing)}"
        if UNDER_CI:
            pytest.fail(message + ": CI must run them")
        pytest.skip(message)
    assert CHROMIUM is not None
    return CHROMIUM


@pytest.fixture(scope="module")
def fleet_registry(request: pytest.FixtureRequest) -> str | None:
    """The fleet's registry: under ``EDGEGOV_TEST_REGISTRY=postgresql`` a PostgreSQL
    database for the module, as the fleet outlives each test's own; else its ``hub.db``."""
    return module_registry(request)


@pytest.fixture(scope="module")
def fleet(fleet_registry: str | None) -> Iterator[ConsoleFleet]:
    _require_browser()
    with pytest.MonkeyPatch.context() as env:
        if fleet_registry is not None:
            env.setenv(ENV_REGISTRY, fleet_registry)
        with console_fleet() as running:
            yield running


@pytest.fixture(autouse=True)
def _fleet_registry_named(fleet_registry: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``edge-hub`` commands a test runs on the fleet read the fleet's registry."""
    if fleet_registry is not None:
        monkeypatch.setenv(ENV_REGISTRY, fleet_registry)


@pytest.fixture(scope="module")
def browser(fleet: ConsoleFleet) -> Iterator[Browser]:
    executable = _require_browser()
    with sync_playwright() as playwright:
        launched = _launch(playwright, executable)
        yield launched
        launched.close()


def _launch(playwright: Playwright, executable: str) -> Browser:
    return playwright.chromium.launch(executable_path=executable, headless=True)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    chosen = os.environ.get("EDGEGOV_CONSOLE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@dataclass
class Session:
    """A browser page logged in to the console, with every request and dialog it saw."""

    page: Page
    url: str
    shots: Path
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        response = self.page.goto(self.url.rstrip("/") + path)
        assert response is not None

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Reload until ``condition`` holds (a deadline guard, not a timing assertion)."""
        deadline = time.monotonic() + WAIT_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {WAIT_S:g} s waiting for {what}")
            time.sleep(0.25)
            self.page.reload()


@pytest.fixture(scope="module")
def logins(browser: Browser, fleet: ConsoleFleet) -> dict[str, StorageState]:
    """One login per role for the whole module, through the login form (the console allows
    a client address 5 logins before it slows them down)."""
    states = {}
    for role, token in [("operator", fleet.operator_token), ("viewer", fleet.viewer_token)]:
        context = browser.new_context()
        page = context.new_page()
        page.goto(fleet.url + "login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(fleet.url)
        states[role] = context.storage_state()
        context.close()
    return states


def _open_session(
    browser: Browser, url: str, shots: Path, state: StorageState
) -> Iterator[Session]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, storage_state=state)
    page = context.new_page()
    session = Session(page, url, shots)

    def intercept(route: Route) -> None:
        request_url = route.request.url
        session.requests.append(request_url)
        if urlsplit(request_url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            route.abort()

    def on_dialog(dialog: Dialog) -> None:
        session.dialogs.append(dialog.message)
        dialog.dismiss()

    context.route("**/*", intercept)
    page.on("dialog", on_dialog)
    session.go("/")
    try:
        yield session
    finally:
        context.close()
    outside = [u for u in session.requests if urlsplit(u).hostname not in LOCAL_HOSTS]
    assert session.requests and not outside, f"requests left 127.0.0.1: {outside}"
    assert session.dialogs == [], f"a dialog opened: {session.dialogs}"


@pytest.fixture
def operator(
    browser: Browser, fleet: ConsoleFleet, shots: Path, logins: dict[str, StorageState]
) -> Iterator[Session]:
    yield from _open_session(browser, fleet.url, shots, logins["operator"])


@pytest.fixture
def viewer(
    browser: Browser, fleet: ConsoleFleet, shots: Path, logins: dict[str, StorageState]
) -> Iterator[Session]:
    yield from _open_session(browser, fleet.url, shots, logins["viewer"])


def _state_of(session: Session, device: str) -> str:
    row = session.page.locator("tr", has=session.page.locator(f"a:text-is('{device}')"))
    return row.locator("td").nth(3).inner_text().strip()


def _assert_inert(session: Session, where: str) -> None:
    """The payload put in ``where`` shows as text, and added no element and ran nothing."""
    page = session.page
    assert page.locator(f"#xss-{where}").count() == 0
    assert (
        page.evaluate("() => document.querySelectorAll('main script, main svg[onload]').length")
        == 0
    )
    assert XSS.format(where=where) in page.locator("main").inner_text()


# Log in, dashboard.


def test_an_operator_logs_in_and_sees_the_live_fleet_on_the_dashboard(
    operator: Session,
) -> None:
    page = operator.page
    devices = ("gw-001", "gw-002", "gw-003")
    operator.go("/devices")
    operator.wait_for(
        lambda: all(_state_of(operator, d) == "open" for d in devices), "every device open"
    )
    operator.shot("devices")
    operator.go("/")
    assert page.locator("h1").inner_text() == "Fleet health"
    opened = page.locator(".card[data-state=open]").inner_text()
    assert all(d in opened for d in devices), opened
    operator.shot("dashboard")


def test_the_login_page_says_where_a_token_comes_from(
    browser: Browser, fleet: ConsoleFleet, shots: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 600})
    page = context.new_page()
    page.goto(fleet.url + "login")
    assert "edge-hub console token add" in page.locator("main").inner_text()
    page.screenshot(path=str(shots / "login.png"))
    page.fill("#token", "egc_not-a-token")
    page.click("button[type=submit]")
    assert page.locator(".error").count() == 1
    context.close()


# Governance actions.


def test_revoking_a_device_from_the_console_turns_its_cell_to_revoked(
    operator: Session,
) -> None:
    page = operator.page
    operator.go("/actions")
    operator.shot("actions")
    page.select_option("#revoke-scope", "device")
    page.fill("#revoke-value", "gw-003")
    page.fill("#revoke-reason", "reported stolen")
    page.click("#revoke button[type=submit]")
    assert "Confirm: revoke device gw-003" in page.locator("h1").inner_text()
    assert "eu-1" in page.locator("main table").inner_text()
    operator.shot("revoke-confirm")
    page.click("main form button[type=submit]")
    assert page.locator("#outcome").inner_text() == "done"
    assert "revocation epoch" in page.locator("#detail").inner_text()
    operator.shot("revoke-done")
    operator.go("/devices")
    operator.wait_for(lambda: _state_of(operator, "gw-003") == "revoked", "gw-003 revoked")
    assert _state_of(operator, "gw-001") == "open"
    operator.shot("devices-revoked")
    operator.go("/")
    revoked = page.locator(".card[data-state=revoked]")
    operator.wait_for(lambda: "gw-003" in revoked.inner_text(), "the revoked cell to name gw-003")
    assert "gw-003" not in page.locator(".card[data-state=open]").inner_text()
    operator.shot("dashboard-revoked")
    operator.go("/audit")
    row = page.locator("#audit tbody tr").first
    assert "alice" in row.inner_text() and "device gw-003" in row.inner_text()
    assert row.locator("td").nth(6).inner_text().startswith("done")
    operator.shot("audit")


def test_a_viewer_is_refused_the_actions_page(viewer: Session) -> None:
    viewer.go("/actions")
    assert viewer.page.locator("h1").inner_text() == "Forbidden"


# XSS payloads.


def test_payloads_in_device_ids_and_reasons_are_shown_as_text_and_run_nothing(
    operator: Session,
) -> None:
    page = operator.page
    device = XSS.format(where="device")
    operator.go("/devices/" + quote(device, safe=""))
    _assert_inert(operator, "device")
    operator.go("/actions")
    page.fill("#revoke-value", device)
    page.fill("#revoke-reason", XSS.format(where="reason"))
    page.click("#revoke button[type=submit]")
    _assert_inert(operator, "device")
    operator.go("/actions")
    page.fill("#revoke-value", "gw-002")
    page.fill("#revoke-reason", XSS.format(where="reason"))
    page.click("#revoke button[type=submit]")
    _assert_inert(operator, "reason")
    operator.shot("xss-reason")


# Lineage, decision, proof.


def test_a_decision_found_in_the_lineage_opens_its_receipt_green_and_tampered_red(
    viewer: Session,
) -> None:
    page = viewer.page
    viewer.go("/lineage")
    page.fill("input[name=device]", "gw-001")
    page.fill("input[name=resource]", "/opt/camera/")
    page.click("form.search button[type=submit]")
    page.wait_for_load_state("load")
    assert "device=gw-001" in page.url and "resource=%2Fopt%2Fcamera%2F" in page.url
    hits = page.locator("table.hits tbody tr")
    assert hits.count() == 1 and "camera-exec" in hits.first.inner_text()
    viewer.shot("lineage")
    hits.first.locator("td").nth(2).locator("a").click()
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text().startswith("Entry ")
    opener = page.locator("a", has_text="Open it in the proof viewer")
    viewer.wait_for(lambda: opener.count() == 1, "a checkpoint covering the decision")
    viewer.shot("decision")
    opener.click()
    page.wait_for_load_state("load")
    verdict = page.locator("section.verdict h2")
    assert verdict.inner_text() == "VERIFIED"
    assert page.locator("tr.step-failed").count() == 0
    assert page.locator("tr.step-held").count() >= 6
    viewer.shot("proof-verified")
    page.goto(page.url + "&format=tlog-proof")
    assert verdict.inner_text() == "VERIFIED"
    lines = page.input_value("#proof-text").split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1" and lines[2].startswith("index ")
    first_hash = lines[3]
    lines[3] = ("B" if first_hash[0] == "A" else "A") + first_hash[1:]
    page.fill("#proof-text", "\n".join(lines))
    page.click("main form button[type=submit]")
    page.wait_for_load_state("load")
    assert verdict.inner_text() == "NOT VERIFIED"
    assert page.locator("tr.step-failed code").inner_text() == "root"
    assert "Step root failed" in page.locator("section.verdict p.bad").inner_text()
    viewer.shot("proof-tampered")


def test_payloads_in_resource_strings_and_rule_ids_are_shown_as_text_and_run_nothing(
    viewer: Session,
) -> None:
    page = viewer.page
    viewer.go("/lineage?device=gw-001&resource=" + quote("<img", safe=""))
    hits = page.locator("table.hits tbody tr")
    assert hits.count() == 1
    _assert_inert(viewer, "resource")
    hits.first.locator("td").nth(2).locator("a").click()
    _assert_inert(viewer, "resource")
    viewer.shot("xss-resource")
    rule = XSS.format(where="rule")
    viewer.go("/lineage?rule=" + quote(rule, safe=""))
    assert page.locator("#xss-rule").count() == 0
    assert page.input_value("input[name=rule]") == rule


def test_a_signed_bundle_uploaded_in_the_console_reaches_the_devices_it_names(
    operator: Session, fleet: ConsoleFleet
) -> None:
    page = operator.page
    bundle = fleet.demo.build(2)
    operator.go("/actions")
    page.set_input_files("#push-bundle", str(bundle))
    page.click("#push button[type=submit]")
    assert page.locator("#outcome").inner_text() == "refused"
    assert "would lift" in page.locator("#detail").inner_text()
    operator.go("/actions")
    page.set_input_files("#push-bundle", str(bundle))
    page.check("input[name=lift_revocations]")
    page.click("#push button[type=submit]")
    assert page.locator("h1").inner_text() == "Confirm: push bundle version 2"
    assert page.locator("#reached li").all_inner_texts() == ["gw-001", "gw-002", "gw-003"]
    operator.shot("push-confirm")
    page.click("main form button[type=submit]")
    assert page.locator("#outcome").inner_text() == "done"
    operator.go("/devices")
    operator.wait_for(
        lambda: page.locator("td", has_text=re.compile(r"^v2$")).count() == 3,
        "every device to run v2",
    )
    assert _state_of(operator, "gw-003") == "open"
