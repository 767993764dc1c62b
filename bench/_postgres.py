"""A PostgreSQL server of the benchmark's own, as tests/postgres_support.py starts one.

Debian's ``initdb`` and ``pg_ctl`` (``/usr/lib/postgresql/*/bin``, package ``postgresql``) run
as the ``postgres`` user when the bench runs as root, on a data directory in a temporary
folder; the server listens on 127.0.0.1 on a free port with trust authentication and is
stopped by ``pg_ctl`` (then SIGKILL to its postmaster) when the block ends. Unlike the tests'
server it keeps ``fsync`` on: a benchmark of a registry's commit rate must pay what a
deployed one does (SQLite runs with ``synchronous=FULL``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

__all__ = ["BenchPostgres", "postgres_server"]

_TIMEOUT_S = 60


@dataclass(frozen=True)
class BenchPostgres:
    """The running server: its port, data directory and the account it runs as."""

    bin_dir: Path
    data_dir: Path
    port: int
    user: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """An empty database ``name`` (dropped first if it exists); its URL."""
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far: the postmaster's own and that of every
        backend it has reaped (a registry's connections end when it is closed)."""
        pid = (self.data_dir / "postmaster.pid").read_text().split()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the name.
        return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def pg_ctl(self, *args: str) -> None:
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=_TIMEOUT_S)


def _binaries() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (initdb, pg_ctl): apt-get install postgresql"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def postgres_server() -> Iterator[BenchPostgres]:
    """Start a server for the block; stop it and remove its files afterwards."""
    bin_dir = _binaries()
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="edgegov-bench-pg-"))
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = BenchPostgres(bin_dir, folder / "data", _free_port(), user)
    initdb = [
        str(bin_dir / "initdb"),
        *("-D", str(server.data_dir), "-U", "postgres"),
        *("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"),
    ]
    if user is not None:
        initdb = ["runuser", "-u", user, "--", *initdb]
    try:
        subprocess.run(initdb, check=True, capture_output=True, timeout=_TIMEOUT_S)
        options = f"-h 127.0.0.1 -p {server.port} -k {folder} -c max_connections=200"
        server.pg_ctl("-l", str(folder / "server.log"), "-w", "-o", options, "start")
        yield server
    finally:
        _stop(server)
        shutil.rmtree(folder, ignore_errors=True)


def _stop(server: BenchPostgres) -> None:
    try:
        pid = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        server.pg_ctl("-m", "fast", "-w", "-t", "20", "stop")
    except (subprocess.SubprocessError, OSError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
