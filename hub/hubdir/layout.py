"""The hub directory: where ``edge-hub`` finds its keys, its registry and its running service.

Layout (``--hub-dir DIR``; default ``$EDGE_HUB_DIR``, else the current directory)::

    DIR/keys/        signing keys and trust roots (``edge-hub keys init --out DIR/keys``)
    DIR/hub.db       the registry (SQLite, :mod:`hub.registry.sqlite`), unless the registry is
                     elsewhere (``--registry``, else ``$EDGEGOV_REGISTRY``): a PostgreSQL
                     database (a ``postgresql://`` URL, shared by hubs on several hosts) or
                     another ``hub.db`` file; the directory still holds the rest
    DIR/serve.json   written by ``edge-hub serve`` while it runs (mode 0600): the broker it
                     uses, with the credentials it connects with, and its pid, so the other
                     commands publish to the same broker
    DIR/serve.lock   locked (``flock``) by the ``edge-hub serve`` that wrote ``serve.json``
                     while it runs: a second one on the directory leaves the first one's
                     ``serve.json`` as it is, instead of replacing it and, on stopping,
                     deleting it

A ``serve.json`` whose pid is not running is stale and ignored. The lock is the kernel's: it
goes with the process however that ends, so a crashed serve never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.limits import MAX_ROOT_BYTES
from edge_agent.protocol.roles import Role
from edge_agent.protocol.root import TrustRoot, verify_trusted_root
from edge_agent.support.cli import read_bounded, write_atomic
from edge_agent.support.mqtt import BrokerSettings
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.hubdir.paths import (
    ENV_HUB_DIR,
    KEYS_DIR,
    REGISTRY_FILE,
    SERVE_FILE,
    SERVE_LOCK_FILE,
    hub_dir_path,
    registry_location,
)
from hub.registry import Registry, RegistryError
from hub.registry.backends import open_registry, open_tables, parse_location
from hub.registry.schema import SCHEMA_VERSION, UPGRADABLE_VERSIONS

__all__ = [
    "ENV_HUB_DIR",
    "HubDir",
    "HubDirError",
    "HubKeys",
    "ServeInfo",
    "redacted",
    "shown_registry",
]

MAX_SERVE_FILE_BYTES = 16 * 1024
_URL_PASSWORD = re.compile(r"(://[^:/@\s\"']*):[^@\s\"']*@")
_QUERY_PASSWORD = re.compile(r"(password=)[^&\s\"']*", re.IGNORECASE)


class HubDirError(ConfigError):
    """The hub directory is not there: missing, or no registry in it where a command reads
    one (never created by a command that only reads). ``edge-hub`` exits 3 (unavailable)."""

    code = "hub_dir_unavailable"

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class HubKeys:
    """What the hub signs with while it runs: the current root, every root version (to
    re-publish the chain), the freshness role key (tokens and lineage acks) and the witness
    key that cosigns device checkpoints (the root's verifier role key; ``None`` when the
    keys directory holds none: checkpoints are then not cosigned)."""

    root: TrustRoot
    roots: tuple[TrustRoot, ...]
    freshness: PrivateKey
    witness: PrivateKey | None = None


@dataclass(frozen=True, slots=True)
class ServeInfo:
    """What a running ``edge-hub serve`` wrote into ``serve.json``."""

    settings: BrokerSettings
    pid: int
    embedded: bool
    shared: bool
    token_ttl_s: int

    def to_json(self) -> bytes:
        s = self.settings
        return json.dumps(
            {
                "broker": s.url,
                "username": s.username,
                "password": s.password,
                "ca_file": s.ca_file,
                "cert_file": s.cert_file,
                "key_file": s.key_file,
                "pid": self.pid,
                "embedded": self.embedded,
                "shared_subscriptions": self.shared,
                "token_ttl_s": self.token_ttl_s,
            },
            indent=2,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> ServeInfo:
        """Raises: ConfigError: not a serve file."""
        try:
            value = json.loads(data)
            extra = {
                k: value.get(k)
                for k in ("username", "password", "ca_file", "cert_file", "key_file")
            }
            if not all(v is None or isinstance(v, str) for v in extra.values()):
                raise TypeError("credentials must be text")
            settings = BrokerSettings.from_url(str(value["broker"]), **extra)
            return cls(
                settings,
                int(value["pid"]),
                bool(value["embedded"]),
                bool(value["shared_subscriptions"]),
                int(value["token_ttl_s"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{where} is damaged: {exc}; remove it and restart serve") from exc


@dataclass(frozen=True, slots=True)
class HubDir:
    """A hub directory (it need not exist until something is written to it), and where its
    registry is when not its ``hub.db``: ``registry``, a ``postgresql://`` URL or the path of
    a ``hub.db`` file (``None``: the directory's own ``hub.db``)."""

    path: Path
    registry: str | None = None

    @classmethod
    def resolve(cls, given: Path | None, registry: str | None = None) -> HubDir:
        """``given``, else ``$EDGE_HUB_DIR``, else the current directory; its registry at
        ``registry`` (``--registry``), else ``$EDGEGOV_REGISTRY``, else its ``hub.db``."""
        return cls(hub_dir_path(given), registry_location(registry))

    @property
    def keys(self) -> Path:
        return self.path / KEYS_DIR

    @property
    def registry_path(self) -> Path:
        """The directory's own ``hub.db`` (whether or not the registry is elsewhere)."""
        return self.path / REGISTRY_FILE

    @property
    def registry_location(self) -> Path | str:
        """The registry this hub opens: a ``postgresql://`` URL or a ``hub.db`` path.

        Raises:
            RegistryError: the location is neither (the message does not quote it).
        """
        if self.registry is None:
            return self.registry_path
        return parse_location(self.registry)

    @property
    def shown_registry(self) -> str:
        """The registry, for messages: a URL without its password, or the file's path."""
        if self.registry is None:
            return str(self.registry_path)
        return shown_registry(self.registry)

    @property
    def serve_file(self) -> Path:
        return self.path / SERVE_FILE

    def open_registry(self, *, create: bool = True) -> Registry:
        """Open the registry, creating it when missing if ``create`` (a command that only
        reads passes ``False``: pointed at the wrong directory or database, it must leave
        nothing there). A PostgreSQL registry needs no hub directory to open.

        Raises:
            HubDirError: the hub directory does not exist (with a ``hub.db`` registry), or
                ``create`` is false and there is no registry there yet (nor one of a
                version this hub opens: another program's database is left as it was).
            RegistryError: the database cannot be opened or reached, or the location is
                neither a path nor a PostgreSQL URL (its message never holds a password).
        """
        try:
            return self._open(create=create)
        except RegistryError as exc:
            raise RegistryError(redacted(exc.message)) from None

    def _open(self, *, create: bool) -> Registry:
        location = self.registry_location
        if isinstance(location, Path):
            if self.registry is None and not _is(self.path, Path.is_dir):
                raise HubDirError(
                    f"hub directory {self.path} does not exist (create it with "
                    f"'edge-hub keys init --out {self.keys}', or pass --hub-dir)",
                    self.path,
                )
            if not create and not _is(location, Path.is_file):
                where = (
                    f"{self.path} is not a hub directory: it holds no registry "
                    f"({REGISTRY_FILE}); pass the hub's --hub-dir (or set $EDGE_HUB_DIR)"
                    if self.registry is None
                    else f"there is no hub registry at {redacted(str(location))}: check "
                    "--registry (or $EDGEGOV_REGISTRY)"
                )
                raise HubDirError(where, self.path)
        if not create:
            self._refuse_unless_registry(location)
        return open_registry(location)

    def _refuse_unless_registry(self, location: Path | str) -> None:
        """Read, without writing anything, the schema version of the database at
        ``location`` (for a command that only reads: opening a registry creates what it
        lacks, so another program's database must be refused before it is opened).

        Raises:
            HubDirError: it holds no registry, another program's tables, or a registry of
                a version this hub does not open.
            RegistryError: it cannot be read (not a database, unreachable).
        """
        with open_tables(location, write=False) as rows:
            version = rows.schema_version()
            where = redacted(rows.where)
        if version is None:
            raise HubDirError(
                f"{where} holds no hub registry: check --registry (or $EDGEGOV_REGISTRY), "
                "or create it with 'edge-hub registry migrate --to URL' or "
                "'edge-hub serve --registry URL'",
                self.path,
            )
        if version == 0:
            raise HubDirError(
                f"{where} is another program's database (it holds tables but no hub "
                "registry): check --registry (or $EDGEGOV_REGISTRY)",
                self.path,
            )
        if version not in (SCHEMA_VERSION, *UPGRADABLE_VERSIONS):
            raise HubDirError(
                f"{where} is a registry of schema {version}; this hub reads {SCHEMA_VERSION}",
                self.path,
            )

    def load_keys(self, keys_dir: Path | None = None) -> HubKeys:
        """Load the trust roots, the freshness key and the witness key (the first verifier
        key of the current root, if held) from ``keys_dir`` (default ``keys/``).

        Raises:
            HubDirError: no root there (the directory was never initialised).
            ConfigError: no freshness key of the current root there.
            RootError: a root file does not verify.
        """
        directory = keys_dir or self.keys
        if not _is(directory / ROOT_FILE, Path.exists):
            raise HubDirError(
                f"no trust root in {directory}: run 'edge-hub keys init --out {directory}'",
                directory,
            )
        root = load_root(directory / ROOT_FILE)
        freshness = load_role_keys(directory, Role.FRESHNESS, root)
        if not freshness:
            raise ConfigError(
                f"{directory} holds no freshness key of trust root version {root.version}; "
                "the hub signs freshness tokens and lineage acks with it"
            )
        witness = load_role_keys(directory, Role.VERIFIER, root)
        return HubKeys(
            root, _root_chain(directory, root), freshness[0], witness[0] if witness else None
        )

    def revoke_keys(self, root: TrustRoot, keys_dir: Path | None = None) -> list[PrivateKey]:
        """The revoke-role keys of ``root`` held here: at least its threshold.

        Raises:
            ConfigError: fewer than the revoke threshold.
        """
        directory = keys_dir or self.keys
        keys = load_role_keys(directory, Role.REVOKE, root)
        threshold = root.role(Role.REVOKE).threshold
        if len(keys) < threshold:
            raise ConfigError(
                f"{directory} holds {len(keys)} revoke key(s) of trust root version "
                f"{root.version}; {threshold} are needed to sign a revocation"
            )
        return keys

    @contextlib.contextmanager
    def serve_file_claim(self) -> Iterator[bool]:
        """Try to take the directory's serve lock for the block; yield whether it was taken.
        The one ``serve`` holding it writes, and on stopping removes, ``serve.json``.

        Several ``serve`` processes may share one hub directory (and its registry); only
        the first writes ``serve.json``, so one stopping never deletes the file another
        wrote, and a second one never replaces the first one's.

        Raises:
            ConfigError: the lock file cannot be opened.
        """
        path = self.path / SERVE_LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open {path}: {exc.strerror or exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def write_serve_info(self, info: ServeInfo) -> None:
        """Raises: ConfigError: it cannot be written."""
        write_atomic(self.serve_file, info.to_json(), mode=0o600)

    def read_serve_info(self) -> ServeInfo | None:
        """The running service's ``serve.json``; ``None`` when absent or stale.

        Raises:
            ConfigError: present but damaged.
        """
        if not self.serve_file.exists():
            return None
        info = ServeInfo.from_json(
            read_bounded(self.serve_file, MAX_SERVE_FILE_BYTES, "serve file"), self.serve_file
        )
        return info if _running(info.pid) else None

    def remove_serve_info(self, pid: int) -> None:
        """Remove ``serve.json`` if it is this ``pid``'s."""
        try:
            info = self.read_serve_info()
        except ConfigError:
            return
        if info is not None and info.pid == pid:
            self.serve_file.unlink(missing_ok=True)


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    """``test(path)``, a path the system cannot even look up (a name too long) refused as
    the hub directory it was meant to be.

    Raises:
        HubDirError: the lookup failed.
    """
    try:
        return test(path)
    except OSError as exc:
        shown = str(path) if len(str(path)) <= 120 else str(path)[:119] + "…"
        raise HubDirError(f"{shown} cannot be used: {exc.strerror or exc}", path) from exc


def shown_registry(location: Path | str) -> str:
    """A registry location for messages, logs and JSON: a URL without its password (never
    raises: a URL that does not parse is shown with any password cut out), or a path."""
    try:
        parsed = parse_location(location)
    except RegistryError:
        return "(a registry location that is neither a path nor a URL: not shown)"
    if not isinstance(parsed, str):
        return redacted(str(parsed))
    from hub.registry.postgres.registry import describe

    try:
        return describe(parsed)
    except RegistryError:
        return redacted(parsed)


def redacted(message: str) -> str:
    """``message`` on one line, with any password in a URL it quotes cut out (a registry
    error may quote the URL it was given)."""
    return " ".join(_QUERY_PASSWORD.sub(r"\1…", _URL_PASSWORD.sub(r"\1@", message)).split())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _root_chain(directory: Path, current: TrustRoot) -> tuple[TrustRoot, ...]:
    """Every root version kept in ``directory`` (``root-v<N>.cbor``), up to the current one."""
    chain = []
    for version in range(1, current.version):
        path = directory / f"root-v{version}.cbor"
        if path.exists():
            chain.append(verify_trusted_root(read_bounded(path, MAX_ROOT_BYTES, "root"), now=None))
    return (*chain, current)
