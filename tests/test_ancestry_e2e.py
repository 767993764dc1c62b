"""End to end over MQTT: a decision on one gateway authorises a decision on another, and the
chain is reconstructed at the hub and verified offline.

A real hub service on the embedded amqtt broker and three real ``edge-agent run`` processes
(a camera gateway in group ``cameras``, a PLC gateway in ``plcs``, an outsider in
``others``), each registered with ``edge-hub device add``, so the hub publishes the region's
signed device directory, which every agent keeps. One bundle, pushed through the hub,
allows ``model.invoke`` of vision models to anyone and ``plc.write`` on line A only with a
parent: a ``model.invoke`` of a vision model, decided on a device of group ``cameras``, at
most :data:`MAX_AGE_S` seconds old. Through the decision socket (``edge_agent.client``):

- the camera's decision with ``want_receipt`` passed as parent to the PLC → allowed;
- no parent → ``parent_missing``; a parent from the outsider, a tampered or forged receipt,
  a parent that was itself a deny, a receipt older than the maximum age, and a receipt
  used once and replayed after that age → ``parent_invalid``.

Then, every tool a process of its own: once both logs are shipped and cosigned,
``edge-hub lineage ancestry`` walks the PLC's allowed decision back to the camera's and
exports the chain, which ``edge-verify chain`` verifies in a directory holding only
``root.cbor``.
"""

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
from edge_agent.protocol import cose
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.roles import Role
from hub.cli.operations import build_bundle
from hub.hubdir.keys import ROOT_FILE, load_role_keys
from hub.registry.backends import open_registry
from hub.service.server import HubService
from tests.ancestry_support import DeviceLog
from tests.brokers import amqtt_broker
from tests.hub_support import HubSetup, hub_config, make_hub_dir, run_cli

pytestmark = pytest.mark.asyncio

AGENT = (sys.executable, "-m", "edge_agent.cli")
HUB = (sys.executable, "-m", "hub.cli.main")
VERIFY = (sys.executable, "-m", "edge_agent.verify.cli")
WAIT_S = 60.0
TOOL_TIMEOUT_S = 120.0
MAX_AGE_S = 4
CAMERA, PLC, OUTSIDER = "gw-cam-01", "gw-plc-02", "gw-other-09"
GROUPS = {CAMERA: "cameras", PLC: "plcs", OUTSIDER: "others"}
VISION = ("model.invoke", "model://vision/v3")
VALVE = ("plc.write", "plc://line-a/valve-7")
POLICY = f"""\
target: {{region: eu-1, groups: [cameras, plcs, others], profiles: [generic-x86_64]}}
ttl: 24h
rules:
  - id: vision
    effect: allow
    subjects: ["*"]
    actions: [model.invoke]
    resources: ["model://vision/*"]
  - id: valve-only-from-vision
    effect: allow
    subjects: ["*"]
    actions: [plc.write]
    resources: ["plc://line-a/*"]
    when:
      parent:
        action: [model.invoke]
        resource: ["model://vision/*"]
        devices: [group:cameras]
        max_age: {MAX_AGE_S}s
"""


async def _tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One of the command-line tools as a process of its own, off the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        list(args),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


async def _ok(*args: str, cwd: Path | None = None) -> str:
    done = await _tool(*args, cwd=cwd)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


async def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def _agents(
    tmp_path: Path, setup: HubSetup, broker_url: str
) -> AsyncIterator[dict[str, Path]]:
    """Enrol, register (``edge-hub device add``) and run the three agents; their sockets."""
    root = tmp_path / "root.cbor"
    shutil.copy(setup.keys / ROOT_FILE, root)
    sockets: dict[str, Path] = {}
    processes: list[subprocess.Popen[str]] = []
    try:
        for device, group in GROUPS.items():
            state = tmp_path / device
            await _ok(
                *AGENT,
                "init",
                "--state-dir",
                str(state),
                "--device-id",
                device,
                "--root",
                str(root),
                "--region",
                "eu-1",
                "--group",
                group,
                "--profile",
                "generic-x86_64",
                "--broker",
                broker_url,
            )
            pem = tmp_path / f"{device}.pub"
            pem.write_text(await _ok(*AGENT, "pubkey", "--state-dir", str(state)))
            assert (
                await run_cli(
                    "device",
                    "add",
                    device,
                    "--pubkey",
                    str(pem),
                    "--region",
                    "eu-1",
                    "--group",
                    group,
                    "--profile",
                    "generic-x86_64",
                    "--hub-dir",
                    str(setup.path),
                )
                == 0
            )
            sockets[device] = state / "agent.sock"
            processes.append(
                subprocess.Popen(
                    [*AGENT, "run", "--state-dir", str(state), "--socket", str(sockets[device])],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for device, sock in sockets.items():
            await _until(sock.exists, f"{device}'s decision socket")
        yield sockets
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            _, err = await asyncio.to_thread(process.communicate, timeout=30)
            assert process.returncode == 0, err


def _push_bundle(setup: HubSetup, path: Path) -> None:
    root = setup.root
    data, _ = build_bundle(
        load_policy_source(POLICY),
        root=root,
        signers=load_role_keys(setup.keys, Role.POLICY, root),
        version=1,
        ttl=None,
        now=int(time.time()),
    )
    path.write_bytes(data)


def _ask(sock: Path, what: tuple[str, str], **options: object) -> DecisionResult:
    action, resource = what
    return decide(action=action, resource=resource, path=sock, **options)  # type: ignore[arg-type]


def _receipt(sock: Path, what: tuple[str, str] = VISION) -> bytes:
    answer = _ask(sock, what, want_receipt=True)
    assert answer.receipt is not None
    return answer.receipt


def _tampered(receipt: bytes) -> bytes:
    at = receipt.index(b"model://vision/v3")
    return receipt[:at] + b"model://vision/v4" + receipt[at + len(b"model://vision/v3") :]


def _forged(receipt: bytes) -> bytes:
    """A receipt of the same decision made on a log of the camera's id signed by another
    key: what a process that stole no key can make."""
    log = DeviceLog(CAMERA, PrivateKey.generate())
    decoded = decode_entry(_entry_of(receipt))
    assert decoded.request is not None
    log.append(decoded.request, time=decoded.time)
    return log.receipt(0)


def _entry_of(receipt: bytes) -> bytes:
    """The entry a receipt carries (unverified: the test only reads it back)."""
    statement = cose.parse_sign1_open(
        receipt, max_bytes=1 << 20, max_protected_bytes=1 << 16, what="receipt"
    )
    assert statement.payload is not None
    return statement.payload


def _shipped(setup: HubSetup, device: str, seq: int) -> bool:
    with open_registry(setup.registry) as registry:
        return registry.lineage_state(device).size > seq and any(
            c.size > seq and "edgegov/v1/witness" in c.note
            for c in registry.iter_checkpoints(device, min_size=seq + 1)
        )


def _allowed_child(setup: HubSetup) -> int:
    """The seq of the PLC's first allowed ``plc.write`` with a parent, at the hub."""
    with open_registry(setup.registry) as registry:
        for stored in registry.iter_entries(PLC):
            entry = decode_entry(stored.data, stored.seq)
            request = entry.request
            if (
                entry.kind is Kind.DECISION
                and entry.allowed
                and request is not None
                and request.parent is not None
            ):
                return stored.seq
    raise AssertionError("the hub holds no allowed child decision of the PLC")


async def test_a_cross_device_chain_is_enforced_reconstructed_at_the_hub_and_verified_offline(
    tmp_path: Path,
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    chain = tmp_path / "chain.cbor"
    async with (
        amqtt_broker() as broker,
        HubService(hub_config(setup, broker)) as hub,
        _agents(tmp_path, setup, broker.url) as sockets,
    ):
        await hub.wait_ready()
        camera, plc, outsider = sockets[CAMERA], sockets[PLC], sockets[OUTSIDER]
        bundle = tmp_path / "bundle-v1.cbor"
        _push_bundle(setup, bundle)
        assert await run_cli("bundle", "push", str(bundle), "--hub-dir", str(setup.path)) == 0

        def chain_allowed() -> bool:
            if _ask(camera, VISION).reason == "no_bundle":
                return False
            return _ask(plc, VALVE, parent=_receipt(camera)).allowed

        await _until(chain_allowed, "the bundle and the device directory at both agents")

        fresh = await asyncio.to_thread(_receipt, camera)
        aging = await asyncio.to_thread(_receipt, camera)
        allowed = await asyncio.to_thread(_ask, plc, VALVE, parent=fresh)
        assert (allowed.allowed, allowed.reason, allowed.rule) == (
            True,
            "allowed",
            "valve-only-from-vision",
        )
        denied = {
            "none": await asyncio.to_thread(_ask, plc, VALVE),
            "outside the group": await asyncio.to_thread(
                _ask, plc, VALVE, parent=await asyncio.to_thread(_receipt, outsider)
            ),
            "tampered": await asyncio.to_thread(_ask, plc, VALVE, parent=_tampered(fresh)),
            "forged": await asyncio.to_thread(_ask, plc, VALVE, parent=_forged(fresh)),
            "itself a deny": await asyncio.to_thread(
                _ask,
                plc,
                VALVE,
                parent=await asyncio.to_thread(
                    _receipt, camera, ("model.invoke", "model://audio/x")
                ),
            ),
        }
        await asyncio.sleep(MAX_AGE_S + 2)
        denied["expired"] = await asyncio.to_thread(_ask, plc, VALVE, parent=aging)
        denied["replayed beyond its max age"] = await asyncio.to_thread(
            _ask, plc, VALVE, parent=fresh
        )
        reasons = {name: (d.allowed, d.reason) for name, d in denied.items()}
        assert reasons == {
            "none": (False, "parent_missing"),
            **{name: (False, "parent_invalid") for name in denied if name != "none"},
        }

        child = _allowed_child(setup)
        parent_seq = decode_entry(_entry_of(fresh)).seq
        await _until(lambda: _shipped(setup, PLC, child), "the PLC's log at the hub, cosigned")
        await _until(
            lambda: _shipped(setup, CAMERA, parent_seq), "the camera's log at the hub, cosigned"
        )
        walked = json.loads(
            await _ok(
                *HUB,
                "lineage",
                "ancestry",
                PLC,
                str(child),
                "--json",
                "--export",
                str(chain),
                "--hub-dir",
                str(setup.path),
            )
        )

    assert walked["verified"] is True
    links = [(link["device"], link["status"]) for link in walked["links"]]
    assert links[0] == (PLC, "verified") and links[-1][1] == "verified"
    assert walked["links"][0]["policy"] == (
        "re-decided under bundle v1: allowed by rule valve-only-from-vision with its parent's "
        "verified facts (allowed)"
    )
    assert all(device == CAMERA for device, _ in links[1:])
    shutil.copy(setup.keys / ROOT_FILE, auditor / "root.cbor")
    shutil.copy(chain, auditor / "chain.cbor")
    assert sorted(p.name for p in auditor.iterdir()) == ["chain.cbor", "root.cbor"]
    report = json.loads(
        await _ok(*VERIFY, "chain", "chain.cbor", "--root", "root.cbor", "--json", cwd=auditor)
    )
    assert report["ok"] is True
    assert report["links"][0]["device"] == PLC
    assert report["links"][0]["entry"]["rule"] == "valve-only-from-vision"
    assert report["links"][1]["device"] == CAMERA
    assert report["links"][1]["entry"]["request"]["action"] == "model.invoke"
