"""``serve.json`` names the registry the running ``edge-hub serve`` serves (a PostgreSQL URL
without its password, or the absolute path of its ``hub.db``), and the commands publishing
through it say so: a push recorded in another registry is warned about."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.support.mqtt import BrokerSettings
from hub.hubdir.layout import HubDir, ServeInfo
from hub.service.config import HubConfig
from hub.service.server import HubService
from tests.hub_support import (
    REGISTRY_BACKENDS,
    HubSetup,
    backend_url,
    make_bundle,
    make_hub_dir,
    run_cli,
)

SECRET = "s3cret-pw"


@pytest.fixture(params=REGISTRY_BACKENDS)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> HubSetup:
    """A hub directory whose registry is its ``hub.db`` or a PostgreSQL database named with a
    password (the tests' server trusts every login and ignores it)."""
    url = backend_url(request)
    if url is not None:
        url = url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)
    return make_hub_dir(tmp_path / "hub", url=url)


def _shown(setup: HubSetup) -> str:
    """The registry as ``serve.json`` must name it."""
    if setup.url is None:
        return str((setup.path / "hub.db").absolute())
    return setup.url.replace(f":{SECRET}@", "@", 1)


async def _push(setup: HubSetup, *registry: str) -> None:
    path = setup.path.parent / "bundle.cbor"
    path.write_bytes(make_bundle(setup.keys, 1))
    args = ["bundle", "push", str(path), "--hub-dir", str(setup.path), *registry, "--json"]
    assert await run_cli(*args) == 0


@pytest.mark.asyncio
async def test_the_serve_file_names_the_registry_served_without_its_password(
    setup: HubSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    config = HubConfig(setup.path, registry=setup.url, port=0, write_serve_file=True)
    async with HubService(config) as hub:
        await hub.wait_ready()
        written = (setup.path / "serve.json").read_text()
        assert SECRET not in written
        assert json.loads(written)["registry"] == _shown(setup)
        info = HubDir(setup.path, setup.url).read_serve_info()
        assert info is not None and info.registry == _shown(setup)
        capsys.readouterr()
        await _push(setup, *setup.registry_args)
        pushed = json.loads(capsys.readouterr().out)
        assert pushed["published"] is True and pushed["serve_registry"] == _shown(setup)


@pytest.mark.asyncio
async def test_a_push_recorded_in_another_registry_than_the_serves_is_warned_about(
    setup: HubSetup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = make_hub_dir(tmp_path / "other")
    async with HubService(HubConfig(setup.path, registry=setup.url, port=0)) as hub:
        await hub.wait_ready()
        capsys.readouterr()
        with caplog.at_level(logging.WARNING, logger="hub.cli.fabric"):
            await _push(setup, "--registry", str(other.path / "hub.db"))
    warned = [r.getMessage() for r in caplog.records if r.name == "hub.cli.fabric"]
    assert len(warned) == 1 and f"serves registry {_shown(setup)}" in warned[0]
    assert str(other.path / "hub.db") in warned[0] and SECRET not in warned[0]


def test_a_serve_file_without_a_registry_still_reads_and_one_with_a_password_is_cut(
    tmp_path: Path,
) -> None:
    base = ServeInfo(BrokerSettings.from_url("mqtt://127.0.0.1:1883"), 1, True, False, 60)
    document = json.loads(base.to_json())
    del document["registry"]
    assert ServeInfo.from_json(json.dumps(document).encode(), tmp_path).registry is None
    document["registry"] = f"postgresql://hub:{SECRET}@db/edgegov"
    read = ServeInfo.from_json(json.dumps(document).encode(), tmp_path)
    assert read.registry is not None and SECRET not in read.registry
    document["registry"] = 7
    with pytest.raises(ConfigError, match="registry must be text"):
        ServeInfo.from_json(json.dumps(document).encode(), tmp_path)
