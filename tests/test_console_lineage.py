"""The console's lineage explorer through Starlette's TestClient: every filter, keyset pages
(forward, while entries arrive), shareable URLs, exports of exactly the filtered set, the
decision page with its receipt, and every error."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from starlette.testclient import TestClient

from edge_agent.protocol.lineage_export import MAX_HEADER_BYTES, decode_header, verify_export
from edge_agent.protocol.receipt import Step, verify_receipt, verify_tlog_proof
from edge_agent.support.lineage_files import read_export
from hub.console.lineage import hit_json, witness_keys
from hub.console.lineage_query import (
    Search,
    SearchError,
    encode_cursor,
    parse_search,
    search_params,
)
from hub.core.receipts import hub_receipt
from hub.registry import DeviceRecord
from hub.registry.lineage_records import LineageCursor, LineageHit, LineageQuery
from hub.registry.postgres import search_retention
from hub.registry.search_months import retention_cut
from tests.console_support import Console, make_console
from tests.factory import NOW
from tests.lineage_search_support import add_varied, expected_hit, ship
from tests.lineage_sim import DeviceLogSim

START = {"gw-001": NOW - 4000, "gw-002": NOW - 3995, "gw-003": NOW - 3990}
"""When each device's first entry was made (40 entries each, 10 s apart)."""
_ROW = re.compile(r'<td class="num"><a href="/lineage/([^/"]+)/(\d+)">')
_NEXT = re.compile(r'<a href="([^"]+)" rel="next">')


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """gw-001 and gw-002 (group line-a) and gw-003 (line-b), 40 entries each, shipped in
    two batches the hub cosigned."""
    with make_console(tmp_path) as made:
        sims = dict(made.setup.devices)
        sims["gw-003"] = DeviceLogSim("gw-003")
        made.registry.add_device(
            DeviceRecord("gw-003", "eu-1", ("line-b",), "generic-x86_64", sims["gw-003"].key.public)
        )
        witness = made.context.keys().witness
        for device_id, sim in sims.items():
            add_varied(sim, 40, start_time=START[device_id])
            ship(made.registry, sim, 0, 25, witness=witness)
            ship(made.registry, sim, 25, 40, witness=witness)
        yield made


@pytest.fixture
def client(console: Console) -> TestClient:
    return console.client("viewer")


def _every_hit() -> list[LineageHit]:
    hits = [expected_hit(d, seq, start) for d, start in START.items() for seq in range(40)]
    return sorted(hits, key=lambda h: (h.time, h.device, h.seq), reverse=True)


def _rows(page: str) -> list[tuple[str, int]]:
    return [(device, int(seq)) for device, seq in _ROW.findall(page)]


def _keys(hits: list[LineageHit]) -> list[tuple[str, int]]:
    return [(h.device, h.seq) for h in hits]


def _all_pages(client: TestClient, url: str) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    while True:
        page = client.get(url)
        assert page.status_code == 200, page.text
        rows += _rows(page.text)
        found = _NEXT.search(page.text)
        if not found:
            return rows
        url = found.group(1).replace("&amp;", "&")


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("", lambda h: True),
        ("device=gw-002", lambda h: h.device == "gw-002"),
        ("group=line-b", lambda h: h.device == "gw-003"),
        ("since=2027-01-15T07:40:00Z", lambda h: h.time >= 1_800_000_000 - 3200),
        ("until=1799996400", lambda h: h.time < 1_799_996_400),
        ("verdict=deny", lambda h: not h.allowed),
        ("verdict=allow", lambda h: h.allowed),
        ("kind=decision", lambda h: True),
        ("kind=bundle_installed", lambda h: False),
        ("reason=policy_denied", lambda h: h.reason == "policy_denied"),
        ("rule=rule-3", lambda h: h.rule == "rule-3"),
        ("subject=user%3Aops", lambda h: h.subject == "user:ops"),
        ("action=read", lambda h: h.action == "read"),
        ("resource=%2Fopt%2Fcamera%2F", lambda h: (h.resource or "").startswith("/opt/camera/")),
        ("resource=%2Fbin%2Fs", lambda h: h.resource == "/bin/sh"),
        ("version=8", lambda h: h.bundle_version == 8),
        (
            "group=line-a&verdict=allow&action=exec",
            lambda h: h.device in ("gw-001", "gw-002") and h.allowed and h.action == "exec",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_filter_shows_exactly_its_matches_newest_first_across_pages(
    client: TestClient, query: str, keep: Callable[[LineageHit], bool]
) -> None:
    expected = [h for h in _every_hit() if keep(h)]
    assert _all_pages(client, f"/lineage?{query}&rows=20") == _keys(expected)


def test_the_first_page_links_each_hit_to_its_decision_and_its_device(
    client: TestClient,
) -> None:
    page = client.get("/lineage?device=gw-001&rows=20")
    assert page.status_code == 200
    assert '<a href="/lineage/gw-001/39">39</a>' in page.text
    assert '<a href="/devices/gw-001">gw-001</a>' in page.text
    assert len(_rows(page.text)) == 20
    assert "Next page" in page.text and "First page" not in page.text


def test_pages_follow_the_cursor_with_no_gap_or_repeat_while_entries_arrive(
    console: Console, client: TestClient
) -> None:
    page = client.get("/lineage?rows=20")
    seen = _rows(page.text)
    sim = console.setup.devices["gw-001"]
    add_varied(sim, 30, start_time=START["gw-001"] - 350)
    ship(console.registry, sim, 40, 70, witness=console.context.keys().witness)
    found = _NEXT.search(page.text)
    assert found
    seen += _all_pages(client, found.group(1).replace("&amp;", "&"))
    before = _every_hit()
    assert len(seen) == len(set(seen))
    assert [row for row in seen if row in _keys(before)] == _keys(before)
    cursor = before[19]
    arrived = [expected_hit("gw-001", seq, START["gw-001"] - 350) for seq in range(40, 70)]
    older = [h for h in arrived if (h.time, h.device) < (cursor.time, cursor.device)]
    assert 0 < len(older) < len(arrived)
    assert set(_keys(older)) <= set(seen)
    assert not set(_keys(arrived)) - set(_keys(older)) & set(seen)


def test_a_search_url_reads_back_to_the_same_search_and_the_same_page(
    console: Console, client: TestClient
) -> None:
    search = Search(
        LineageQuery(
            device="gw-001",
            group="line-a",
            since=NOW - 4000,
            until=NOW,
            allowed=True,
            kind="decision",
            reason="allowed",
            rule="rule-1",
            subject="svc:camera",
            action="exec",
            resource_prefix="/opt/",
            bundle_version=7,
        ),
        rows=100,
        after=LineageCursor(NOW, "gw 001/ü:x", 12),
    )
    assert parse_search(search_params(search)) == search
    page = client.get("/lineage?verdict=deny&rows=20")
    found = _NEXT.search(page.text)
    assert found
    shared = found.group(1).replace("&amp;", "&")
    first, second = client.get(shared), console.client("viewer").get(shared)
    assert _rows(first.text) == _rows(second.text) != []
    assert dict(parse_qsl(urlsplit(shared).query))["verdict"] == "deny"


def test_the_jsonl_export_is_exactly_the_filtered_set_whatever_the_page(
    client: TestClient,
) -> None:
    response = client.get("/lineage/export.jsonl?verdict=deny&group=line-a&rows=20")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    lines = [json.loads(line) for line in response.text.splitlines()]
    expected = [h for h in _every_hit() if not h.allowed and h.device in ("gw-001", "gw-002")]
    assert lines == [hit_json(h) for h in expected]
    assert lines[0]["verdict"] == "deny"


def test_the_lineage_export_of_a_device_verifies_with_its_key_and_holds_every_hit(
    console: Console, client: TestClient
) -> None:
    response = client.get("/lineage/export.cbor?device=gw-002&rule=rule-2&until=1799996300")
    assert response.status_code == 200
    header_bytes, entries = read_export(io.BytesIO(response.content), MAX_HEADER_BYTES)
    header = decode_header(header_bytes)
    stored = list(entries)
    sim = console.setup.devices["gw-002"]
    report = verify_export(header, stored, sim.key.public)
    hits = [
        h.seq
        for h in _every_hit()
        if h.device == "gw-002" and h.rule == "rule-2" and h.time < 1_799_996_300
    ]
    assert (report.start, report.size) == (min(hits), 25)
    assert stored == sim.entries[min(hits) : 25]


def test_the_decision_page_shows_the_request_the_checkpoint_and_the_receipt(
    client: TestClient,
) -> None:
    page = client.get("/lineage/gw-003/31")
    assert page.status_code == 200
    hit = expected_hit("gw-003", 31, START["gw-003"])
    for shown in ("policy_denied", "deny", "svc:backup", "read", "/bin/sh", "v8"):
        assert shown in page.text
    assert "sha256:000102030405" in page.text
    assert "<tr><th>Tree size</th><td>40</td></tr>" in page.text
    assert "edgegov/v1/witness" in page.text
    assert hit.resource == "/bin/sh"
    assert '<a href="/proof?device=gw-003&amp;seq=31">' in page.text
    assert '<a href="/lineage/gw-003/31/receipt?format=cose">' in page.text


@pytest.mark.parametrize("fmt", ["cose", "tlog-proof"])
def test_a_downloaded_receipt_is_what_edge_hub_lineage_receipt_builds_and_verifies(
    console: Console, client: TestClient, fmt: str
) -> None:
    response = client.get(f"/lineage/gw-001/7/receipt?format={fmt}")
    assert response.status_code == 200
    keys = console.context.keys()
    assert keys.witness is not None
    built, _ = hub_receipt(
        console.registry,
        "gw-001",
        7,
        witness=keys.witness,
        witnesses=witness_keys(keys.root),
        now=NOW,
        fmt=fmt,
    )
    assert response.content == built
    verify = verify_receipt if fmt == "cose" else verify_tlog_proof
    device_key = console.setup.devices["gw-001"].key.public
    report = verify(response.content, device_key=device_key, root=keys.root)
    assert Step.COSIGNATURE in [r.step for r in report.held]
    assert report.entry.seq == 7


def test_an_entry_the_hub_did_not_cosign_has_no_receipt_yet_and_says_so(
    console: Console, client: TestClient
) -> None:
    sim = console.setup.devices["gw-001"]
    add_varied(sim, 5)
    ship(console.registry, sim, 40, 45)
    page = client.get("/lineage/gw-001/42")
    assert page.status_code == 200
    assert "that its witness key cosigned yet" in page.text
    refused = client.get("/lineage/gw-001/42/receipt")
    assert refused.status_code == 409
    assert "cosigned yet" in refused.text


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/lineage?since=yesterday", 400, "since &#39;yesterday&#39; is not a time"),
        ("/lineage?until=2026-13-01", 400, "until &#39;2026-13-01&#39; is not a time"),
        ("/lineage?since=2026-12-08&until=2026-12-07", 400, "since must be before until"),
        ("/lineage?verdict=maybe", 400, "unknown verdict &#39;maybe&#39;; give allow or deny"),
        ("/lineage?kind=decided", 400, "unknown kind &#39;decided&#39;"),
        ("/lineage?version=v7", 400, "version &#39;v7&#39; is not a whole number"),
        ("/lineage?version=%C2%B2", 400, "version &#39;²&#39; is not a whole number"),
        ("/lineage?since=%C2%B2", 400, "since &#39;²&#39; is not a time"),
        ("/lineage?rows=1000", 400, "rows is one of 20, 50, 100, 200"),
        ("/lineage?after=bm90LWEtY3Vyc29y", 400, "the page cursor (after) is damaged"),
        ("/lineage?colour=red", 400, "unknown search field &#39;colour&#39;"),
        ("/lineage?device=a&device=b", 400, "the field &#39;device&#39; is given twice"),
        ("/lineage?rule=" + "r" * 300, 400, "rule is longer than 256 characters"),
        ("/lineage/export.jsonl?verdict=maybe", 400, "unknown verdict"),
        ("/lineage/export.cbor?verdict=deny", 400, "add a device to the search"),
        ("/lineage/export.cbor?device=gw-001&rule=none", 404, "there is nothing to export"),
        ("/lineage/export.cbor?device=gw-404", 404, "no device &#39;gw-404&#39;"),
        ("/lineage/gw-404/1", 404, "no device &#39;gw-404&#39; is registered"),
        ("/lineage/gw-001/40", 404, "it holds entries 0 to 39"),
        ("/lineage/gw-001/99999999999999999999", 404, "it holds entries 0 to 39"),
        ("/lineage/gw-001/1/receipt?format=pdf", 400, "format is one of cose, tlog-proof"),
        ("/lineage/gw-001/first", 400, "an entry&#39;s seq is a whole number, not &#39;first&#39;"),
        ("/lineage/gw-001/%C2%B2", 400, "an entry&#39;s seq is a whole number"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("/") else "",
)
def test_every_bad_request_is_refused_with_a_sentence_naming_what_is_wrong(
    client: TestClient, url: str, status: int, message: str
) -> None:
    response = client.get(url)
    assert response.status_code == status
    assert message in response.text


def test_a_search_with_several_problems_names_each_and_keeps_what_was_typed(
    client: TestClient,
) -> None:
    page = client.get("/lineage?since=soon&verdict=maybe&subject=%3Cb%3Ex")
    assert page.status_code == 400
    assert "since &#39;soon&#39; is not a time" in page.text
    assert "unknown verdict" in page.text
    assert 'value="&lt;b&gt;x"' in page.text
    assert "<b>x" not in page.text


def test_a_damaged_cursor_is_refused_before_the_registry_is_read() -> None:
    token = encode_cursor(LineageCursor(NOW, "gw-001", 3))
    for damaged in (token + "!", token[:-1], "eDp5Ono", token.replace("gw", "GW")):
        with pytest.raises(SearchError, match="cursor"):
            parse_search([("after", damaged)])
    assert parse_search([("after", token)]).after == LineageCursor(NOW, "gw-001", 3)


@pytest.mark.parametrize(
    "url",
    [
        "/lineage",
        "/lineage/export.jsonl",
        "/lineage/export.cbor?device=gw-001",
        "/lineage/gw-001/1",
        "/lineage/gw-001/1/receipt",
    ],
)
def test_every_lineage_page_needs_a_login(console: Console, url: str) -> None:
    response = console.client(None).get(url)
    assert response.status_code in (303, 401)
    assert "gw-001" not in response.text


def test_a_search_reaching_before_the_retention_cut_says_that_range_is_past_retention(
    console: Console, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert 'id="past-retention"' not in client.get("/lineage").text
    cut = retention_cut(NOW, 1)
    # The rows are dated by tests.factory.NOW (2027), past a PostgreSQL server's real clock,
    # which refuses a cut ahead of it (pinned in test_registry_search_retention_hostile.py).
    monkeypatch.setattr(search_retention, "retention_cut", lambda now, days: cut)
    console.registry.prune_search(cut, at=NOW, dry_run=False)
    reaching = client.get("/lineage?rows=20")
    assert 'id="past-retention"' in reaching.text
    assert "Entries before 2027-01-01 00:00:00 UTC are past" in reaching.text
    assert len(_rows(reaching.text)) == 20
    before = client.get(f"/lineage?until={cut}")
    assert 'id="past-retention"' in before.text and not _rows(before.text)
    after = client.get(f"/lineage?since={cut}")
    assert 'id="past-retention"' not in after.text and _rows(after.text)
