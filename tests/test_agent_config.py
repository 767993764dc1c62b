"""``agent.toml`` is checked strictly at start: every bad field stops the agent, named.

The sections are frozen dataclasses checked by :mod:`edge_agent.protocol.settings` (no
pydantic on the agent's idle path); these scenarios pin the rules pydantic's strict mode
applied before: TOML's types as given, no coercion from bool, every bound, no unknown key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol.settings import SettingsError, parse
from edge_agent.socket.config import SocketConfig, SocketLimits
from edge_agent.sync.config import AgentConfig, SyncConfig, load_config


@dataclass(frozen=True)
class Case:
    name: str
    toml: str
    error: str = ""


CASES = [
    Case("empty file", ""),
    Case("every section", "[broker]\nurl = 'mqtt://h:1883'\n[sync]\n[lineage]\n[socket]\n[log]"),
    Case("an unknown section", "[syncing]\n", "syncing: Extra inputs are not permitted"),
    Case("an unknown key", "[sync]\nship_every = 3\n", "sync.ship_every: Extra inputs"),
    Case("an unknown nested key", "[socket.limits]\nx = 1\n", "socket.limits.x: Extra inputs"),
    Case("a section that is a value", "sync = 3\n", "sync: Input should be a table"),
    Case("a bool for an int", "[sync]\nkeepalive_s = true\n", "sync.keepalive_s: Input should be"),
    Case("a float for an int", "[sync]\nkeepalive_s = 30.0\n", "sync.keepalive_s: Input should"),
    Case("a string for an int", "[socket]\nmode = '660'\n", "socket.mode: Input should be"),
    Case("a bool for a float", "[sync]\nship_interval_s = true\n", "sync.ship_interval_s: Input"),
    Case("an int for a float", "[sync]\nship_interval_s = 2\n"),
    Case("nan", "[sync]\nship_interval_s = nan\n", "sync.ship_interval_s: Input should be a"),
    Case("inf", "[sync]\nack_timeout_s = inf\n", "less than or equal to 600"),
    Case("below ge", "[sync]\nkeepalive_s = 4\n", "greater than or equal to 5"),
    Case("above le", "[sync]\nbatch_entries = 513\n", "less than or equal to 512"),
    Case("at gt", "[socket.limits]\nidle_timeout_s = 0\n", "socket.limits.idle_timeout_s: "),
    Case("a Literal outside its values", "[lineage]\nsynchronous = 'OFF'\n", "'FULL' or"),
    Case("a number for a Literal", "[log]\nlevel = 1\n", "log.level: Input should be"),
    Case("too long a string", f"[broker]\nusername = '{'u' * 257}'\n", "at most 256 characters"),
    Case("a group by name", "[socket]\ngroup = 'edge-workloads'\n"),
    Case("a group by gid", "[socket]\ngroup = 1001\n"),
    Case("a bool for a group", "[socket]\ngroup = true\n", "socket.group: Input should be"),
    Case("a number for a path", "[socket]\npath = 5\n", "socket.path: Input should be"),
    Case("a date for a string", "[broker]\nurl = 2026-01-01\n", "broker.url: Input should be"),
    Case("an optional bound", "[lineage]\nretain_max_entries = 0\n", "greater than or equal to 1"),
    Case(
        "two errors, the first field's named",
        "[sync]\nkeepalive_s = 1\n[log]\nlevel = 'loud'\n",
        "log.level: Input should be 'debug' or 'info' or 'warning' or 'error' (2 error(s) in all)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_config_file_is_checked_strictly(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(case.toml)
    if not case.error:
        assert isinstance(load_config(path, {}), AgentConfig)
        return
    with pytest.raises(ConfigError, match="is invalid: ") as raised:
        load_config(path, {})
    assert case.error in str(raised.value)


def test_values_take_their_fields_types() -> None:
    config = parse(
        AgentConfig,
        {"sync": {"ship_interval_s": 2}, "socket": {"path": "/run/a.sock", "group": 7}},
    )
    assert config.sync.ship_interval_s == 2.0 and type(config.sync.ship_interval_s) is float
    assert config.socket.path == Path("/run/a.sock")
    assert config.socket.group == 7


def test_an_empty_file_gives_the_defaults_and_init_settings_fill_the_broker() -> None:
    config = load_config(None, {"url": "mqtt://hub:1883", "username": "gw"})
    assert config.sync == SyncConfig() and config.socket == SocketConfig()
    assert (config.broker.url, config.broker.username) == ("mqtt://hub:1883", "gw")


@pytest.mark.parametrize(
    "build",
    [
        lambda: SocketLimits(max_connections=0),
        lambda: SocketLimits(decision_threads=True),
        lambda: SocketConfig(mode=0o1000),
        lambda: SyncConfig(ack_timeout_s=0.1),
        lambda: SocketConfig(limits={"backlog": 0}),  # type: ignore[arg-type]
    ],
    ids=["below-ge", "bool-for-int", "above-le", "below-float-ge", "nested-table"],
)
def test_a_section_built_in_code_is_checked_too(build: object) -> None:
    with pytest.raises(SettingsError):
        build()  # type: ignore[operator]


def test_sections_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SyncConfig().keepalive_s = 1  # type: ignore[misc]
