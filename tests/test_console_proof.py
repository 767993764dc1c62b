"""The console's proof viewer through Starlette's TestClient: a good receipt or tlog-proof is
green step by step (opened from a decision, pasted or uploaded); a tampered one is red at the
step that fails, with why; oversize and unreadable input is refused clearly."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from edge_agent.protocol.lineage_entries import decode_entry
from edge_agent.protocol.merkle import leaf_hash
from hub.console.proof import MAX_FORM_BYTES, MAX_PROOF_BYTES, Status, check_proof
from hub.registry.records import PublishedBundle
from tests.console_support import Console, make_console
from tests.factory import NOW
from tests.hub_support import make_bundle
from tests.lineage_search_support import add_varied, ship

VERSION = 7
_STEP = re.compile(r'<tr class="step-([a-z-]+)">\s*<td><code>([a-z_]+)</code></td>', re.MULTILINE)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """gw-001's 40 entries (the first 30 under bundle v7, which the hub holds), shipped in
    one batch the hub cosigned."""
    with make_console(tmp_path) as made:
        bundle = make_bundle(made.setup.keys, VERSION, now=NOW)
        digest = hashlib.sha256(bundle).digest()
        made.registry.record_bundle(
            bundle=PublishedBundle(
                "eu-1", "group/line-a", VERSION, digest, bundle, NOW + 86400, None, NOW
            ),
            issued_at=NOW,
            target={"region": "eu-1"},
            channels=["group/line-a"],
        )
        sim = made.setup.devices["gw-001"]
        add_varied(sim, 40, start_time=NOW, digest=digest)
        ship(made.registry, sim, 0, 40, witness=made.context.keys().witness)
        yield made


@pytest.fixture
def client(console: Console) -> TestClient:
    return console.client("viewer")


def _steps(page: str) -> dict[str, str]:
    return {step: status for status, step in _STEP.findall(page)}


def _receipt(client: TestClient, seq: int, fmt: str) -> bytes:
    response = client.get(f"/lineage/gw-001/{seq}/receipt?format={fmt}")
    assert response.status_code == 200
    return response.content


def _paste(console: Console, client: TestClient, text: str) -> str:
    response = client.post("/proof", data={"text": text, "csrf": console.csrf(client)})
    assert response.status_code == 200, response.text
    return response.text


def test_a_receipt_opened_from_a_decision_is_green_at_every_step(client: TestClient) -> None:
    page = client.get("/proof?device=gw-001&seq=12")
    assert page.status_code == 200
    assert "VERIFIED" in page.text and "NOT VERIFIED" not in page.text
    assert _steps(page.text) == {
        "entry": "held",
        "leaf_hash": "held",
        "inclusion_path": "held",
        "root": "held",
        "receipt_signature": "held",
        "checkpoint_signature": "held",
        "cosignature": "held",
        "bundle": "held",
    }


def test_a_pasted_base64_receipt_and_an_uploaded_tlog_proof_are_verified(
    console: Console, client: TestClient
) -> None:
    cose = base64.b64encode(_receipt(client, 3, "cose")).decode()
    wrapped = "\n".join(cose[i : i + 76] for i in range(0, len(cose), 76))
    assert "VERIFIED" in _paste(console, client, wrapped)
    upload = client.post(
        "/proof",
        data={"csrf": console.csrf(client)},
        files={"file": ("gw-001-3.tlog-proof", _receipt(client, 3, "tlog-proof"))},
    )
    assert upload.status_code == 200
    steps = _steps(upload.text)
    assert steps["receipt_signature"] == "skipped"
    assert steps["cosignature"] == steps["bundle"] == "held"
    assert "NOT VERIFIED" not in upload.text


def _flip_allowed(entry: bytes) -> bytes:
    """The entry with its verdict flipped (key 4: true <-> false): still canonical."""
    index = entry.index(b"\x04\xf5") if b"\x04\xf5" in entry else entry.index(b"\x04\xf4")
    flipped = entry[: index + 1] + bytes([entry[index + 1] ^ 1]) + entry[index + 2 :]
    assert decode_entry(flipped).allowed != decode_entry(entry).allowed
    return flipped


def _tampered_tlog(text: str, what: str) -> str:
    lines = text.split("\n")
    if what == "entry flipped":
        entry = base64.b64decode(lines[1].removeprefix("extra "))
        lines[1] = "extra " + base64.b64encode(_flip_allowed(entry)).decode()
    elif what == "path flipped":
        path_hash = bytearray(base64.b64decode(lines[3]))
        path_hash[0] ^= 1
        lines[3] = base64.b64encode(bytes(path_hash)).decode()
    elif what == "no cosignature":
        lines = [line for line in lines if "edgegov/v1/witness" not in line]
    elif what == "another device's name":
        lines = [line.replace("device/gw-001/", "device/gw-002/") for line in lines]
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("what", "failing", "why"),
    [
        ("entry flipped", "root", "root"),
        ("path flipped", "root", "root"),
        ("no cosignature", "cosignature", "cosign"),
        ("another device's name", "checkpoint_signature", "signature"),
    ],
)
def test_a_tampered_tlog_proof_is_red_at_the_step_that_fails(
    console: Console, client: TestClient, what: str, failing: str, why: str
) -> None:
    text = _receipt(client, 5, "tlog-proof").decode()
    page = _paste(console, client, _tampered_tlog(text, what))
    assert "NOT VERIFIED" in page
    steps = _steps(page)
    assert steps[failing] == "failed"
    assert [s for s, status in steps.items() if status == "failed"] == [failing]
    order = list(steps)
    assert all(steps[s] in ("held", "skipped") for s in order[: order.index(failing)])
    assert steps["receipt_signature"] in ("skipped", "not-run")
    assert all(steps[s] == "not-run" for s in order[order.index(failing) + 1 :])
    assert f"Step <strong>{failing}</strong> failed" in page
    assert why in page.split("Step <strong>")[1].split("</p>")[0].lower()


def test_a_receipt_whose_entry_was_flipped_fails_at_the_root(
    console: Console, client: TestClient
) -> None:
    data = _receipt(client, 9, "cose")
    entry = console.registry.entries("gw-001", 9, 10)[0]
    tampered = data.replace(entry, _flip_allowed(entry))
    assert tampered != data and leaf_hash(entry) != leaf_hash(_flip_allowed(entry))
    check = check_proof(tampered, console.registry, console.context.keys().root)
    assert check.failed is not None and check.failed.step == "root"
    page = _paste(console, client, base64.b64encode(tampered).decode())
    assert _steps(page)["root"] == "failed"


def test_a_proof_naming_no_registered_device_fails_at_the_device_signature(
    console: Console, client: TestClient
) -> None:
    text = _receipt(client, 5, "tlog-proof").decode().replace("device/gw-001/", "device/gw-9/")
    check = check_proof(text.encode(), console.registry, console.context.keys().root)
    assert check.failed is not None
    assert check.failed.step == "checkpoint_signature"
    assert "'gw-9', which this hub has not registered" in check.failed.detail
    assert [s.status for s in check.steps].count(Status.NOT_RUN) == len(check.steps) - 1


def test_unreadable_bytes_fail_at_the_entry_step(console: Console, client: TestClient) -> None:
    upload = client.post(
        "/proof",
        data={"csrf": console.csrf(client)},
        files={"file": ("junk.bin", b"\x00\x01 not a receipt")},
    )
    assert upload.status_code == 200
    assert _steps(upload.text)["entry"] == "failed"
    assert "not a readable receipt" in upload.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "paste a proof or choose a file"),
        ("this is not base64 !", "neither a tlog-proof"),
    ],
)
def test_pasted_text_that_is_no_proof_is_refused_clearly(
    console: Console, client: TestClient, text: str, message: str
) -> None:
    response = client.post("/proof", data={"text": text, "csrf": console.csrf(client)})
    assert response.status_code == 400
    assert message in response.text


def test_a_bad_paste_shows_the_form_again_with_the_paste_and_why(
    console: Console, client: TestClient
) -> None:
    response = client.post("/proof", data={"text": "not a <proof> !", "csrf": console.csrf(client)})
    assert response.status_code == 400
    assert '<p class="error">the pasted proof is neither a tlog-proof' in response.text
    assert '<form method="post" action="/proof"' in response.text
    assert ">not a &lt;proof&gt; !</textarea>" in response.text


def test_an_oversize_upload_is_refused_before_it_is_read(
    console: Console, client: TestClient
) -> None:
    csrf = console.csrf(client)
    over_proof = client.post(
        "/proof", data={"csrf": csrf}, files={"file": ("big", b"\x00" * (MAX_PROOF_BYTES + 1))}
    )
    assert over_proof.status_code == 400
    assert f"at most {MAX_PROOF_BYTES} bytes" in over_proof.text
    over_form = client.post(
        "/proof", data={"csrf": csrf}, files={"file": ("huge", b"\x00" * (MAX_FORM_BYTES + 1))}
    )
    assert over_form.status_code == 400
    assert f"at most {MAX_FORM_BYTES} bytes" in over_form.text


def test_a_check_without_the_csrf_token_or_a_login_is_refused(
    console: Console, client: TestClient
) -> None:
    assert client.post("/proof", data={"text": "x"}).status_code == 403
    anonymous = console.client(None)
    assert anonymous.post("/proof", data={"text": "x"}).status_code in (303, 401, 403)
    assert anonymous.get("/proof").status_code in (303, 401)


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("device=gw-001", 400, "give device and seq"),
        ("device=gw-001&seq=x", 400, "give device and seq"),
        ("device=gw-001&seq=%C2%B2", 400, "give device and seq"),
        ("device=gw-001&seq=1&format=pdf", 400, "format is one of"),
        ("device=gw-404&seq=1", 404, "not registered"),
        ("device=gw-001&seq=40", 404, "has not been shipped"),
    ],
)
def test_opening_a_receipt_that_cannot_be_built_says_why(
    client: TestClient, query: str, status: int, message: str
) -> None:
    response = client.get(f"/proof?{query}")
    assert response.status_code == status
    assert message in response.text


def test_any_change_to_a_receipt_or_arbitrary_bytes_is_red_never_a_crash(
    console: Console, client: TestClient
) -> None:
    root = console.context.keys().root

    def red(data: bytes) -> None:
        check = check_proof(data, console.registry, root)
        assert not check.verified and check.failed is not None

    receipts = [_receipt(client, 11, fmt) for fmt in ("cose", "tlog-proof")]
    assert all(check_proof(r, console.registry, root).verified for r in receipts)

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(receipts), st.integers(0), st.integers(1, 255))
    def flipped(receipt: bytes, where: int, mask: int) -> None:
        changed = bytearray(receipt)
        changed[where % len(receipt)] ^= mask
        red(bytes(changed))

    flipped()

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=2048))
    def arbitrary(data: bytes) -> None:
        red(data)

    arbitrary()
