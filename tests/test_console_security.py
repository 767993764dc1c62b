"""The console's security, checked on every route the application serves (new routes are
covered as they are added): logged-out requests refused, viewers refused on every
state-changing route, CSRF required, cookie flags, security headers on every response,
hostile strings rendered inert, login rate-limited, tokens stored only as digests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.shipping import DeviceStatus
from hub.console.app import CSP, HSTS, create_app
from hub.console.auth import MAX_FORM_BYTES, checked_form
from hub.console.login import LOGIN_FORM_TTL_S, login_csrf_value
from hub.registry import DeviceRecord, IssuedRevocation, RejectionCount
from tests.console_support import Console, add_token, login, make_console
from tests.factory import NOW

PUBLIC = {("/login", "GET"), ("/login", "POST")}
"""What a logged-out browser may ask for (besides /static/)."""
VIEWER_POSTS = {"/logout", "/proof"}
"""POSTs a viewer may send: logging out, and checking a proof (POST only to carry an
upload; it changes nothing)."""
XSS = '<script>alert("x")</script>'
XSS_ATTR = '"><img src=x onerror=alert(1)>'


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with make_console(tmp_path) as made:
        yield made


def _routes(console: Console) -> list[tuple[str, str]]:
    """Every (path, method) the console serves, path parameters filled with gw-001."""
    found = []
    for route in create_app(console.context).routes:
        if not isinstance(route, Route):
            continue
        path = re.sub(r"\{[^}]+\}", "gw-001", route.path)
        found += [(path, m) for m in sorted(route.methods or ()) if m != "HEAD"]
    assert ("/", "GET") in found and ("/devices/gw-001", "GET") in found
    return found


def _posts(console: Console) -> list[str]:
    return [p for p, m in _routes(console) if m == "POST" and (p, m) not in PUBLIC]


def test_every_route_refuses_a_logged_out_request(console: Console) -> None:
    client = console.client(None)
    for path, method in _routes(console):
        if (path, method) in PUBLIC:
            continue
        response = client.request(method, path, data={"csrf": "x"})
        if method == "GET":
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next="), path
            fragment = client.get(path, headers={"HX-Request": "true"})
            assert fragment.status_code == 401, path
        else:
            assert response.status_code == 401, (method, path)


def test_every_state_changing_route_but_logout_refuses_a_viewer(console: Console) -> None:
    client = console.client("viewer")
    csrf = console.csrf(client)
    for path in _posts(console):
        if path in VIEWER_POSTS:
            continue
        response = client.post(path, data={"csrf": csrf}, headers={"X-CSRF-Token": csrf})
        assert response.status_code == 403, path
        assert "needs an operator token" in response.text, path


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_every_state_changing_route_refuses_a_missing_or_wrong_csrf_token(
    console: Console, role: str
) -> None:
    client = console.client(role)
    posts = _posts(console)
    assert "/logout" in posts
    for path in posts:
        if role == "viewer" and path != "/logout":
            continue
        for data, headers in (
            ({}, {}),
            ({"csrf": "wrong"}, {}),
            ({}, {"X-CSRF-Token": "wrong"}),
            ({"csrf": console.csrf(client)}, {"X-CSRF-Token": "wrong"}),
        ):
            response = client.post(path, data=data, headers=headers)
            assert response.status_code == 403, (path, data, headers)
            assert "security token is missing or out of date" in response.text
    assert client.get("/").status_code == 200, "a refused logout must not log out"


def test_a_live_refresh_after_the_session_ended_sends_the_page_to_login(
    console: Console,
) -> None:
    response = console.client(None).get(
        "/fragments/health",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/?x=1"},
    )
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=%2F%3Fx%3D1"


def test_the_login_form_refuses_a_missing_or_wrong_csrf_value(console: Console) -> None:
    token = add_token(console.registry, "alice", "operator")
    client = console.client(None)
    client.get("/login")
    for data in ({"token": token}, {"token": token, "csrf": "wrong"}):
        response = client.post("/login", data=data)
        assert response.status_code == 403
        assert "edgegov_session" not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize("secure", [False, True])
def test_the_session_cookie_is_httponly_samesite_strict_and_secure_under_tls(
    tmp_path: Path, secure: bool
) -> None:
    with make_console(tmp_path, secure=secure) as console:
        client = console.client(None, secure=secure)
        form = client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf
        token = add_token(console.registry, "alice", "viewer")
        response = client.post("/login", data={"token": token, "csrf": csrf.group(1)})
        cookies = [c for c in response.headers.get_list("set-cookie") if "edgegov_session=" in c]
        assert len(cookies) == 1
        flags = {f.strip().lower() for f in cookies[0].split(";")[1:]}
        assert "httponly" in flags
        assert "samesite=strict" in flags
        assert ("secure" in flags) is secure
        hsts = response.headers.get("strict-transport-security")
        assert hsts == (HSTS if secure else None)


def test_every_response_carries_the_security_headers(console: Console) -> None:
    anonymous, viewer = console.client(None), console.client("viewer")
    responses = [
        anonymous.get("/login"),
        anonymous.get("/"),
        anonymous.post("/logout"),
        anonymous.get("/static/console.css"),
        anonymous.get("/nowhere"),
        viewer.get("/devices?state=bad"),
        viewer.get("/devices/none"),
        viewer.put("/"),
    ]
    responses += [viewer.request(m, p) for p, m in _routes(console)]
    for response in responses:
        headers = response.headers
        assert headers["content-security-policy"] == CSP, response.url
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP


def test_no_page_carries_inline_script_or_style(console: Console) -> None:
    client = console.client("operator")
    for path, method in _routes(console):
        if method != "GET":
            continue
        page = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path
        assert "<style" not in page and " style=" not in page, path
        assert not re.search(r"\son[a-z]+=", page), path


def test_an_unexpected_failure_is_a_500_page_without_a_traceback(console: Console) -> None:
    class Broken:
        def __getattr__(self, name: str) -> object:
            return getattr(console.registry, name)

        def fleet_summary(self, now: int, stale_after_s: int) -> object:
            raise RuntimeError("disk on fire at /secret/path")

    client = console.client("viewer")
    console.context.registry = Broken()  # type: ignore[assignment]
    response = TestClient(
        create_app(console.context), raise_server_exceptions=False, cookies=client.cookies
    ).get("/")
    assert response.status_code == 500
    assert "the hub&#39;s log says why" in response.text
    assert "/secret/path" not in response.text and "Traceback" not in response.text
    assert response.headers["content-security-policy"] == CSP


def test_hostile_strings_from_devices_are_rendered_as_text(console: Console) -> None:
    registry = console.registry
    for device_id in (XSS, XSS_ATTR):
        registry.add_device(
            DeviceRecord(device_id, "eu-1", (XSS_ATTR,), "p", PrivateKey.generate().public)
        )
        registry.record_status(
            DeviceStatus(device_id, NOW - 5, True, 1, NOW + 60, XSS, 1, 1), b"s", NOW - 5
        )
        registry.add_rejections([RejectionCount(device_id, XSS, 1, XSS)], NOW - 5)
    registry.record_revocation(IssuedRevocation("eu-1", 1, "region", "eu-1", XSS, b"r", NOW))
    client = console.client("viewer")
    pages = [client.get("/"), client.get("/devices")]
    pages += [client.get(f"/devices/{d}") for d in ("%3Cscript%3Ealert(%22x%22)%3C%2Fscript%3E",)]
    pages.append(client.get("/devices/" + XSS_ATTR.replace(">", "%3E").replace("<", "%3C")))
    for page in pages:
        assert page.status_code == 200, page.url
        assert XSS not in page.text and XSS_ATTR not in page.text, page.url
        assert "<img" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[-1].text


def test_login_is_rate_limited_per_client_address(console: Console) -> None:
    token = add_token(console.registry, "alice", "viewer")
    client = console.client(None)
    for _ in range(5):
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert csrf
        assert (
            client.post("/login", data={"token": "egc_guess", "csrf": csrf.group(1)}).status_code
            == 401
        )
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf
    response = client.post("/login", data={"token": token, "csrf": csrf.group(1)})
    assert response.status_code == 429
    assert "Too many login attempts" in response.text


@pytest.mark.sqlite_only("reads the bytes of hub.db and its WAL")
def test_tokens_are_stored_only_as_digests(console: Console) -> None:
    token = add_token(console.registry, "alice", "operator")
    stored = (console.setup.path / "hub.db").read_bytes()
    wal = console.setup.path / "hub.db-wal"
    stored += wal.read_bytes() if wal.exists() else b""
    assert token.encode() not in stored
    login(console.client(None), token)


def test_checked_form_admits_an_operator_with_the_csrf_token_only(console: Console) -> None:
    async def act(request: Request) -> Response:
        form = await checked_form(request)
        return PlainTextResponse(f"done {form.get('what')}")

    def client(role: str | None) -> TestClient:
        logged_in = console.client(role)
        app = create_app(console.context)
        app.router.routes.append(Route("/act", act, methods=["POST"]))
        return TestClient(app, cookies=logged_in.cookies, follow_redirects=False)

    operator, viewer = client("operator"), client("viewer")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', operator.get("/").text)
    assert csrf
    token = csrf.group(1)
    assert operator.post("/act", data={"csrf": token, "what": "x"}).text == "done x"
    assert (
        operator.post("/act", data={"what": "x"}, headers={"X-CSRF-Token": token}).status_code
        == 200
    )
    assert operator.post("/act", data={"what": "x"}).status_code == 403
    assert operator.post("/act", data={"csrf": token + "x"}).status_code == 403
    viewer_csrf = re.search(r'name="csrf-token" content="([^"]+)"', viewer.get("/").text)
    assert viewer_csrf
    assert viewer.post("/act", data={"csrf": viewer_csrf.group(1)}).status_code == 403
    assert client(None).post("/act", data={"csrf": token}).status_code == 401
    big = {"csrf": token, "what": "x" * (MAX_FORM_BYTES + 1)}
    response = operator.post("/act", data=big)
    assert response.status_code == 400
    assert "at most 65536 bytes" in response.text


def _login_attempt(client: TestClient, token: str) -> Response:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf
    return client.post("/login", data={"token": token, "csrf": csrf.group(1)})


def test_the_login_limit_429_says_when_to_retry_and_is_per_client_address(
    console: Console,
) -> None:
    app = create_app(console.context)
    attacker = TestClient(
        app, base_url="http://127.0.0.1", client=("127.0.0.2", 1), follow_redirects=False
    )
    operator = TestClient(
        app, base_url="http://127.0.0.1", client=("127.0.0.3", 1), follow_redirects=False
    )
    for _ in range(5):
        assert _login_attempt(attacker, "egc_guess").status_code == 401
    refused = _login_attempt(attacker, "egc_guess")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    token = add_token(console.registry, "alice", "viewer")
    assert _login_attempt(operator, token).status_code == 303


def test_successful_logins_do_not_count_toward_the_login_limit(console: Console) -> None:
    token = add_token(console.registry, "alice", "viewer")
    client = console.client(None)
    for _ in range(12):
        assert _login_attempt(client, token).status_code == 303
        client.cookies.clear()
    for _ in range(5):
        assert _login_attempt(client, "egc_guess").status_code == 401


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "testserver"],
)
def test_the_console_answers_to_the_names_it_serves(console: Console, host: str) -> None:
    response = console.client(None).get("/login", headers={"host": host})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "", "a b", "[::2]"]
)
def test_a_request_for_another_host_is_refused_before_any_route(
    console: Console, host: str
) -> None:
    token = add_token(console.registry, "alice", "viewer")
    client = console.client(None)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf
    for response in (
        client.get("/login", headers={"host": host}),
        client.post("/login", data={"token": token, "csrf": csrf.group(1)}, headers={"host": host}),
        client.get("/static/console.css", headers={"host": host}),
    ):
        assert response.status_code == 421
        assert "answers only to" in response.text and csrf.group(1) not in response.text
        assert response.headers["x-frame-options"] == "DENY"
        assert "set-cookie" not in response.headers


def test_a_login_csrf_value_planted_from_another_port_is_refused(console: Console) -> None:
    token = add_token(console.registry, "mallory", "viewer")
    client = console.client(None)
    forged = login_csrf_value(b"not the console's secret", NOW)
    for value in ("x", forged):
        client.cookies.set("edgegov_login", value, domain="testserver.local", path="/login")
        response = client.post("/login", data={"token": token, "csrf": value})
        assert response.status_code == 403
        assert "edgegov_session" not in response.headers.get("set-cookie", "")


def test_a_login_form_expires_and_a_login_from_another_origin_is_refused(
    console: Console,
) -> None:
    token = add_token(console.registry, "alice", "viewer")
    client = console.client(None)

    def form() -> dict[str, str]:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert csrf
        return {"token": token, "csrf": csrf.group(1)}

    other = client.post("/login", data=form(), headers={"origin": "http://127.0.0.1:9999"})
    assert other.status_code == 403
    same_site = client.post("/login", data=form(), headers={"sec-fetch-site": "same-site"})
    assert same_site.status_code == 403
    old = form()
    console.now[0] += LOGIN_FORM_TTL_S + 1
    assert client.post("/login", data=old).status_code == 403
    console.now[0] -= LOGIN_FORM_TTL_S + 1
    same = client.post(
        "/login",
        data=form(),
        headers={"origin": "null", "sec-fetch-site": "same-origin"},
    )
    assert same.status_code == 303


def test_logging_out_deletes_the_session_cookie_samesite_strict(console: Console) -> None:
    client = console.client("viewer")
    response = client.post("/logout", data={"csrf": console.csrf(client)})
    assert response.status_code == 303
    deleted = response.headers["set-cookie"].lower()
    assert "edgegov_session=" in deleted and "samesite=strict" in deleted
    assert "httponly" in deleted


MALFORMED_MULTIPART = [
    ("multipart/form-data", b"xx"),
    ("multipart/form-data; boundary=b", b"--a\r\nxx"),
    ("multipart/form-data; boundary=b", b"--b\r\nbad header line\r\n\r\nx\r\n--b--\r\n"),
    (
        "multipart/form-data; boundary=b",
        b"".join(
            b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i
            for i in range(100)
        )
        + b"--b--\r\n",
    ),
]


@pytest.mark.parametrize(("content_type", "body"), MALFORMED_MULTIPART)
@pytest.mark.parametrize("path", ["/actions/push/preview", "/proof"])
def test_a_malformed_form_body_is_a_400_with_a_sentence(
    console: Console,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    client = console.client("operator")
    csrf = console.csrf(client)
    app_client = TestClient(
        create_app(console.context), raise_server_exceptions=False, cookies=client.cookies
    )
    response = app_client.post(
        path, content=body, headers={"content-type": content_type, "x-csrf-token": csrf}
    )
    assert response.status_code == 400
    assert "send it again from the console" in response.text
    assert "Traceback" not in response.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.asyncio
async def test_a_client_that_disconnects_mid_form_is_not_logged_as_an_error(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    client = console.client("operator")
    csrf = console.csrf(client)
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/proof",
        "raw_path": b"/proof",
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 5000),
        "http_version": "1.1",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"cookie", cookie.encode()),
            (b"x-csrf-token", csrf.encode()),
            (b"content-type", b"multipart/form-data; boundary=b"),
            (b"content-length", b"100000"),
        ],
    }
    messages = [
        {"type": "http.request", "body": b"--b\r\n", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: object) -> None:
        pass

    await create_app(console.context)(scope, receive, send)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


def test_an_oversized_form_is_refused_for_its_size_and_a_lengthless_one_for_its_length(
    console: Console,
) -> None:
    client = console.client("operator")
    csrf = console.csrf(client)
    big = client.post(
        "/actions/revoke/preview", data={"csrf": csrf, "reason": "r" * MAX_FORM_BYTES}
    )
    assert big.status_code == 400
    assert f"this page accepts at most {MAX_FORM_BYTES} bytes" in big.text
    assert "without its length" not in big.text

    def chunks() -> Iterator[bytes]:
        yield b"csrf=" + csrf.encode()

    lengthless = client.post(
        "/actions/revoke/preview",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert lengthless.status_code == 400 and "without its length" in lengthless.text
