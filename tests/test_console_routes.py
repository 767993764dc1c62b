"""The console's pages through Starlette's TestClient: login, the dashboard, the devices
list and page, and their error pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console_support import Console, add_token, login, make_console


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with make_console(tmp_path) as made:
        yield made


def test_a_viewer_token_logs_in_and_sees_the_dashboard(console: Console) -> None:
    client = console.client(None)
    login(client, add_token(console.registry, "alice", "viewer"))
    page = client.get("/")
    assert page.status_code == 200
    assert "Fleet health" in page.text
    assert "alice (viewer)" in page.text


def test_the_devices_list_links_every_registered_device(console: Console) -> None:
    page = console.client().get("/devices")
    assert page.status_code == 200
    assert '<a href="/devices/gw-001">gw-001</a>' in page.text
    assert '<a href="/devices/gw-002">gw-002</a>' in page.text


def test_an_unknown_device_is_a_404_page_naming_it(console: Console) -> None:
    page = console.client().get("/devices/gw-404")
    assert page.status_code == 404
    assert "no device &#39;gw-404&#39; is registered" in page.text
