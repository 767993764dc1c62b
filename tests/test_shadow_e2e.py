"""End to end on the embedded broker: the running hub publishes a shadow bundle through its
governance method, a real ``edge-agent run`` evaluates it beside its active bundle and logs
the divergence, and the hub stores it (``edge-hub lineage show`` and the lineage search see
it); an empty retained message clears it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edge_agent.client import DecisionResult, decide
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.lineage_entries import Kind, decode_entry, parse_shadow_detail
from edge_agent.protocol.roles import Role
from edge_agent.protocol.topics import Channel, ChannelKind
from hub.cli.operations import build_bundle
from hub.hubdir.keys import ROOT_FILE, load_role_keys
from hub.registry.backends import open_registry
from hub.registry.lineage_records import LineageQuery
from hub.service.server import HubService
from tests.brokers import amqtt_broker
from tests.hub_support import HubSetup, hub_config, make_hub_dir, run_cli

pytestmark = pytest.mark.asyncio

AGENT = (sys.executable, "-m", "edge_agent.cli")
HUB = (sys.executable, "-m", "hub.cli.main")
WAIT_S = 60.0
DEVICE = "gw-sh-01"
VISION = ("model.invoke", "model://vision/v3")
ACTIVE = """\
target: {region: eu-1, groups: [line-a], profiles: [generic-x86_64]}
ttl: 24h
rules:
  - id: vision
    effect: allow
    subjects: ["*"]
    actions: [model.invoke]
    resources: ["model://vision/*"]
"""
CANDIDATE = """\
target: {region: eu-1, groups: [line-a], profiles: [generic-x86_64]}
ttl: 24h
rules:
  - id: vision-v4-only
    effect: allow
    subjects: ["*"]
    actions: [model.invoke]
    resources: ["model://vision/v4"]
"""
"""The candidate (version 2): the active bundle (version 1) allows every vision model by
rule ``vision``; the candidate only v4, so v3 flips to the default deny."""


async def _ok(*args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, list(args), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


async def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def _agent(tmp_path: Path, setup: HubSetup, broker_url: str) -> AsyncIterator[Path]:
    """Enrol, register and run one agent in group line-a; its decision socket."""
    root = tmp_path / "root.cbor"
    shutil.copy(setup.keys / ROOT_FILE, root)
    state = tmp_path / DEVICE
    await _ok(
        *AGENT, "init", "--state-dir", str(state), "--device-id", DEVICE, "--root", str(root),
        "--region", "eu-1", "--group", "line-a", "--profile", "generic-x86_64",
        "--broker", broker_url,
    )  # fmt: skip
    pem = tmp_path / f"{DEVICE}.pub"
    pem.write_text(await _ok(*AGENT, "pubkey", "--state-dir", str(state)))
    added = await run_cli(
        "device", "add", DEVICE, "--pubkey", str(pem), "--region", "eu-1", "--group", "line-a",
        "--profile", "generic-x86_64", "--hub-dir", str(setup.path),
    )  # fmt: skip
    assert added == 0
    sock = state / "agent.sock"
    process = subprocess.Popen(
        [*AGENT, "run", "--state-dir", str(state), "--socket", str(sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await _until(sock.exists, "the agent's decision socket")
        yield sock
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        _, err = await asyncio.to_thread(process.communicate, timeout=30)
        assert process.returncode == 0, err


def _ask(sock: Path) -> DecisionResult:
    action, resource = VISION
    return decide(action=action, resource=resource, path=sock)


def _stored_divergences(setup: HubSetup) -> list[int]:
    with open_registry(setup.registry) as registry:
        return [
            stored.seq
            for stored in registry.iter_entries(DEVICE)
            if decode_entry(stored.data, stored.seq).kind is Kind.SHADOW_DIVERGENCE
        ]


def _bundle(setup: HubSetup, source: str, version: int) -> bytes:
    root = setup.root
    data, _ = build_bundle(
        load_policy_source(source),
        root=root,
        signers=load_role_keys(setup.keys, Role.POLICY, root),
        version=version,
        ttl=None,
        now=int(time.time()),
    )
    return data


async def test_a_shadow_published_by_the_hub_is_evaluated_by_a_real_agent_and_its_divergence_stored(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    channel = Channel(ChannelKind.DEVICE, DEVICE)
    async with (
        amqtt_broker() as broker,
        HubService(hub_config(setup, broker)) as hub,
        _agent(tmp_path, setup, broker.url) as sock,
    ):
        await hub.wait_ready()
        active = tmp_path / "bundle-v1.cbor"
        active.write_bytes(_bundle(setup, ACTIVE, 1))
        assert await run_cli("bundle", "push", str(active), "--hub-dir", str(setup.path)) == 0
        await _until(lambda: _ask(sock).allowed, "the active bundle at the agent")

        candidate = _bundle(setup, CANDIDATE, 2)
        await hub.governance.publish_shadow("eu-1", channel, candidate)

        def diverged() -> bool:
            answer = _ask(sock)
            assert (answer.allowed, answer.rule) == (True, "vision")
            return bool(_stored_divergences(setup))

        await _until(diverged, "a divergence shipped to the hub")
        seq = _stored_divergences(setup)[0]
        with open_registry(setup.registry) as registry:
            stored = list(registry.iter_entries(DEVICE, seq - 1))
            before, entry = (decode_entry(s.data, s.seq) for s in stored[:2])
            hits = registry.search_lineage(
                LineageQuery(device=DEVICE, kind=str(Kind.SHADOW_DIVERGENCE))
            ).hits
        shown = json.loads(
            await _ok(*HUB, "lineage", "show", DEVICE, "--json", "--hub-dir", str(setup.path))
        )["entries"]

        await hub.governance.publish_shadow("eu-1", channel, None)

    assert (entry.allowed, entry.reason, entry.rule, entry.bundle_version) == (
        True,
        "allowed",
        "vision",
        1,
    )
    assert entry.request is not None and entry.request.resource == VISION[1]
    assert (before.kind, before.request) == (Kind.DECISION, entry.request)
    outcome = parse_shadow_detail(entry.detail)
    assert (outcome.version, outcome.allowed, outcome.reason, outcome.rule) == (
        2,
        False,
        "no_matching_rule",
        None,
    )
    assert hits and all(h.kind == "shadow_divergence" for h in hits)
    assert any(e.get("kind") == "shadow_divergence" and e.get("seq") == seq for e in shown)
