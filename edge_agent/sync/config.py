"""``agent.toml``: the daemon's configuration, validated once at start (strict, frozen).

Every section and field is optional; an unknown field, a wrong type or an out-of-range value
stops the agent with a message naming the field, instead of starting half-configured. The
broker URL and credentials given to ``edge-agent init`` are the defaults the file overrides.
Nothing here can move the agent's notion of "now".

Example::

    [broker]
    url = "mqtts://hub.example:8883"
    username = "gw-001"
    password_file = "/etc/edge-agent/broker.password"
    ca_file = "/etc/edge-agent/ca.pem"

    [sync]
    status_interval_s = 30
    ship_interval_s = 1
    ack_timeout_s = 10
    reconnect_max_s = 60

    [lineage]                      # docs/lineage.md
    synchronous = "FULL"
    verify_on_start = "tail"       # or "full": re-verify every entry at start
    audit_every_s = 3600           # verify every entry in the background (0: once at start)
    retain_max_entries = 1000000   # never prunes what the hub has not acknowledged
    retain_max_age_s = 7776000

    [attestation]                  # docs/attestation.md
    profile_dir = "/etc/edge-agent/firmware_profiles"   # <enrolled profile>.toml is used

    [socket]                       # the local decision socket (docs/socket.md)
    path = "/run/edge-agent/agent.sock"
    mode = 0o660
    group = "edge-workloads"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_agent.attest.config import AttestationConfig
from edge_agent.errors import ConfigError
from edge_agent.lineage.log import LineageConfig
from edge_agent.protocol.settings import Section, SettingsError, parse, setting
from edge_agent.socket.config import SocketConfig
from edge_agent.support.files import read_regular_file
from edge_agent.support.mqtt import BrokerSettings

__all__ = [
    "MAX_CONFIG_BYTES",
    "AgentConfig",
    "BrokerConfig",
    "LineageSection",
    "LogSection",
    "SyncConfig",
    "load_config",
]

MAX_CONFIG_BYTES = 64 * 1024
MAX_PASSWORD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class BrokerConfig(Section):
    """Where the hub's broker is and how to log in; secrets stay in their own files."""

    url: str | None = None
    username: str | None = setting(None, max_length=256)
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class SyncConfig(Section):
    """Timing and bounds of the MQTT sync, in seconds and counts."""

    status_interval_s: int = setting(30, ge=1, le=3600)
    retention_interval_s: int = setting(300, ge=1, le=86400)
    ship_interval_s: float = setting(1.0, ge=0.05, le=600)
    ack_timeout_s: float = setting(10.0, ge=0.5, le=600)
    reconnect_initial_s: float = setting(0.5, ge=0.05, le=60)
    reconnect_max_s: float = setting(60.0, ge=0.5, le=3600)
    batch_entries: int = setting(512, ge=1, le=512)
    keepalive_s: int = setting(30, ge=5, le=3600)


@dataclass(frozen=True, slots=True)
class LineageSection(Section):
    """How the decision log is written, checked at start and kept (docs/lineage.md)."""

    checkpoint_every: int = setting(1000, ge=1, le=1_000_000)
    checkpoint_after_s: int = setting(300, ge=1, le=86400)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    verify_on_start: Literal["tail", "full"] = "tail"
    audit_every_s: int = setting(3600, ge=0, le=7 * 86400)
    retain_max_entries: int | None = setting(None, ge=1)
    retain_max_age_s: int | None = setting(None, ge=1)

    def to_config(self) -> LineageConfig:
        return LineageConfig(
            checkpoint_every=self.checkpoint_every,
            checkpoint_after_s=self.checkpoint_after_s,
            synchronous=self.synchronous,
            verify_on_start=self.verify_on_start,
            audit_every_s=self.audit_every_s,
            retain_max_entries=self.retain_max_entries,
            retain_max_age_s=self.retain_max_age_s,
        )


@dataclass(frozen=True, slots=True)
class LogSection(Section):
    """What the daemon logs to stderr (journald keeps it), and how."""

    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class AgentConfig(Section):
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    log: LogSection = field(default_factory=LogSection)
    sync: SyncConfig = field(default_factory=SyncConfig)
    lineage: LineageSection = field(default_factory=LineageSection)
    attestation: AttestationConfig = field(default_factory=AttestationConfig)
    socket: SocketConfig = field(default_factory=SocketConfig)

    def broker_settings(self, device_id: str) -> BrokerSettings:
        """The broker to connect to, with the password read from its file. The username is
        ``device_id`` unless configured; the daemon connects with the username as its MQTT
        client id, so with Mosquitto's ``use_username_as_clientid`` (the shipped config) no
        other login can take its session over.

        Raises:
            ConfigError: no broker URL anywhere, a malformed URL, or an unreadable password
                file.
        """
        if self.broker.url is None:
            raise ConfigError(
                "no broker configured: pass --broker to 'edge-agent init' or set [broker] url "
                "in the config file"
            )
        password = None
        if self.broker.password_file is not None:
            password = _read_secret(Path(self.broker.password_file))
        return BrokerSettings.from_url(
            self.broker.url,
            username=self.broker.username or device_id,
            password=password,
            ca_file=self.broker.ca_file,
            cert_file=self.broker.cert_file,
            key_file=self.broker.key_file,
        )


def load_config(path: Path | None, defaults: dict[str, str]) -> AgentConfig:
    """Read ``path`` (TOML) over the broker ``defaults`` recorded at ``init``.

    Raises:
        ConfigError: unreadable, too large, not TOML, or a field is unknown or invalid.
    """
    data: dict[str, object] = {}
    if path is not None:
        try:
            raw = read_regular_file(path, MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    broker = data.get("broker", {})
    if isinstance(broker, dict):
        data["broker"] = {**defaults, **broker}
    try:
        return parse(AgentConfig, data)
    except SettingsError as exc:
        raise ConfigError(f"the config file {path} is invalid: {exc}") from exc


def _read_secret(path: Path) -> str:
    try:
        raw = read_regular_file(path, MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the broker password file {path}: {exc}") from exc
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"the broker password file {path} is too large")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the broker password file {path} is not UTF-8 text") from exc
