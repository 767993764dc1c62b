"""Execution ancestry at the hub (``edge-hub lineage ancestry``) over hand-built registries of
several devices' shipped logs, and the chain file it exports as ``edge-verify chain`` judges
it offline: every link proven, a parent not shipped shown (not an error), a tampered stored
entry, an unknown device, a wrong depth and a cycle refused by name, and every tampered
chain file refused with the link and the step that fails."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import ChainError
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.chain import Chain, ChainStep, decode_chain, encode_chain, verify_chain
from edge_agent.protocol.checkpoint import Checkpoint, sign_checkpoint
from edge_agent.protocol.directory import directory_payload, sign_directory
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import (
    GENESIS_PREV,
    Entry,
    Kind,
    decode_entry,
    encode_entry,
    entry_hash,
)
from edge_agent.protocol.merkle import leaf_hash, root_from_leaf_hashes
from edge_agent.protocol.request import Parent, ParentFacts, Request
from edge_agent.protocol.roles import Role
from edge_agent.protocol.shipping import LineageBatch, sign_batch
from edge_agent.verify.cli import main as verify_main
from hub.cli.ancestry import policies
from hub.cli.main import main as hub_main
from hub.cli.operations import build_bundle
from hub.core.ancestry import Ancestry, LinkStatus, walk_ancestry
from hub.core.directory import DEFAULT_DIRECTORY_TTL_S, issue_directory, next_directory
from hub.core.ingest import ingest_batch
from hub.core.receipts import hub_receipt
from hub.core.witness import witness_accepted
from hub.hubdir.keys import ROOT_FILE, load_role_keys
from hub.registry import DeviceRecord, Registry
from hub.registry.backends import open_registry
from hub.registry.records import Accepted, PublishedBundle
from tests.ancestry_support import (
    CAMERA,
    CAMERA_KEY,
    OUTSIDER,
    OUTSIDER_KEY,
    PLC,
    PLC_KEY,
    DeviceLog,
    devices,
)
from tests.factory import DAY, NOW
from tests.hub_support import HubSetup, edit_registry, make_hub_dir

VALVE = Request("svc:plc-bridge", "plc.write", "plc://line-a/valve-7")
ASK_VISION = Request("svc:scheduler", "model.invoke", "model://vision/v4")
GROUPS = {CAMERA: ("cameras",), PLC: ("plcs",), OUTSIDER: ()}


@dataclass
class Fleet:
    """A hub directory with the camera, PLC and outsider gateways registered, their logs,
    and the hub's witness key."""

    setup: HubSetup
    logs: dict[str, DeviceLog]
    witness: PrivateKey

    @property
    def db(self) -> Path | str:
        return self.setup.registry

    def ship(self, device: str, *, cosign: bool = True) -> None:
        """Ship every entry of ``device`` not stored yet, as one batch the hub accepts (and
        cosigns, unless ``cosign`` is false)."""
        log = self.logs[device]
        with open_registry(self.db) as registry:
            state = registry.lineage_state(device)
            start, stop = state.size, len(log.entries)
            leaves = [leaf_hash(e) for e in log.entries[:stop]]
            note = sign_checkpoint(
                Checkpoint(log.origin, stop, root_from_leaf_hashes(leaves)), log.key, log.origin
            )
            batch = sign_batch(
                LineageBatch(device, start, tuple(log.entries[start:stop]), note), log.key
            )
            accepted = ingest_batch(
                batch,
                device=device,
                key=log.key.public,
                origin=log.origin,
                log=state,
                stored=registry.stored_log(device),
            )
            assert isinstance(accepted, Accepted)
            if cosign:
                accepted = witness_accepted(
                    accepted, self.witness, device_key=log.key.public, now=NOW
                )
            assert registry.store_batch(accepted, expected_size=start, received_at=NOW)

    def cite(self, device: str, seq: int, *, depth: int | None = None) -> Parent:
        """``device``'s entry ``seq`` as a child's agent records it, verified (depth: its
        own plus one unless given)."""
        data = self.logs[device].entries[seq]
        entry = decode_entry(data, seq)
        request = entry.request
        assert request is not None
        own = request.parent.facts.depth if request.parent and request.parent.facts else 0
        facts = ParentFacts(
            device,
            GROUPS[device],
            seq,
            leaf_hash(data),
            request.subject,
            request.action,
            request.resource,
            entry.time,
            own + 1 if depth is None else depth,
        )
        return Parent(facts, directory_version=1)

    def walk(self, device: str, seq: int, **options: int) -> Ancestry:
        with open_registry(self.db) as registry:
            return walk_ancestry(registry, device, seq, witnesses=[self.witness.public], **options)

    def hub(self, *args: str) -> int:
        return hub_main([*args, "--hub-dir", str(self.setup.path)])


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    with open_registry(setup.registry) as registry:
        for device, key in ((CAMERA, CAMERA_KEY), (PLC, PLC_KEY), (OUTSIDER, OUTSIDER_KEY)):
            registry.add_device(DeviceRecord(device, "eu-1", GROUPS[device], "p", key.public))
    logs = {d: DeviceLog(d, k) for d, k in ((CAMERA, CAMERA_KEY), (PLC, PLC_KEY))}
    logs[OUTSIDER] = DeviceLog(OUTSIDER, OUTSIDER_KEY)
    witness = load_role_keys(setup.keys, Role.VERIFIER, setup.root)[0]
    with open_registry(setup.registry) as registry:
        planned = next_directory(
            None, registry.devices(), region="eu-1", now=NOW - DAY, ttl_s=DEFAULT_DIRECTORY_TTL_S
        )
        assert planned is not None and planned.version == 1
        assert registry.record_directory(issue_directory(planned, witness))
    return Fleet(setup, logs, witness)


@pytest.fixture
def chain3(fleet: Fleet) -> Fleet:
    """camera 1 <- plc 0 <- camera 0: a chain of three decisions across two devices (camera
    0 a root decision, plc 0 the valve write it caused, camera 1 the inference that write
    caused), all shipped and cosigned. The camera also logged an unrelated decision 2."""
    camera, plc = fleet.logs[CAMERA], fleet.logs[PLC]
    camera.append(time=NOW - 10)
    plc.append(VALVE, time=NOW - 8, parent=fleet.cite(CAMERA, 0))
    camera.append(ASK_VISION, time=NOW - 6, parent=fleet.cite(PLC, 0))
    camera.append(time=NOW - 4)
    fleet.ship(CAMERA)
    fleet.ship(PLC)
    return fleet


# --- the walk ------------------------------------------------------------------------------


def test_a_chain_of_three_across_two_devices_is_walked_to_its_root_each_link_verified(
    chain3: Fleet,
) -> None:
    walked = chain3.walk(CAMERA, 1)
    assert [(link.device, link.seq) for link in walked.links] == [
        (CAMERA, 1),
        (PLC, 0),
        (CAMERA, 0),
    ]
    assert [link.status for link in walked.links] == [LinkStatus.VERIFIED] * 3
    assert walked.verified and walked.failed is None
    assert [link.parent.depth if link.parent else 0 for link in walked.links] == [2, 1, 0]


def test_a_parent_not_shipped_yet_ends_the_walk_without_an_error(fleet: Fleet) -> None:
    fleet.logs[CAMERA].append(time=NOW - 10)
    fleet.logs[PLC].append(VALVE, time=NOW - 8, parent=fleet.cite(CAMERA, 0))
    fleet.ship(PLC)
    walked = fleet.walk(PLC, 0)
    assert [link.status for link in walked.links] == [LinkStatus.VERIFIED, LinkStatus.NOT_SHIPPED]
    assert not walked.verified and walked.failed is None
    assert "has not shipped entry 0" in walked.end


def test_a_parent_not_cosigned_yet_is_shown_and_the_walk_goes_on(fleet: Fleet) -> None:
    fleet.logs[CAMERA].append(time=NOW - 10)
    fleet.logs[PLC].append(VALVE, time=NOW - 8, parent=fleet.cite(CAMERA, 0))
    fleet.ship(CAMERA, cosign=False)
    fleet.ship(PLC)
    walked = fleet.walk(PLC, 0)
    assert [link.status for link in walked.links] == [
        LinkStatus.VERIFIED,
        LinkStatus.NOT_COSIGNED,
    ]
    assert not walked.verified and walked.failed is None


@dataclass(frozen=True)
class Broken:
    name: str
    build: Callable[[Fleet], tuple[str, int]]
    """Builds the logs; returns the (device, seq) to walk from."""
    failed_at: int
    says: str


def _tampered_parent(fleet: Fleet) -> tuple[str, int]:
    _tamper(fleet, CAMERA, 0)
    return PLC, 0


def _tampered_start(fleet: Fleet) -> tuple[str, int]:
    _tamper(fleet, CAMERA, 1)
    return CAMERA, 1


def _unknown_device(fleet: Fleet) -> tuple[str, int]:
    parent = fleet.cite(CAMERA, 0)
    assert parent.facts is not None
    ghost = replace(parent, facts=replace(parent.facts, device="gw-ghost"))
    fleet.logs[PLC].append(VALVE, time=NOW - 2, parent=ghost)
    fleet.ship(PLC)
    return PLC, 1


def _wrong_depth(fleet: Fleet) -> tuple[str, int]:
    fleet.logs[PLC].append(VALVE, time=NOW - 2, parent=fleet.cite(CAMERA, 1, depth=5))
    fleet.ship(PLC)
    return PLC, 1


def _transition_as_parent(fleet: Fleet) -> tuple[str, int]:
    parent = fleet.cite(CAMERA, 0)
    assert parent.facts is not None
    log = fleet.logs[CAMERA]
    seq = log.append(kind=Kind.BUNDLE_INSTALLED)
    fleet.ship(CAMERA)
    data = log.entries[seq]
    facts = replace(parent.facts, seq=seq, leaf_hash=leaf_hash(data))
    fleet.logs[PLC].append(VALVE, time=NOW - 2, parent=replace(parent, facts=facts))
    fleet.ship(PLC)
    return PLC, 1


BROKEN = [
    Broken("a stored parent entry replaced", _tampered_parent, 1, "not the one its child cited"),
    Broken("the stored entry walked from replaced", _tampered_start, 0, "not the leaf its tree"),
    Broken("a parent on an unregistered device", _unknown_device, 1, "not registered"),
    Broken("a depth that is not the parent's plus one", _wrong_depth, 1, "depth 5"),
    Broken("a trust transition cited as a parent", _transition_as_parent, 1, "not a decision"),
]


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.name)
def test_a_link_that_does_not_hold_fails_the_walk_and_is_named(chain3: Fleet, case: Broken) -> None:
    device, seq = case.build(chain3)
    walked = chain3.walk(device, seq)
    assert walked.failed is walked.links[case.failed_at]
    assert walked.failed.status == LinkStatus.FAILED
    assert case.says in walked.failed.detail
    assert not walked.verified
    assert chain3.hub("lineage", "ancestry", device, str(seq)) == 1


def test_a_cycle_is_refused_where_the_chain_comes_back(fleet: Fleet) -> None:
    camera, plc = fleet.logs[CAMERA], fleet.logs[PLC]
    camera.append(time=NOW - 10)
    looping = Parent(
        ParentFacts(CAMERA, ("cameras",), 1, bytes(32), "s", "a", "r", NOW - 6, 1),
        directory_version=1,
    )
    plc.append(VALVE, time=NOW - 8, parent=looping)
    camera.append(ASK_VISION, time=NOW - 6, parent=fleet.cite(PLC, 0))
    fleet.ship(CAMERA)
    fleet.ship(PLC)
    walked = fleet.walk(CAMERA, 1)
    assert [(link.device, link.seq) for link in walked.links] == [
        (CAMERA, 1),
        (PLC, 0),
        (CAMERA, 1),
    ]
    assert walked.failed is walked.links[2] and "a cycle" in walked.failed.detail


def test_a_walk_is_cut_at_its_bound_and_says_so(chain3: Fleet) -> None:
    walked = chain3.walk(CAMERA, 1, max_links=2)
    assert len(walked.links) == 2 and walked.end == "cut after 2 links"
    assert walked.failed is None and not walked.verified


@pytest.mark.parametrize(
    ("device", "seq"), [("gw-ghost", 0), (PLC, 0), (CAMERA, 9)], ids=["unknown", "none", "beyond"]
)
def test_an_unknown_device_or_an_entry_not_shipped_is_a_usage_error(
    fleet: Fleet, device: str, seq: int
) -> None:
    fleet.logs[CAMERA].append()
    fleet.ship(CAMERA)
    assert fleet.hub("lineage", "ancestry", device, str(seq)) == 2


@pytest.mark.parametrize(
    ("device", "seq", "fragment"),
    [
        ("gw-ghost", "0", "not registered"),
        (PLC, "0", "has been shipped"),
        (CAMERA, "9", "has not been shipped"),
        (CAMERA, "-1", "SEQ '-1'"),
        (CAMERA, "one", "SEQ 'one'"),
    ],
    ids=["unknown", "none", "beyond", "negative", "not-a-number"],
)
def test_every_usage_error_is_one_json_object_under_json(
    fleet: Fleet, capsys: pytest.CaptureFixture[str], device: str, seq: str, fragment: str
) -> None:
    fleet.logs[CAMERA].append()
    fleet.ship(CAMERA)
    capsys.readouterr()
    assert fleet.hub("lineage", "ancestry", device, seq, "--json") == 2
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert (document["error"], document["code"], document["exit"]) == ("usage", "config_error", 2)
    assert fragment in document["message"]
    assert captured.err == ""


def test_a_failed_link_under_json_is_the_walk_with_its_error(
    chain3: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    _tamper(chain3, PLC, 0)
    capsys.readouterr()
    assert chain3.hub("lineage", "ancestry", CAMERA, "1", "--json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["failed"] == 1
    assert document["error"]["code"] == "lineage_invalid"


def test_ancestry_json_lists_every_link_child_first(
    chain3: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert chain3.hub("lineage", "ancestry", CAMERA, "1", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verified"] is True and document["failed"] is None
    assert document["ok"] is True and document["error"] is None
    assert [(link["device"], link["seq"], link["status"]) for link in document["links"]] == [
        (CAMERA, 1, "verified"),
        (PLC, 0, "verified"),
        (CAMERA, 0, "verified"),
    ]
    assert document["links"][0]["parent"]["device"] == PLC
    assert document["links"][1]["entry"]["action"] == "plc.write"


# --- the policy each child was decided under ------------------------------------------------

VALVE_POLICY = """\
target: {region: eu-1, groups: [plcs], profiles: [generic-x86_64]}
ttl: 24h
rules:
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
        max_age: 30s
"""


def _valve_bundle(fleet: Fleet) -> bytes:
    """The valve policy built and signed as ``edge-hub bundle build`` does (version 1)."""
    root = fleet.setup.root
    data, _ = build_bundle(
        load_policy_source(VALVE_POLICY),
        root=root,
        signers=load_role_keys(fleet.setup.keys, Role.POLICY, root),
        version=1,
        ttl=None,
        now=NOW,
    )
    return data


def _recorded_bundle(fleet: Fleet) -> tuple[bytes, int]:
    """The valve policy built, signed and recorded at the hub as ``bundle push`` does; its
    digest and version."""
    data = _valve_bundle(fleet)
    digest = hashlib.sha256(data).digest()
    with open_registry(fleet.db) as registry:
        registry.record_bundle(
            bundle=PublishedBundle("eu-1", "group/plcs", 1, digest, data, NOW + DAY, None, NOW),
            issued_at=NOW,
            target={"region": "eu-1"},
            channels=["group/plcs"],
        )
    return digest, 1


def _logged(fleet: Fleet, parent: Parent, bundle: tuple[bytes, int], verdict: str) -> int:
    """The PLC logs a valve write citing ``parent`` with ``verdict`` (``allowed`` or
    ``parent_invalid``) under ``bundle``, whatever its policy says; the entry's seq."""
    log = fleet.logs[PLC]
    seq = len(log.entries)
    prev = entry_hash(log.entries[-1]) if log.entries else GENESIS_PREV
    request = Request(VALVE.subject, VALVE.action, VALVE.resource, parent=parent)
    allowed = verdict == "allowed"
    entry = Entry(
        seq, NOW, prev, Kind.DECISION, allowed, verdict, "valve-only-from-vision", *bundle, request
    )
    log.entries.append(encode_entry(entry))
    fleet.ship(PLC)
    return seq


@dataclass(frozen=True)
class Decided:
    name: str
    parent_from: str
    parent_age_s: int
    logged: str
    holds: bool


DECIDED = [
    Decided("allowed with a fresh parent from a camera", CAMERA, 5, "allowed", True),
    Decided("allowed with a parent from outside the group", OUTSIDER, 5, "allowed", False),
    Decided("allowed with a parent over its max age", CAMERA, 31, "allowed", False),
    Decided("denied with a parent from outside the group", OUTSIDER, 5, "parent_invalid", True),
]


@pytest.mark.parametrize("case", DECIDED, ids=lambda c: c.name)
def test_a_child_is_re_decided_under_its_bundle_with_the_parent_it_recorded(
    fleet: Fleet, case: Decided
) -> None:
    bundle = _recorded_bundle(fleet)
    fleet.logs[case.parent_from].append(time=NOW - case.parent_age_s)
    fleet.ship(case.parent_from)
    seq = _logged(fleet, fleet.cite(case.parent_from, 0), bundle, case.logged)
    with open_registry(fleet.db) as registry:
        walked = walk_ancestry(
            registry,
            PLC,
            seq,
            witnesses=[fleet.witness.public],
            policy_of=policies(registry, fleet.setup.root),
        )
    child = walked.links[0]
    if case.holds:
        assert child.status == LinkStatus.VERIFIED
        assert child.policy.startswith("re-decided under bundle v1")
    else:
        assert walked.failed is child
        assert "not allowed (rule valve-only-from-vision) as logged" in child.detail


def test_a_child_whose_bundle_the_hub_does_not_hold_is_said_so_not_failed(
    chain3: Fleet,
) -> None:
    with open_registry(chain3.db) as registry:
        walked = walk_ancestry(
            registry,
            CAMERA,
            1,
            witnesses=[chain3.witness.public],
            policy_of=policies(registry, chain3.setup.root),
        )
    assert walked.verified
    assert walked.links[0].policy == "not re-decided: the hub holds no bundle v1 it names"


# --- the chain file and edge-verify chain --------------------------------------------------


@pytest.fixture
def exported(chain3: Fleet, tmp_path: Path) -> Path:
    out = tmp_path / "chain.cbor"
    assert chain3.hub("lineage", "ancestry", CAMERA, "1", "--export", str(out)) == 0
    return out


@pytest.fixture
def offline(chain3: Fleet, tmp_path: Path) -> Iterator[Path]:
    """A directory holding only the trust root, as an auditor's."""
    where = tmp_path / "auditor"
    where.mkdir()
    shutil.copy(chain3.setup.keys / ROOT_FILE, where / "root.cbor")
    yield where


def test_the_exported_chain_verifies_offline_with_only_the_root(
    exported: Path, offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(exported, offline / "chain.cbor")
    assert sorted(p.name for p in offline.iterdir()) == ["chain.cbor", "root.cbor"]
    capsys.readouterr()
    code = verify_main(["chain", str(offline / "chain.cbor"), "--root", str(offline / "root.cbor")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "VERIFIED (policy requirement not checked: no bundle given): 3 links" in out
    code = verify_main(
        ["chain", str(offline / "chain.cbor"), "--root", str(offline / "root.cbor"), "--json"]
    )
    document = json.loads(capsys.readouterr().out)
    assert code == 0 and document["ok"]
    assert [(link["device"], link["depth"]) for link in document["links"]] == [
        (CAMERA, 2),
        (PLC, 1),
        (CAMERA, 0),
    ]
    assert [link["age_s"] for link in document["links"]] == [None, 2, 2]


@pytest.mark.parametrize("kind", ["file", "fifo", "symlink", "directory"])
def test_the_export_replaces_nothing_but_a_file_and_that_only_with_force(
    chain3: Fleet, tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "taken"
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    if kind == "file":
        out.write_bytes(b"keep")
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink":
        out.symlink_to(target)
    else:
        out.mkdir()
    assert chain3.hub("lineage", "ancestry", CAMERA, "1", "--export", str(out)) == 2
    assert target.read_bytes() == b"keep"
    if kind == "file":
        assert out.read_bytes() == b"keep"
        assert chain3.hub("lineage", "ancestry", CAMERA, "1", "--export", str(out), "--force") == 0
        assert out.read_bytes()[:1] != b"k"
    else:
        assert chain3.hub("lineage", "ancestry", CAMERA, "1", "--export", str(out), "--force") == 2
        assert not out.is_file() or out.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_chain_not_proven_to_its_root_is_not_exported(fleet: Fleet, tmp_path: Path) -> None:
    fleet.logs[CAMERA].append(time=NOW - 10)
    fleet.logs[PLC].append(VALVE, time=NOW - 8, parent=fleet.cite(CAMERA, 0))
    fleet.ship(PLC)
    out = tmp_path / "chain.cbor"
    assert fleet.hub("lineage", "ancestry", PLC, "0", "--export", str(out)) == 1
    assert not out.exists()


@dataclass(frozen=True)
class Tampered:
    name: str
    change: Callable[[Chain, Fleet], Chain]
    link: int | None
    step: ChainStep


def _links(chain: Chain, *links: bytes) -> Chain:
    return Chain(chain.child, chain.directory, links)


def _flip_in_entry(receipt: bytes) -> bytes:
    at = receipt.index(b"plc.write")
    return receipt[:at] + b"plc.wrote" + receipt[at + len(b"plc.write") :]


def _other_receipt(fleet: Fleet) -> bytes:
    with open_registry(fleet.db) as registry:
        return _receipt(registry, fleet, CAMERA, 2)


def _directory(
    key: PrivateKey,
    *,
    without: str | None = None,
    version: int = 9,
    expires_at: int = NOW + 3600,
    regroup: dict[str, tuple[str, ...]] | None = None,
) -> bytes:
    """A directory of the fleet (all but ``without``, groups replaced as ``regroup`` says)
    signed by ``key``."""
    listed = [
        replace(d, groups=(regroup or {}).get(d.id, d.groups)) for d in devices() if d.id != without
    ]
    payload = directory_payload(
        region="eu-1", version=version, issued_at=NOW, expires_at=expires_at, devices=listed
    )
    return sign_directory(payload, region="eu-1", key=key)


TAMPERED = [
    Tampered(
        "links out of order",
        lambda c, f: _links(c, c.links[0], c.links[2], c.links[1]),
        1,
        ChainStep.PARENT,
    ),
    Tampered(
        "a parent replaced by another decision of its device",
        lambda c, f: _links(c, c.links[0], c.links[1], _other_receipt(f)),
        2,
        ChainStep.PARENT,
    ),
    Tampered(
        "a link's entry altered",
        lambda c, f: _links(c, c.links[0], _flip_in_entry(c.links[1]), c.links[2]),
        1,
        ChainStep.RECEIPT,
    ),
    Tampered("the root link dropped", lambda c, f: _links(c, *c.links[:2]), 1, ChainStep.END),
    Tampered(
        "a directory signed by a key outside the root",
        lambda c, f: Chain(c.child, _directory(PrivateKey.generate()), c.links),
        None,
        ChainStep.DIRECTORY,
    ),
    Tampered(
        "a directory that does not list a link's device",
        lambda c, f: Chain(c.child, _directory(f.witness, without=PLC), c.links),
        1,
        ChainStep.RECEIPT,
    ),
    Tampered(
        "a signed directory of another version than the children recorded",
        lambda c, f: Chain(c.child, _directory(f.witness), c.links),
        1,
        ChainStep.PARENT_FACTS,
    ),
    Tampered(
        "a signed directory of the recorded version regrouping the PLC",
        lambda c, f: Chain(c.child, _directory(f.witness, version=1, regroup={PLC: ()}), c.links),
        1,
        ChainStep.PARENT_FACTS,
    ),
    Tampered(
        "the child's link dropped",
        lambda c, f: _links(c, *c.links[1:]),
        0,
        ChainStep.CHILD,
    ),
]


@pytest.mark.parametrize("case", TAMPERED, ids=lambda c: c.name)
def test_a_tampered_chain_is_refused_naming_the_link_and_the_step(
    chain3: Fleet,
    exported: Path,
    offline: Path,
    case: Tampered,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chain = case.change(decode_chain(exported.read_bytes()), chain3)
    path = offline / "chain.cbor"
    path.write_bytes(encode_chain(chain.child, chain.directory, chain.links))
    with pytest.raises(ChainError) as raised:
        verify_chain(path.read_bytes(), root=chain3.setup.root)
    assert (raised.value.link, raised.value.step) == (case.link, case.step)
    capsys.readouterr()
    code = verify_main(["chain", str(path), "--root", str(offline / "root.cbor"), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1 and not document["ok"]
    assert document["error"]["link"] == case.link and document["error"]["step"] == case.step
    assert verify_main(["chain", str(path), "--root", str(offline / "root.cbor")]) == 1
    where = "chain" if case.link is None else f"link {case.link}"
    assert f"NOT VERIFIED: {where}, step '{case.step}'" in capsys.readouterr().out


def test_a_child_allowed_on_a_denied_parent_is_refused_at_its_parent_facts(
    fleet: Fleet,
) -> None:
    fleet.logs[CAMERA].append(time=NOW - 10, allowed=False)
    fleet.logs[PLC].append(VALVE, time=NOW - 8, parent=fleet.cite(CAMERA, 0))
    fleet.ship(CAMERA)
    fleet.ship(PLC)
    walked = fleet.walk(PLC, 0)
    assert not walked.verified and walked.failed is walked.links[0]
    assert "verdict: recorded as allowed, the parent was denied" in walked.failed.detail
    with open_registry(fleet.db) as registry:
        links = [_receipt(registry, fleet, PLC, 0), _receipt(registry, fleet, CAMERA, 0)]
        directory = registry.directory_version("eu-1", 1)
    assert directory is not None
    data = encode_chain((PLC, 0), directory, links)
    with pytest.raises(ChainError) as raised:
        verify_chain(data, root=fleet.setup.root)
    assert (raised.value.link, raised.value.step) == (1, ChainStep.PARENT_FACTS)
    assert "verdict: recorded as allowed" in str(raised.value)


def test_unreadable_files_are_usage_errors(offline: Path, tmp_path: Path) -> None:
    root = str(offline / "root.cbor")
    assert verify_main(["chain", str(tmp_path / "missing.cbor"), "--root", root]) == 2
    junk = tmp_path / "junk.cbor"
    junk.write_bytes(b"\xa0")
    assert verify_main(["chain", str(junk), "--root", str(junk)]) == 2
    assert verify_main(["chain", str(junk), "--root", root]) == 1


def _receipt(registry: Registry, fleet: Fleet, device: str, seq: int) -> bytes:
    return hub_receipt(
        registry, device, seq, witness=fleet.witness, witnesses=[fleet.witness.public], now=NOW
    )[0]


def _tamper(fleet: Fleet, device: str, seq: int) -> None:
    """Replace the hub's stored entry ``seq`` of ``device`` by one that decodes as that seq
    with the same ``prev``, asking for another resource."""
    entry = decode_entry(fleet.logs[device].entries[seq], seq)
    assert entry.request is not None
    data = encode_entry(replace(entry, request=replace(entry.request, resource="plc://line-b/x")))
    edit_registry(
        fleet.db,
        "UPDATE lineage_entries SET data = ? WHERE device = ? AND seq = ?",
        data,
        device,
        seq,
    )


def test_any_changed_byte_of_a_chain_is_refused_as_a_chain_error_never_a_crash(
    chain3: Fleet, exported: Path
) -> None:
    data = exported.read_bytes()
    root = chain3.setup.root
    verify_chain(data, root=root)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.integers(0, len(data) - 1), st.integers(1, 255))
    def changed(at: int, xor: int) -> None:
        altered = data[:at] + bytes([data[at] ^ xor]) + data[at + 1 :]
        with pytest.raises(ChainError):
            verify_chain(altered, root=root)

    changed()


@pytest.mark.parametrize("case", DECIDED, ids=lambda c: c.name)
def test_edge_verify_chain_re_decides_each_child_under_the_bundle_given(
    fleet: Fleet, case: Decided, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hub does not hold the bundle (so it exports the chain without re-deciding); the
    auditor, given it, re-decides the child with the parent it recorded, as the hub would."""
    bundle = _valve_bundle(fleet)
    fleet.logs[case.parent_from].append(time=NOW - case.parent_age_s)
    fleet.ship(case.parent_from)
    seq = _logged(
        fleet, fleet.cite(case.parent_from, 0), (hashlib.sha256(bundle).digest(), 1), case.logged
    )
    chain, root = tmp_path / "chain.cbor", tmp_path / "root.cbor"
    assert fleet.hub("lineage", "ancestry", PLC, str(seq), "--export", str(chain)) == 0
    shutil.copy(fleet.setup.keys / ROOT_FILE, root)
    (tmp_path / "bundle.cbor").write_bytes(bundle)
    args = ["chain", str(chain), "--root", str(root), "--bundle", str(tmp_path / "bundle.cbor")]
    capsys.readouterr()
    code = verify_main(args)
    out = capsys.readouterr().out
    if case.holds:
        assert code == 0, out
        assert "re-decided under bundle v1" in out
        assert "every policy requirement re-decided as logged" in out
        document = json.loads(_run_json(args, capsys))
        assert document["links"][0]["policy_checked"] is True
        assert document["skipped"] == []
    else:
        assert code == 1, out
        assert "NOT VERIFIED: link 0, step 'policy' failed" in out
        assert "not allowed (rule valve-only-from-vision) as logged" in out


def test_edge_verify_chain_without_the_bundle_says_the_policy_was_not_checked(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _valve_bundle(fleet)
    fleet.logs[OUTSIDER].append(time=NOW - 5)
    fleet.ship(OUTSIDER)
    seq = _logged(fleet, fleet.cite(OUTSIDER, 0), (hashlib.sha256(bundle).digest(), 1), "allowed")
    chain, root = tmp_path / "chain.cbor", tmp_path / "root.cbor"
    assert fleet.hub("lineage", "ancestry", PLC, str(seq), "--export", str(chain)) == 0
    shutil.copy(fleet.setup.keys / ROOT_FILE, root)
    args = ["chain", str(chain), "--root", str(root)]
    capsys.readouterr()
    assert verify_main(args) == 0
    out = capsys.readouterr().out
    assert "VERIFIED (policy requirement not checked: no bundle given): 2 links" in out
    document = json.loads(_run_json(args, capsys))
    assert document["skipped"] == [
        {"step": "policy", "detail": "policy requirement not checked: no bundle given"}
    ]
    assert document["links"][0]["policy_checked"] is False


def _run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    verify_main([*args, "--json"])
    return capsys.readouterr().out


# --- a child device that lied about its parent ---------------------------------------------


@dataclass(frozen=True)
class Lie:
    name: str
    parent_from: str
    parent_time: int
    parent_request: Request | None
    lie: Callable[[ParentFacts], ParentFacts]
    says: str


LIES = [
    Lie(
        "an outsider's decision recorded as group cameras",
        OUTSIDER,
        NOW - 5,
        None,
        lambda f: replace(f, groups=("cameras",)),
        "groups: recorded [cameras], the parent's is []",
    ),
    Lie(
        "a parent a day old recorded as 5 s old",
        CAMERA,
        NOW - DAY,
        None,
        lambda f: replace(f, time=NOW - 5),
        f"time: recorded {NOW - 5}, the parent's is {NOW - DAY}",
    ),
    Lie(
        "model.train recorded as model.invoke",
        CAMERA,
        NOW - 5,
        Request("svc:vision", "model.train", "model://vision/v3"),
        lambda f: replace(f, action="model.invoke"),
        "action: recorded 'model.invoke', the parent's is 'model.train'",
    ),
    Lie(
        "an audio model recorded as a vision one",
        CAMERA,
        NOW - 5,
        Request("svc:vision", "model.invoke", "model://audio/x"),
        lambda f: replace(f, resource="model://vision/v3"),
        "resource: recorded 'model://vision/v3', the parent's is 'model://audio/x'",
    ),
]


def _lying_child(fleet: Fleet, case: Lie) -> int:
    """The PLC logs an allow citing ``case``'s parent with the facts it lies about; its seq."""
    log = fleet.logs[case.parent_from]
    if case.parent_request is None:
        log.append(time=case.parent_time)
    else:
        log.append(case.parent_request, time=case.parent_time)
    fleet.ship(case.parent_from)
    honest = fleet.cite(case.parent_from, len(log.entries) - 1)
    assert honest.facts is not None
    lying = replace(honest, facts=case.lie(honest.facts))
    return _logged(fleet, lying, _recorded_bundle(fleet), "allowed")


@pytest.mark.parametrize("case", LIES, ids=lambda c: c.name)
def test_a_child_that_lied_about_its_parent_fails_the_walk_at_its_parent_facts(
    fleet: Fleet, case: Lie, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = _lying_child(fleet, case)
    with open_registry(fleet.db) as registry:
        walked = walk_ancestry(
            registry,
            PLC,
            seq,
            witnesses=[fleet.witness.public],
            policy_of=policies(registry, fleet.setup.root),
        )
    assert not walked.verified and walked.failed is walked.links[0]
    assert walked.failed.detail.startswith("parent facts: ")
    assert case.says in walked.failed.detail
    assert walked.failed.policy == ""
    assert fleet.hub("lineage", "ancestry", PLC, str(seq), "--export", "unused.cbor") == 1


@pytest.mark.parametrize("case", LIES, ids=lambda c: c.name)
def test_edge_verify_chain_refuses_a_child_that_lied_about_its_parent(
    fleet: Fleet, case: Lie
) -> None:
    seq = _lying_child(fleet, case)
    with open_registry(fleet.db) as registry:
        parent = fleet.logs[case.parent_from]
        links = [
            _receipt(registry, fleet, PLC, seq),
            _receipt(registry, fleet, case.parent_from, len(parent.entries) - 1),
        ]
        directory = registry.directory_version("eu-1", 1)
    assert directory is not None
    with pytest.raises(ChainError) as raised:
        verify_chain(encode_chain((PLC, seq), directory, links), root=fleet.setup.root)
    assert (raised.value.link, raised.value.step) == (1, ChainStep.PARENT_FACTS)
    assert case.says in str(raised.value)


def test_edge_verify_chain_names_the_decision_it_proves_and_refuses_another_asked_for(
    exported: Path, offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(offline / "root.cbor")
    capsys.readouterr()
    assert verify_main(["chain", str(exported), "--root", root]) == 0
    out = capsys.readouterr().out
    assert f"the ancestry of {CAMERA} seq 1 (give --child DEVICE:SEQ" in out
    assert verify_main(["chain", str(exported), "--root", root, "--child", f"{CAMERA}:1"]) == 0
    assert f"the ancestry of {CAMERA} seq 1 (the decision asked for" in capsys.readouterr().out
    assert verify_main(["chain", str(exported), "--root", root, "--child", f"{PLC}:0"]) == 1
    assert f"the chain proves the ancestry of {CAMERA} seq 1, not of {PLC} seq 0" in (
        capsys.readouterr().out
    )
    cut = decode_chain(exported.read_bytes())
    renamed = offline / "renamed.cbor"
    renamed.write_bytes(encode_chain((PLC, 0), cut.directory, cut.links[1:]))
    assert verify_main(["chain", str(renamed), "--root", root]) == 0
    assert f"the ancestry of {PLC} seq 0" in capsys.readouterr().out
    assert verify_main(["chain", str(renamed), "--root", root, "--child", f"{CAMERA}:1"]) == 1
    assert verify_main(["chain", str(exported), "--root", root, "--child", "nocolon"]) == 2
