"""``edge-hub serve --registry postgresql://...`` end to end: the hub serves on its
embedded broker with its registry in PostgreSQL, an agent installs the bundle
``edge-hub bundle push --registry`` recorded there, and the lineage it ships is stored in
that database. The URL's password is never printed (banner, logs, the serve file)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.protocol.request import Request
from edge_agent.support.mqtt import BrokerSettings
from hub.registry.backends import open_registry
from tests.agent_fleet import agent_fleet
from tests.hub_support import make_bundle, make_hub_dir, run_cli, wait_for

SECRET = "s3cret-pw"
REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
WAIT_S = 30.0
DECISIONS = 25


def _with_password(url: str) -> str:
    """``url`` with a password (the tests' server trusts every login and ignores it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


@pytest.mark.asyncio
async def test_serve_on_postgres_installs_a_pushed_bundle_and_stores_shipped_lineage(
    tmp_path: Path, postgres_url: str
) -> None:
    url = _with_password(postgres_url)
    setup = make_hub_dir(tmp_path / "hub", devices=(), url=url)
    command = ["serve", "--port", "0", "--registry", url, "--hub-dir", str(setup.path)]
    serve = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", *command, "--freshness-interval", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "EDGEGOV_REGISTRY"},
    )
    try:
        assert serve.stdout is not None
        banner = await asyncio.to_thread(serve.stdout.readline)
        assert "registry postgresql://postgres@127.0.0.1:" in banner, banner
        serve_file = (setup.path / "serve.json").read_text()
        assert SECRET not in banner + serve_file
        assert not (setup.path / "hub.db").exists()
        info = json.loads(serve_file)
        broker = BrokerSettings.from_url(info["broker"])
        async with agent_fleet(tmp_path / "agents", setup.root.raw, broker, url) as agents:
            daemon = agents.add("gw-001")
            bundle = tmp_path / "b1.cbor"
            bundle.write_bytes(make_bundle(setup.keys, 1))
            push = ["bundle", "push", str(bundle), "--hub-dir", str(setup.path)]
            assert await run_cli(*push, "--registry", url) == 0
            await wait_for(lambda: _version(daemon.agent.state.bundle) == 1, WAIT_S)
            for _ in range(DECISIONS):
                await asyncio.to_thread(daemon.agent.decide, REQUEST, int(time.time()))
            lineage = daemon.agent.lineage
            assert lineage is not None and lineage.size >= DECISIONS
            await wait_for(lambda: _stored(postgres_url) == lineage.size, WAIT_S)
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        out, err = await asyncio.to_thread(serve.communicate, timeout=30)
    assert serve.returncode == 0, err
    assert SECRET not in out + err


def _version(bundle: object) -> int | None:
    return None if bundle is None else int(bundle.version)  # type: ignore[attr-defined]


def _stored(url: str) -> int:
    with open_registry(url) as registry:
        return registry.lineage_state("gw-001").size
