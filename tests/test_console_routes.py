"""The console's pages through Starlette's TestClient: login, the dashboard and its live
fragment, the devices list and each device page, and every error they answer with."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.protocol.shipping import DeviceStatus
from hub.console.devices import PAGE_SIZE
from hub.console.health import device_state
from hub.console.login import safe_next
from hub.registry import AttestationRecord, RejectionCount
from tests.console_support import Console, add_token, login, make_console, populate_fleet
from tests.factory import NOW


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with make_console(tmp_path) as made:
        yield made


def _status(device: str, at: int, gate: str = "open", *, online: bool = True, version: int = 3):
    return DeviceStatus(device, at, online, version, at + 3600, gate, 12, 10)


def _card(page: str, state: str) -> int:
    found = re.search(
        rf'data-state="{state}">\s*<span class="label">[^<]*</span>\s*'
        rf'<a class="count" href="/devices\?state={state}">(\d+)</a>',
        page,
    )
    assert found, f"no {state} card"
    return int(found.group(1))


# Login.


def test_a_viewer_token_logs_in_and_sees_the_dashboard(console: Console) -> None:
    client = console.client(None)
    login(client, add_token(console.registry, "alice", "viewer"))
    page = client.get("/")
    assert page.status_code == 200
    assert "Fleet health" in page.text
    assert "alice (viewer)" in page.text


def test_a_wrong_token_is_refused_with_a_401_and_the_form_again(console: Console) -> None:
    client = console.client(None)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    page = client.post("/login", data={"token": "egc_nope", "csrf": csrf.group(1)})
    assert page.status_code == 401
    assert "That token is not valid" in page.text
    assert client.get("/").status_code == 303


def test_an_empty_token_is_a_400_naming_what_to_paste(console: Console) -> None:
    client = console.client(None)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf
    page = client.post("/login", data={"token": " ", "csrf": csrf.group(1)})
    assert page.status_code == 400
    assert "Paste the console token" in page.text


def test_after_login_the_browser_goes_where_it_was_headed_on_this_site_only(
    console: Console,
) -> None:
    token = add_token(console.registry, "bob", "viewer")
    for target, expected in (
        ("/devices?state=open", "/devices?state=open"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
    ):
        client = console.client(None)
        form = client.get("/login", params={"next": target}).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf
        response = client.post(
            "/login", data={"token": token, "csrf": csrf.group(1), "next": target}
        )
        assert response.headers["location"] == expected


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ("/lineage?device=gw-001", "/lineage?device=gw-001"),
        (None, "/"),
        ("", "/"),
        ("devices", "/"),
        ("//evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/\n/evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("https://evil.example/", "/"),
    ],
)
def test_after_login_only_a_path_of_this_console_is_followed(
    given: str | None, target: str
) -> None:
    assert safe_next(given) == target


def test_a_page_asked_for_logged_out_redirects_to_login_keeping_the_target(
    console: Console,
) -> None:
    response = console.client(None).get("/devices/gw-001?hours=2")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fdevices%2Fgw-001%3Fhours%3D2"


def test_logout_ends_the_session(console: Console) -> None:
    client = console.client("viewer")
    response = client.post("/logout", data={"csrf": console.csrf(client)})
    assert response.status_code == 303
    assert client.get("/").status_code == 303


def test_a_revoked_token_ends_its_sessions_at_the_next_request(console: Console) -> None:
    client = console.client("viewer")
    assert client.get("/").status_code == 200
    assert console.registry.revoke_console_token("viewer-1")
    assert client.get("/").status_code == 303


# The dashboard.


def test_the_dashboard_counts_a_device_not_heard_from_as_stale_not_its_last_state(
    console: Console,
) -> None:
    registry = console.registry
    registry.record_status(_status("gw-001", NOW - 10), b"a", NOW - 10)
    registry.record_status(_status("gw-002", NOW - 600, "revoked"), b"b", NOW - 600)
    page = console.client().get("/").text
    assert _card(page, "open") == 1
    assert _card(page, "revoked") == 0
    assert _card(page, "stale") == 1
    assert _card(page, "never_seen") == 0
    stale = page[page.index('data-state="stale"') :]
    assert '<a href="/devices/gw-002">gw-002</a>' in stale[: stale.index("</div>")]


def test_every_dashboard_count_says_how_old_its_reports_are(console: Console) -> None:
    console.registry.record_status(_status("gw-001", NOW - 10), b"a", NOW - 10)
    console.registry.record_status(_status("gw-002", NOW - 40), b"b", NOW - 40)
    page = console.client().get("/").text
    open_card = page[page.index('data-state="open"') :]
    open_card = open_card[: open_card.index("</div>")]
    assert "as of 2027-01-15 07:59:20 UTC \u2013 2027-01-15 07:59:50 UTC" in open_card


def test_the_health_fragment_is_the_section_htmx_refreshes(console: Console) -> None:
    client = console.client()
    page = client.get("/").text
    assert 'hx-get="/fragments/health" hx-trigger="every 10s"' in page
    fragment = client.get("/fragments/health", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "Gate state" in fragment.text


def test_the_dashboard_shows_rollout_attestation_lineage_lag_and_rejections(
    console: Console,
) -> None:
    registry = console.registry
    registry.record_status(_status("gw-001", NOW - 5), b"a", NOW - 5)
    registry.record_attestation(
        AttestationRecord(
            "gw-001",
            "fail",
            "rootfs: not expected",
            b"m" * 32,
            b"n" * 16,
            NOW - 20,
            NOW + 600,
            None,
            0,
            "{}",
            b"r",
            NOW - 20,
        )
    )
    registry.add_rejections([RejectionCount("gw-002", "bad_signature", 4, "no")], NOW - 30)
    page = console.client().get("/").text
    assert "line-a" in page
    assert 'class="verdict-fail">fail</td><td class="num">1</td>' in page
    assert "never attested" in page
    assert "Rejected: bad_signature" in page
    assert 'Entries waiting in total</th><td class="num">12</td>' in page


def test_the_dashboard_counts_each_device_in_the_state_its_page_shows(
    console: Console,
) -> None:
    populate_fleet(console.registry, 300, now=NOW, stale_after_s=90)
    page = console.client().get("/").text
    expected: dict[str, int] = {}
    for row in console.registry.console_devices(now=NOW, stale_after_s=90, limit=1000):
        state = device_state(row, NOW, console.context.stale_after_s)
        expected[state] = expected.get(state, 0) + 1
    assert len(expected) > 5
    for state, count in expected.items():
        assert _card(page, state) == count, state


# The devices list and device pages.


def test_the_devices_list_links_every_registered(console: Console) -> None:
    page = console.client().get("/devices")
    assert page.status_code == 200
    assert '<a href="/devices/gw-001">gw-001</a>' in page.text
    assert '<a href="/devices/gw-002">gw-002</a>' in page.text


def test_the_devices_list_filters_by_state_and_region(console: Console) -> None:
    console.registry.record_status(_status("gw-001", NOW - 5), b"a", NOW - 5)
    client = console.client()
    page = client.get("/devices", params={"state": "never_seen"}).text
    assert "gw-002" in page and "gw-001" not in page
    page = client.get("/devices", params={"region": "us-2"}).text
    assert "No device matches." in page


def test_the_devices_list_pages_by_id_with_a_next_link_keeping_the_filter(
    console: Console,
) -> None:
    populate_fleet(console.registry, PAGE_SIZE + 20, now=NOW)
    client = console.client()
    first = client.get("/devices", params={"region": "eu-1"}).text
    assert first.count('<tr>\n<td><a href="/devices/') == PAGE_SIZE
    found = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert found
    following = found.group(1).replace("&amp;", "&")
    assert following == f"/devices?after=dev-{PAGE_SIZE:05d}&region=eu-1"
    second = client.get(following).text
    assert 'rel="next"' not in second
    assert second.count('<tr>\n<td><a href="/devices/') == 22


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "sleepy"}, "is not a state the console shows"),
        ({"region": "eu 1"}, "region: 1 to 64 letters"),
        ({"after": "x" * 300}, "after: a device id, at most 256 characters"),
    ],
)
def test_a_bad_devices_filter_is_a_400_saying_why(
    console: Console, params: dict[str, str], message: str
) -> None:
    page = console.client().get("/devices", params=params)
    assert page.status_code == 400
    assert message in page.text


def test_an_unknown_device_is_a_404_page_naming_it(console: Console) -> None:
    page = console.client().get("/devices/gw-404")
    assert page.status_code == 404
    assert "no device &#39;gw-404&#39; is registered" in page.text


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/devices/gw-001?hours=0", "hours: a whole number of hours from 1 to 336"),
        ("/devices/gw-001?hours=x", "hours: a whole number of hours from 1 to 336"),
        ("/devices/" + "d" * 300, "a device id is at most 256 characters"),
    ],
)
def test_a_bad_device_page_request_is_a_400_saying_why(
    console: Console, path: str, message: str
) -> None:
    page = console.client().get(path)
    assert page.status_code == 400
    assert message in page.text


def test_the_device_page_draws_its_history_with_gaps_as_unknown(console: Console) -> None:
    registry = console.registry
    for at in (NOW - 3000, NOW - 2970, NOW - 2940):
        registry.record_status(_status("gw-001", at), f"s{at}".encode(), at)
    for at in (NOW - 1000, NOW - 970):
        registry.record_status(_status("gw-001", at, "revoked"), f"s{at}".encode(), at)
    page = console.client().get("/devices/gw-001", params={"hours": "1"}).text
    states = re.findall(r'<rect class="seg seg-([a-z-]+)"', page)
    assert states == ["unknown", "open", "unknown", "revoked", "unknown"]
    assert 'State now</th><td class="state-stale"' in page


def test_the_device_page_of_a_fresh_device_shows_its_state_bundle_and_lineage(
    console: Console,
) -> None:
    console.registry.record_status(_status("gw-001", NOW - 5), b"a", NOW - 5)
    page = console.client().get("/devices/gw-001").text
    assert 'id="device-state">open</td>' in page
    assert "Running v3; target none." in page
    assert "12 entries, as of 2027-01-15 07:59:55 UTC" in page
    assert 'Waiting to ship</th><td class="num">12</td>' in page


def test_the_device_page_lists_measurements_one_by_one(console: Console) -> None:
    console.registry.record_attestation(
        AttestationRecord(
            "gw-001",
            "pass",
            "ok",
            b"m" * 32,
            b"n" * 16,
            NOW - 20,
            NOW + 600,
            None,
            0,
            '{"kernel": "' + "aa" * 32 + '", "rootfs": "' + "bb" * 32 + '"}',
            b"r",
            NOW - 20,
        )
    )
    page = console.client().get("/devices/gw-001").text
    assert "<td>kernel</td>" in page and "<td>rootfs</td>" in page
    assert page.count(">not expected</td>") == 2


def test_an_unknown_page_is_a_404_page_and_a_wrong_method_a_405(console: Console) -> None:
    client = console.client()
    assert client.get("/nowhere").status_code == 404
    assert "no such page" in client.get("/nowhere").text
    assert client.put("/devices").status_code == 405


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("/devices?bogus=1", "unknown parameter bogus"),
        ("/devices?state=open&state=stale", "state given more than once"),
        ("/devices/gw-001?hours=1&x=2", "unknown parameter x"),
        ("/devices/gw-001?hours=1&hours=2", "hours given more than once"),
        ("/lineage/gw-001/0?x=1", "unknown parameter x"),
        ("/lineage/gw-001/0/receipt?format=cose&format=tlog-proof", "format given more than once"),
        ("/lineage/gw-001/0/receipt?fmt=cose", "unknown parameter fmt"),
        ("/audit?page=2", "unknown parameter page"),
        ("/proof?device=gw-001&seq=0&x=1", "unknown parameter x"),
    ],
)
def test_an_unknown_or_repeated_parameter_is_refused_naming_it(
    console: Console, url: str, problem: str
) -> None:
    response = console.client("viewer").get(url)
    assert response.status_code == 400
    assert problem in response.text
