"""A real PostgreSQL server for the tests of the registry's PostgreSQL backend.

:func:`postgres_server` (a session fixture) runs Debian's ``initdb`` and ``pg_ctl`` (found
under ``/usr/lib/postgresql/*/bin``, not on PATH) as the ``postgres`` user when the tests run
as root, on a data directory in a temporary folder: the server listens on 127.0.0.1 on a
free port, its unix socket in that folder, trust authentication, and is stopped by its PID
when the session ends. The registry's tables are created once, in a template database;
:func:`postgres_url` gives each test a fresh copy of it (``CREATE DATABASE ... TEMPLATE``,
a file copy) and drops it afterwards. No PostgreSQL installed: the tests that need one are
skipped naming the package, or fail under CI (:mod:`tests.system_tools`).

:func:`start_postgres` starts a server of a test's own, optionally inside a network namespace
(``run_in``, e.g. :meth:`tests.netns_support.Host.command`) listening on that namespace's
addresses, which trust the hosts of their subnets: the multi-host tests' database host. Its
unix socket, a file in the temporary folder, reaches it from any namespace
(:meth:`PostgresServer.socket_url`).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from hub.registry.postgres import PostgresRegistry
from tests.system_tools import missing

__all__ = [
    "PostgresServer",
    "free_port",
    "postgres_server",
    "postgres_url",
    "remove_folder",
    "start_postgres",
]

TEMPLATE = "registry_template"
_START_TIMEOUT_S = 60


@dataclass
class PostgresServer:
    """A PostgreSQL server this test session started, and what it needs to stop it."""

    bin_dir: Path
    data_dir: Path
    port: int
    user: str | None
    """The account the server runs as (``None``: the tests' own)."""
    listen: tuple[str, ...] = ("127.0.0.1",)
    """The addresses it listens on; :meth:`url` names the first."""
    run_in: tuple[str, ...] = ()
    """The prefix running a command where the server runs (a namespace's ``ip netns
    exec``; empty: here)."""
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.listen[0]}:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """The URL of its unix socket: a file, so reachable from every namespace."""
        return f"postgresql://postgres@/{database}?host={self.data_dir.parent}&port={self.port}"

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on this server's data directory, as its account."""
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        command = [*self.run_in, *command]
        subprocess.run(command, check=True, capture_output=True, timeout=_START_TIMEOUT_S)

    def start(self) -> None:
        hosts = ",".join(self.listen)
        options = f"-h {hosts} -p {self.port} -k {self.data_dir.parent} -F"
        self.pg_ctl("-l", str(self.data_dir.parent / "server.log"), "-w", "-o", options, "start")

    def restart(self) -> None:
        """Stop the server (dropping every connection) and start it again on its port."""
        self.pg_ctl("-m", "fast", "-w", "stop")
        self.start()

    def stop(self) -> None:
        """Stop the server: a fast shutdown, then SIGKILL to its postmaster if it lingers."""
        pid = self._postmaster_pid()
        try:
            self.pg_ctl("-m", "fast", "-w", "-t", "20", "stop")
        except (subprocess.SubprocessError, OSError):
            if pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def new_database(self, template: str = TEMPLATE) -> str:
        """A fresh database, a copy of ``template`` (by default an empty registry); its
        name."""
        name = self.unused_name()
        self.create_database(name, template)
        return name

    def unused_name(self) -> str:
        """A database name no other test of the session takes (nothing is created)."""
        return f"registry_{os.getpid()}_{next(self._names)}"

    def create_database(self, name: str, template: str = TEMPLATE) -> None:
        """Create ``name`` as a copy of ``template``: ~0.1 s, two checkpoints."""
        with psycopg.connect(self.socket_url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.socket_url(), autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _binaries() -> Path:
    """The newest installed PostgreSQL's bin directory (skip or fail when none is)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if not found or not Path(found[-1]).with_name("pg_ctl").exists():
        missing("PostgreSQL (initdb, pg_ctl)", "postgresql")
    return Path(found[-1]).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (at this moment)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_postgres(
    folder: Path, listen: tuple[str, ...] = ("127.0.0.1",), run_in: tuple[str, ...] = ()
) -> PostgresServer:
    """A new server with its data directory in ``folder`` (a folder of its own, e.g. from
    :func:`tempfile.mkdtemp`: the server's account must reach it), started listening on
    ``listen``, run with the prefix ``run_in`` (see :class:`PostgresServer`). Addresses other
    than loopback trust the hosts of their own subnets (``samenet``). Stop it with
    :meth:`PostgresServer.stop`.
    """
    bin_dir = _binaries()
    user = "postgres" if os.geteuid() == 0 else None
    data_dir = folder / "data"
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir, data_dir, free_port(), user, listen, run_in)
    initdb = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]
    if user is not None:
        initdb = ["runuser", "-u", user, "--", *initdb]
    subprocess.run(initdb, check=True, capture_output=True, timeout=_START_TIMEOUT_S)
    if listen != ("127.0.0.1",):
        with (data_dir / "pg_hba.conf").open("a") as hba:
            hba.write("host all all samenet trust\n")
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, with the registry's template database."""
    folder = Path(tempfile.mkdtemp(prefix="edgegov-pg-"))
    server: PostgresServer | None = None
    try:
        server = start_postgres(folder)
        with psycopg.connect(server.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {TEMPLATE}")
        PostgresRegistry.open(server.url(TEMPLATE)).close()
        yield server
    finally:
        if server is not None:
            server.stop()
        remove_folder(folder)


def remove_folder(folder: Path) -> None:
    """Remove the server's folder (its files belong to the server's account)."""
    for _ in range(3):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.5)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh database holding an empty registry, dropped after the test."""
    name = postgres_server.new_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
