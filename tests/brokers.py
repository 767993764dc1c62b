"""Real MQTT brokers for integration tests, each on 127.0.0.1 and a port of its own.

- :func:`amqtt_broker` runs amqtt 0.12 in the test's event loop (the hub's embedded broker).
- :func:`mosquitto_broker` runs Debian's ``/usr/sbin/mosquitto`` as a subprocess with a
  config of its own in a temporary directory (optionally a password file and an ACL file),
  stopped by its pid.

- :func:`shipped_mosquitto` runs it on ``packaging/mosquitto/mosquitto.conf`` itself: only
  its paths (into the temporary directory, with throwaway TLS certificates) and its listeners
  (127.0.0.1, free ports) are changed, and logging added.

All three yield a handle with ``settings`` (a :class:`BrokerSettings`, anonymous),
``settings_for(user, password)``, ``url``, ``port``, and ``stop()`` / ``start()`` to kill and
restart the broker on the same port (fault tests). Retained messages are lost across a
restart unless Mosquitto runs with ``persistence=True`` and is stopped cleanly.

Starting Mosquitto where it is not installed skips the test, naming the package (under CI it
fails: :mod:`tests.system_tools`).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from edge_agent.protocol.limits import MAX_PACKET_BYTES
from edge_agent.support.mqtt import BrokerSettings
from hub.service.broker import EmbeddedBroker
from hub.service.broker_limits import BrokerLimits
from tests.system_tools import missing
from tests.tls_certs import ThrowawayCA

__all__ = [
    "MOSQUITTO",
    "AmqttHandle",
    "MosquittoBroker",
    "TlsFiles",
    "amqtt_broker",
    "free_port",
    "mosquitto_broker",
    "require_mosquitto",
    "shipped_mosquitto",
]

SHIPPED_CONFIG = Path(__file__).parent.parent / "packaging" / "mosquitto" / "mosquitto.conf"
MOSQUITTO = Path(shutil.which("mosquitto", path="/usr/sbin:/usr/bin") or "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
START_TIMEOUT_S = 10.0
START_ATTEMPTS = 5


def require_mosquitto() -> None:
    """Skip the calling test (fail it under CI) unless Mosquitto and mosquitto_passwd are here."""
    if not (MOSQUITTO.exists() and Path(MOSQUITTO_PASSWD).exists()):
        missing("Mosquitto", "mosquitto")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the broker binding it may still race)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener: the CA clients must chain to, the server's pair."""

    ca: Path
    cert: Path
    key: Path


class _Settings:
    settings: BrokerSettings

    @property
    def url(self) -> str:
        return self.settings.url

    def settings_for(self, username: str, password: str) -> BrokerSettings:
        return replace(self.settings, username=username, password=password)


class AmqttHandle(_Settings):
    """The in-process amqtt broker of :func:`amqtt_broker`."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.settings = broker.settings
        self.port = broker.port

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the broker (``kill`` is accepted for symmetry: amqtt just drops clients)."""
        await self.broker.stop()

    async def start(self) -> None:
        await self.broker.start()


@contextlib.asynccontextmanager
async def amqtt_broker(
    limits: BrokerLimits | None = None, unthrottled: frozenset[str] = frozenset()
) -> AsyncIterator[AmqttHandle]:
    """amqtt on 127.0.0.1 and a free port, in this event loop (within ``limits`` if given;
    ``unthrottled`` client ids have no device-topic publish budget)."""
    broker = EmbeddedBroker("127.0.0.1", 0, limits or BrokerLimits(), unthrottled)
    await broker.start()
    try:
        yield AmqttHandle(broker)
    finally:
        await broker.stop()


class MosquittoBroker(_Settings):
    """A Mosquitto subprocess with its own config, password and ACL files in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        acl: Path | None = None,
        passwords: Mapping[str, str] | None = None,
        persistence: bool = False,
        tls: TlsFiles | None = None,
        shipped: bool = False,
        max_packet_bytes: int | None = MAX_PACKET_BYTES,
    ) -> None:
        self.workdir = workdir
        self.tls = tls
        self.shipped = shipped
        self.max_packet_bytes = max_packet_bytes
        self.tls_port = 0
        self.acl = acl
        self.passwords = dict(passwords or {})
        self.persistence = persistence
        self.port = 0
        self.settings = BrokerSettings("127.0.0.1", 0)
        self.log_file = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start on the port it had (or a free one the first time); wait until it listens."""
        require_mosquitto()
        attempts = 1 if self.port else START_ATTEMPTS
        for _ in range(attempts):
            port = self.port or free_port()
            if await self._try_start(port):
                self.port = port
                self.settings = BrokerSettings("127.0.0.1", port, tls=self.tls is not None)
                return
        raise RuntimeError(f"mosquitto did not start; see {self.log_file}")

    async def _try_start(self, port: int) -> bool:
        config = self.workdir / "mosquitto.conf"
        config.write_text(self._config(port))
        self._process = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return True
        await self.stop()
        return False

    def _config(self, port: int) -> str:
        if self.shipped:
            return self._shipped_config(port)
        lines = [
            f"listener {port} 127.0.0.1",
            f"user {getpass.getuser()}",
            f"allow_anonymous {'false' if self.passwords else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type subscribe",
        ]
        if self.max_packet_bytes is not None:
            # The shipped config's packet bound: no test broker passes what no deployed
            # one would (an agent or hub drops its connection at a larger packet).
            lines.append(f"max_packet_size {self.max_packet_bytes}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        if self.passwords:
            lines.append(f"password_file {self._password_file()}")
        if self.acl is not None:
            lines.append(f"acl_file {self.acl}")
        return "\n".join(lines) + "\n"

    def _shipped_config(self, port: int) -> str:
        """The shipped config with its paths and listeners moved here; every line that is
        neither is kept as it is (a line this does not know how to move fails the test)."""
        self.tls_port = self.tls_port or free_port()
        ca = ThrowawayCA(self.workdir / "pki")
        cert, key = ca.issue("broker", server=True)
        moved = {
            "listener 8883": f"listener {self.tls_port} 127.0.0.1",
            "listener 1883 127.0.0.1": f"listener {port} 127.0.0.1",
            "certfile /etc/mosquitto/certs/broker.crt": f"certfile {cert}",
            "keyfile /etc/mosquitto/certs/broker.key": f"keyfile {key}",
            "cafile /etc/mosquitto/ca/devices-ca.crt": f"cafile {ca.ca_file}",
            "password_file /etc/mosquitto/edgegov.passwd": (
                f"password_file {self._password_file()}"
            ),
            "acl_file /etc/mosquitto/conf.d/edgegov.acl": f"acl_file {self.acl}",
            "persistence_location /var/lib/mosquitto/": f"persistence_location {self.workdir}/",
        }
        lines = []
        for line in SHIPPED_CONFIG.read_text().splitlines():
            if _names_a_place(line) and line not in moved:
                raise AssertionError(f"shipped config line not moved for the test: {line}")
            lines.append(moved.get(line, line))
        lines += [
            f"user {getpass.getuser()}",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        return "\n".join(lines) + "\n"

    def _password_file(self) -> Path:
        path = self.workdir / "passwords"
        path.unlink(missing_ok=True)
        for index, (user, password) in enumerate(self.passwords.items()):
            flags = ["-c"] if index == 0 else []
            subprocess.run(
                [MOSQUITTO_PASSWD, *flags, "-b", str(path), user, password],
                check=True,
                capture_output=True,
            )
        return path

    async def stop(self, *, kill: bool = False) -> None:
        """Stop it by pid: SIGTERM (clean, saves persistence) or SIGKILL (``kill``)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        for _ in range(200):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.025)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.asynccontextmanager
async def mosquitto_broker(
    acl: Path | None = None,
    passwords: Mapping[str, str] | None = None,
    *,
    persistence: bool = False,
    tls: TlsFiles | None = None,
    max_packet_bytes: int | None = MAX_PACKET_BYTES,
) -> AsyncIterator[MosquittoBroker]:
    """Mosquitto on 127.0.0.1 and a free port; with ``passwords``, anonymous access is off;
    with ``tls``, only TLS clients with a certificate from ``tls.ca`` get in (its common
    name is their username); packets over ``max_packet_bytes`` are refused (``None``: a
    broker that passes any size, to test what a client does with one)."""
    with tempfile.TemporaryDirectory(prefix="edgegov-mosquitto-") as workdir:
        broker = MosquittoBroker(
            Path(workdir),
            acl=acl,
            passwords=passwords,
            persistence=persistence,
            tls=tls,
            max_packet_bytes=max_packet_bytes,
        )
        await broker.start()
        try:
            yield broker
        finally:
            await broker.stop()


def _names_a_place(line: str) -> bool:
    """Whether a config line binds a port or names a file (comments do not)."""
    if line.startswith("#"):
        return False
    return line.startswith(("listener ", "certfile ", "keyfile ", "cafile ")) or any(
        root in line for root in ("/etc/", "/var/")
    )


@contextlib.asynccontextmanager
async def shipped_mosquitto(
    acl: Path, passwords: Mapping[str, str]
) -> AsyncIterator[MosquittoBroker]:
    """Mosquitto on the shipped ``packaging/mosquitto/mosquitto.conf`` with ``acl`` and a
    password file of ``passwords``; ``settings`` is its loopback listener (where the hub
    connects), ``tls_port`` its device listener."""
    with tempfile.TemporaryDirectory(prefix="edgegov-mosquitto-") as workdir:
        broker = MosquittoBroker(Path(workdir), acl=acl, passwords=passwords, shipped=True)
        await broker.start()
        try:
            yield broker
        finally:
            await broker.stop()
