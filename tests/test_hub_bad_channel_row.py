"""A ``channels`` row no hub can publish (damage, or data written by no hub) is skipped by
the schedule, logged naming its region and channel and what is wrong, while every other
channel is published as before (its devices get no freshness from it: fail closed); and
``edge-hub registry check`` lists it and fails. Both registry backends."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import cast

import psycopg
import pytest

from edge_agent.support.mqtt import Connection
from hub.cli.main import main as hub_main
from hub.registry.channel_rows import channel_row_problem
from hub.service import publish
from tests.hub_support import HubSetup
from tests.test_hub_schedule_lease import FRESHNESS, _hub, _push, location, setup  # noqa: F401

BAD_CHANNELS = ["nokind/line-b", "group/line b", "group"]


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test a new hub process: no bad row warned about yet (a process warns once)."""
    monkeypatch.setattr(publish, "_reported", set())


def _add_row(registry: Path | str, channel: str) -> None:
    """A ``channels`` row for ``channel`` in eu-1, on the current bundle of line-a, written
    behind every hub's back."""
    sql = (
        "INSERT INTO channels (region, channel, digest, updated_at) "
        "SELECT region, {p}, digest, updated_at FROM channels WHERE channel = 'group/line-a'"
    )
    if isinstance(registry, Path):
        with contextlib.closing(sqlite3.connect(registry)) as db, db:
            db.execute(sql.format(p="?"), (channel,))
    else:
        with psycopg.connect(registry, autocommit=True) as db:
            db.execute(sql.format(p="%s"), (channel,))


@pytest.mark.asyncio
@pytest.mark.parametrize("channel", BAD_CHANNELS)
async def test_a_bad_channels_row_is_logged_and_skipped_and_the_rest_scheduled(
    setup: HubSetup,  # noqa: F811
    location: Path | str,  # noqa: F811
    channel: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _push(setup, location)
    _add_row(location, channel)
    with (
        _hub(setup, location, f"hub-{channel.replace('/', '-').replace(' ', '-')}") as hub,
        caplog.at_level(logging.WARNING, logger="hub.service.publish"),
    ):
        await hub.schedule.publish_all(cast(Connection, hub.conn))
        await hub.tick()
        assert hub.lease.leading and hub.conn.freshness() >= 1
    topics = {topic for topic, _ in hub.conn.published}
    assert FRESHNESS in topics
    assert not any(channel in topic for topic in topics if "line-a" not in topic)
    warnings = [r.getMessage() for r in caplog.records if r.name == "hub.service.publish"]
    assert warnings and all(f"channel {channel!r}" in w for w in warnings)
    assert channel_row_problem("eu-1", channel) in warnings[0]
    assert len(set(warnings)) == 1 and len(warnings) == 1


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_registry_check_lists_a_bad_channels_row_and_fails(
    setup: HubSetup,  # noqa: F811
    location: Path | str,  # noqa: F811
    as_json: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _push(setup, location)
    assert hub_main(["registry", "check", "--registry", str(location), "--json"]) == 0
    capsys.readouterr()
    _add_row(location, "nokind/line-b")
    args = ["registry", "check", "--registry", str(location), "--hub-dir", str(setup.path)]
    assert hub_main([*args, *(["--json"] if as_json else [])]) == 1
    out = capsys.readouterr().out
    problem = channel_row_problem("eu-1", "nokind/line-b")
    if as_json:
        report = json.loads(out)
        assert report["ok"] is False
        assert report["unpublishable_channels"] == [
            {"region": "eu-1", "channel": "nokind/line-b", "problem": problem}
        ]
    else:
        assert (
            f"UNPUBLISHABLE channels row: region 'eu-1', channel 'nokind/line-b': {problem}" in out
        )


def test_what_makes_a_channels_row_unpublishable() -> None:
    assert channel_row_problem("eu-1", "group/line-a") is None
    assert channel_row_problem("eu-1", "all/_") is None
    assert channel_row_problem("eu-1", "device/gw-001") is None
    assert "KIND/NAME" in (channel_row_problem("eu-1", "nokind/x") or "")
    assert "KIND/NAME" in (channel_row_problem("eu-1", "group") or "")
    assert "cannot be used in MQTT topics" in (channel_row_problem("eu-1", "group/a b") or "")
    assert "cannot be used in MQTT topics" in (channel_row_problem("eu/1", "group/a") or "")
    assert "text" in (channel_row_problem(7, "group/a") or "")
