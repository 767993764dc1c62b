"""Serving the console: ``edge-hub serve --console`` on the hub's own loop (SIGTERM still
stops the hub cleanly), the address rules (loopback, or TLS), TLS itself, and the
``edge-hub console token`` commands."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.errors import ConfigError
from edge_agent.support.mqtt import connect
from hub.cli.main import main as hub_main
from hub.console.app import CSP
from hub.console.listen import ConsoleListen, parse_listen
from hub.console.serve import ConsoleLimits, ConsoleServer, served_names
from hub.hubdir.layout import HubDir
from tests.brokers import amqtt_broker
from tests.console_support import Console, console_on
from tests.hub_support import WAIT_S, HubSetup, make_hub_dir, watching

CONSOLE_ARGS = ("--console", "127.0.0.1:0")


@pytest.fixture
def setup(tmp_path: Path) -> HubSetup:
    return make_hub_dir(tmp_path / "hub")


@pytest.fixture
def console(setup: HubSetup) -> Iterator[Console]:
    with HubDir(setup.path, setup.url).open_registry() as registry:
        yield console_on(setup, registry)


def _tls_pair(directory: Path, *dns_names: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder()
    if dns_names:
        san = x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address("fd00::7"))]
        )
        builder = builder.add_extension(san, critical=False)
    cert = (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "console.crt", directory / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ConsoleListen("127.0.0.1", 8080)),
        ("[::1]:0", ConsoleListen("::1", 0)),
        ("8080", ConsoleListen("127.0.0.1", 8080)),
    ],
)
def test_a_loopback_console_address_needs_no_tls(text: str, expected: ConsoleListen) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "cert", "key", "message"),
    [
        ("0.0.0.0:8080", None, None, "needs TLS: add --console-cert FILE --console-key FILE"),
        ("192.0.2.7:443", None, None, "needs TLS"),
        ("console.example:443", None, None, "needs TLS"),
        ("eighty", None, None, "give HOST:PORT"),
        ("127.0.0.1:http", None, None, "give HOST:PORT"),
        ("127.0.0.1:70000", None, None, "give HOST:PORT"),
        ("0.0.0.0:443", Path("c.pem"), None, "go together"),
    ],
)
def test_a_console_address_off_loopback_without_tls_is_refused(
    text: str, cert: Path | None, key: Path | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_listen(text, cert, key)


def test_a_console_address_off_loopback_with_tls_is_accepted(tmp_path: Path) -> None:
    cert, key = _tls_pair(tmp_path)
    listen = parse_listen("0.0.0.0:8443", cert, key)
    assert listen.tls and listen.url() == "https://0.0.0.0:8443/"


def test_serve_refuses_a_console_off_loopback_without_tls(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    code = hub_main(["serve", "--hub-dir", str(setup.path), "--console", "0.0.0.0:8080"])
    assert code == 2
    assert "needs TLS" in capsys.readouterr().err


def test_serve_with_a_console_serves_the_login_page_and_stops_on_sigterm(
    setup: HubSetup,
) -> None:
    env = {**os.environ, "EDGE_HUB_DIR": str(setup.path)}
    serve = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "serve", "--port", "0", *CONSOLE_ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        assert serve.stdout.readline().startswith("edge-hub serve: broker mqtt://127.0.0.1:")
        line = serve.stdout.readline()
        assert line.startswith("edge-hub serve: console http://127.0.0.1:"), line
        url = line.split()[-1]
        page = httpx.get(url + "login", timeout=10)
        assert page.status_code == 200
        assert "Console token" in page.text
        assert page.headers["content-security-policy"] == CSP
        assert httpx.get(url, timeout=10).status_code == 303
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        out, err = serve.communicate(timeout=30)
    assert serve.returncode == 0, err
    assert "edge-hub serve: stopped" in out
    assert not (setup.path / "serve.json").exists()


@pytest.mark.asyncio
async def test_the_console_serves_tls_with_secure_cookies(console: Console, tmp_path: Path) -> None:
    cert, key = _tls_pair(tmp_path)
    console.context.secure = True
    async with ConsoleServer(console.context, ConsoleListen("127.0.0.1", 0, cert, key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=False) as client:
            page = await client.get(server.url + "login", timeout=10)
    assert page.status_code == 200
    assert "secure" in page.headers["set-cookie"].lower()


@pytest.mark.asyncio
async def test_a_console_address_in_use_is_a_clear_error(console: Console) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with ConsoleServer(console.context, ConsoleListen("127.0.0.1", port)):
                pass


@pytest.mark.asyncio
async def test_unusable_tls_files_are_a_clear_error(console: Console, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="TLS certificate or key is not usable"):
        async with ConsoleServer(console.context, ConsoleListen("127.0.0.1", 0, bad, bad)):
            pass


def test_console_token_add_list_revoke(setup: HubSetup, capsys: pytest.CaptureFixture[str]) -> None:
    hub = ["--hub-dir", str(setup.path)]
    assert hub_main(["console", "token", "add", "alice", "--role", "operator", *hub]) == 0
    token = capsys.readouterr().out.splitlines()[1]
    assert token.startswith("egc_") and len(token) > 40
    assert hub_main(["console", "token", "add", "alice", "--role", "viewer", *hub]) == 2
    assert "named 'alice' exists already" in capsys.readouterr().err
    assert hub_main(["console", "token", "add", "<bob>", "--role", "viewer", *hub]) == 2
    assert "use 1 to 64 letters" in capsys.readouterr().err
    assert hub_main(["console", "token", "list", *hub]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "operator" in listing and token not in listing
    assert hub_main(["console", "token", "revoke", "alice", *hub]) == 0
    assert hub_main(["console", "token", "revoke", "alice", *hub]) == 2
    assert "no console token named 'alice'" in capsys.readouterr().err


# Limits: the console shares the hub's process and must not be able to starve it.


async def _half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends a request head without its final blank line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    return reader, writer


@pytest.mark.asyncio
async def test_half_open_connections_beyond_the_cap_are_closed_and_the_hubs_mqtt_stays_live(
    console: Console,
) -> None:
    limits = ConsoleLimits(max_connections=4, header_timeout_s=1.0, backlog=8)
    async with (
        amqtt_broker() as broker,
        ConsoleServer(console.context, ConsoleListen("127.0.0.1", 0), limits) as server,
        watching(broker.settings, ["edgegov/v1/eu-1/fresh/+"], "gw-001") as device,
        connect(broker.settings, client_id="hub") as hub,
    ):
        held = [await _half_open(server.port) for _ in range(4)]
        extra = [await _half_open(server.port) for _ in range(6)]
        for reader, _ in extra:
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
        assert server.open_connections == 4 and server.refused_connections == 6
        for n in range(3):
            await hub.publish("edgegov/v1/eu-1/fresh/stable", b"token %d" % n)
            assert (await device.next(lambda m: True)).payload == b"token %d" % n
        for reader, _ in held:
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
        assert server.open_connections == 0
        async with httpx.AsyncClient() as client:
            page = await client.get(server.url + "login", timeout=WAIT_S)
        assert page.status_code == 200 and page.headers["connection"] == "close"
        for _, writer in held + extra:
            writer.close()


@pytest.mark.asyncio
async def test_the_loops_accept_failure_report_is_logged_at_most_once_a_minute(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    async with ConsoleServer(console.context, ConsoleListen("127.0.0.1", 0)):
        for _ in range(500):
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                }
            )
    reports = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(reports) == 1 and "file descriptors" in reports[0].getMessage()


def test_the_console_keeps_most_descriptors_for_the_hub() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ConsoleLimits(max_connections=10**6).connection_cap() <= max(1, soft // 4)


def test_the_console_answers_to_its_bind_address_and_certificate_names(tmp_path: Path) -> None:
    cert, key = _tls_pair(tmp_path, "Console.Example")
    assert served_names(ConsoleListen("10.0.0.5", 8443, cert, key)) == {
        "10.0.0.5",
        "console.example",
        "[fd00::7]",
    }
    assert served_names(ConsoleListen("0.0.0.0", 8443, cert, key)) == {
        "console.example",
        "[fd00::7]",
    }
    assert served_names(ConsoleListen("::1", 8080)) == {"[::1]"}
