"""The TPM 2.0 provider against a real software TPM (swtpm), and without one.

Each swtpm test starts its own ``swtpm socket --tpm2`` on 127.0.0.1 free ports with its
state in the test's temporary directory, and kills it by PID (:mod:`tests.swtpm_support`);
they skip, saying why, only when swtpm or tpm2-pytss is not installed. The PCRs measured are
0, 7 and 16 (16 is the debug PCR: the tests extend it to play a changed boot component).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.attest.config import AttestationConfig, open_attestor
from edge_agent.attest.measure import FileFactProvider
from edge_agent.attest.tpm import TpmProvider, TpmUnavailable, enroll
from edge_agent.cli import main as agent_main
from edge_agent.errors import ConfigError
from edge_agent.policy.source import load_policy_source
from edge_agent.protocol.attestation import (
    AttestationError,
    Evidence,
    LineageHead,
    Verdict,
    sign_evidence,
)
from edge_agent.protocol.bundle import DeviceIdentity
from edge_agent.protocol.firmware_profile import Profile, parse_profile
from edge_agent.protocol.keys import PrivateKey
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from edge_agent.protocol.request import Request
from edge_agent.protocol.roles import Role
from edge_agent.sync.daemon import AgentDaemon
from edge_agent.trust.gate import Reason
from hub.cli.attest import build_expectations
from hub.cli.main import main as hub_main
from hub.cli.operations import build_bundle
from hub.core.attestation_judging import read_evidence
from hub.core.bundles import with_expectations
from hub.core.tpm_quote import load_ak
from hub.hubdir.keys import ROOT_FILE, load_role_keys, load_root
from hub.registry import DeviceRecord, PublishedBundle
from hub.registry.backends import open_registry
from hub.service.config import HubConfig
from hub.service.server import HubService
from hub.service.verifier import Verifier
from tests.agent_fleet import FAST_SYNC, stop_daemon
from tests.attest_support import PROFILE_TOML, make_root
from tests.brokers import amqtt_broker
from tests.factory import NOW, HubSim
from tests.hub_support import POLICY, hub_registry, make_hub_dir, run_cli, wait_for
from tests.swtpm_support import extend_pcr, require_tpm2_pytss, running_swtpm

DEVICE = DeviceIdentity("gw-001", "eu-1", ("line-a",), "generic-x86_64")
PCRS = "[0, 7, 16]"
REQUEST = Request("svc:camera", "exec", "/opt/camera/bin/capture")
INTERVAL = 1
WAIT_S = 30.0
SLACK_S = 2.0
"""Scheduling slack on top of one interval: a loaded CI machine, the thread hop to measure."""


def tpm_profile(tcti: str, interval: int = INTERVAL, **tpm: str) -> str:
    """The test profile's TOML with a ``[tpm]`` table on ``tcti``."""
    extra = "".join(f"{key} = {value}\n" for key, value in tpm.items())
    return PROFILE_TOML.format(name="generic-x86_64", interval=interval) + (
        f'\n[tpm]\npcrs = {PCRS}\ntcti = "{tcti}"\n{extra}'
    )


def _parse(text: str) -> Profile:
    return parse_profile(text.encode(), "test")


def _der(pem: bytes) -> bytes:
    return load_ak(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[str]:
    with running_swtpm(tmp_path / "swtpm") as tcti:
        yield tcti


def _config(tmp_path: Path, text: str) -> AttestationConfig:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    root = make_root(tmp_path / "device-root")
    return AttestationConfig(profile_file=str(path), measure_root=str(root))


# --- without a TPM ------------------------------------------------------------------------


def test_without_tpm2_pytss_a_tpm_profile_stops_the_agent_and_the_default_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tpm2_pytss", None)
    asking = _config(tmp_path, tpm_profile("device:/dev/tpmrm0"))
    with pytest.raises(TpmUnavailable, match=r"tpm2-pytss cannot be loaded.*edgegov\[tpm\]"):
        open_attestor(asking, DEVICE, machine="x86_64")

    plain = _config(tmp_path, PROFILE_TOML.format(name="generic-x86_64", interval=1))
    attestor = open_attestor(plain, DEVICE, machine="x86_64")
    assert attestor is not None and isinstance(attestor.provider, FileFactProvider)
    assert attestor.quote("gw-001", b"n" * 32) is None
    default = FileFactProvider(attestor.profile, Path(plain.measure_root)).measure()
    assert attestor.measure() == default == attestor.first
    assert not any(name.startswith("pcr:") for name in default.digests)


def test_a_tpm_profile_with_no_tpm_there_stops_the_agent_naming_where_it_looked(
    tmp_path: Path,
) -> None:
    require_tpm2_pytss()
    nowhere = "swtpm:host=127.0.0.1,port=9"
    with pytest.raises(ConfigError, match=f"TPM at {nowhere}"):
        open_attestor(_config(tmp_path, tpm_profile(nowhere)), DEVICE, machine="x86_64")


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("pcrs = [24]", "PCR indexes are 0 to 23"),
        ("pcrs = [1, 1]", "listed twice"),
        ("pcrs = []", "at least 1"),
        ('pcrs = [0]\ntcti = "/dev/tpm0"', "NAME:CONFIG"),
        ('pcrs = [0]\ntcti = "device:/dev/tpm0;rm -rf"', "NAME:CONFIG"),
        ("pcrs = [0]\nak_handle = 0x80000001", "greater than or equal"),
        ('pcrs = [0]\nbank = "sha1"', "sha256"),
        ("pcrs = [0]\nlocality = 3", "tpm.locality"),
    ],
)
def test_a_malformed_tpm_table_is_refused_naming_the_field(table: str, words: str) -> None:
    text = PROFILE_TOML.format(name="generic-x86_64", interval=1) + f"\n[tpm]\n{table}\n"
    with pytest.raises(ConfigError, match="tpm") as caught:
        _parse(text)
    assert words in caught.value.message


PROFILES = Path(__file__).resolve().parent.parent / "firmware_profiles"


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.stem)
def test_each_shipped_profiles_commented_tpm_table_is_valid_once_uncommented(path: Path) -> None:
    text = path.read_text()
    start = text.index("\n# [tpm]\n")
    table = [
        line.removeprefix("# ")
        for line in text[start:].splitlines()
        if line.startswith("# ") and not line.startswith("# # ")
    ]
    profile = _parse(text[:start] + "\n" + "\n".join(table) + "\n")
    assert profile.tpm is not None and profile.tpm.tcti == "device:/dev/tpmrm0"
    assert _parse(text).tpm is None


def test_pcrs_count_against_the_measurement_limit() -> None:
    many = "".join(f'[[measure]]\nname = "f{i}"\nfile = "/f{i}"\n' for i in range(60))
    text = (
        'name = "p"\narchitecture = "x86_64"\nreattest_interval_s = 1\n'
        f"heartbeat_interval_s = 1\n{many}[tpm]\npcrs = [0, 1, 2, 3, 4]\n"
    )
    with pytest.raises(ConfigError, match="exceed 64 measurements"):
        _parse(text)


# --- against swtpm ------------------------------------------------------------------------


def test_enroll_creates_the_ak_once_and_the_agent_refuses_to_start_without_it(
    tmp_path: Path, tpm: str
) -> None:
    config = _config(tmp_path, tpm_profile(tpm))
    with pytest.raises(TpmUnavailable, match="edge-agent attest tpm-enroll"):
        open_attestor(config, DEVICE, machine="x86_64")
    profile = _parse(tpm_profile(tpm))
    assert profile.tpm is not None
    pem = enroll(profile.tpm)
    assert enroll(profile.tpm) == pem and pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    attestor = open_attestor(config, DEVICE, machine="x86_64")
    assert attestor is not None and isinstance(attestor.provider, TpmProvider)
    pcrs = {n: d for n, d in attestor.first.digests.items() if n.startswith("pcr:")}
    assert set(pcrs) == {"pcr:sha256:0", "pcr:sha256:7", "pcr:sha256:16"}
    assert attestor.first.errors == ()


class HubSide:
    """A registry with the device, its AK, and a bundle expecting ``measured``."""

    def __init__(self, tmp_path: Path, measured: dict[str, bytes], ak: bytes | None) -> None:
        self.hub = HubSim()
        self.registry = open_registry(hub_registry(tmp_path))
        self.key = PrivateKey.generate()
        self.device = DeviceRecord("gw-001", "eu-1", ("line-a",), "generic-x86_64", self.key.public)
        self.registry.add_device(self.device)
        if ak is not None:
            self.registry.set_tpm_ak("gw-001", ak, NOW)
        expect = {
            "profiles": {"generic-x86_64": {"measurements": {n: [d] for n, d in measured.items()}}}
        }
        data = self.hub.bundle(1, attestation=expect)
        self.bundle = hashlib.sha256(data).digest()
        self.registry.record_bundle(
            bundle=PublishedBundle(
                "eu-1", "group/line-a", 1, self.bundle, data, NOW + 86400, None, NOW
            ),
            issued_at=NOW,
            target={},
            channels=["group/line-a"],
        )
        root = self.hub.root()
        self.verifier = Verifier(
            self.registry, self.hub.online_keys[Role.VERIFIER][0], root=lambda: root
        )

    def answer(
        self, provider: TpmProvider, *, quote_nonce: bytes | None = None
    ) -> tuple[Verdict, str]:
        """Challenge, measure, quote (for ``quote_nonce`` if given), send, verify."""
        challenge = self.verifier.challenge(self.device, now=NOW).challenge
        measured = provider.measure()
        quote = provider.quote("gw-001", quote_nonce or challenge.nonce)
        evidence = Evidence(
            "gw-001",
            challenge.nonce,
            NOW,
            self.bundle,
            measured.digests,
            LineageHead(0, b"\0" * 32),
            quote,
        )
        verified = read_evidence(sign_evidence(evidence, self.key), self.device)
        result = self.verifier.verify(self.device, verified, now=NOW, ttl_s=300).result
        return result.verdict, result.detail


def test_a_swtpm_quote_verifies_at_the_hub_and_a_quote_for_another_nonce_does_not(
    tmp_path: Path, tpm: str
) -> None:
    profile = _parse(tpm_profile(tpm))
    assert profile.tpm is not None
    ak = _der(enroll(profile.tpm))
    provider = TpmProvider(profile, make_root(tmp_path / "root"))
    side = HubSide(tmp_path, provider.measure().digests, ak)
    with side.registry:
        verdict, detail = side.answer(provider)
        assert verdict is Verdict.PASS and "TPM quote verified" in detail
        verdict, detail = side.answer(provider, quote_nonce=os.urandom(32))
        assert verdict is Verdict.FAIL and "not made for this challenge" in detail


def test_an_extended_pcr_fails_locally_and_at_the_hub(tmp_path: Path, tpm: str) -> None:
    profile = _parse(tpm_profile(tpm))
    assert profile.tpm is not None
    ak = _der(enroll(profile.tpm))
    provider = TpmProvider(profile, make_root(tmp_path / "root"))
    before = provider.measure()
    side = HubSide(tmp_path, before.digests, ak)
    with side.registry:
        extend_pcr(tpm, 16, b"an unexpected boot component")
        after = provider.measure()
        assert after.digests["pcr:sha256:16"] != before.digests["pcr:sha256:16"]
        verdict, detail = side.answer(provider)
        assert verdict is Verdict.FAIL and "pcr:sha256:16" in detail


def test_a_quote_by_another_tpms_key_or_with_no_key_registered_is_refused(
    tmp_path: Path, tpm: str
) -> None:
    profile = _parse(tpm_profile(tpm))
    assert profile.tpm is not None
    enroll(profile.tpm)
    with running_swtpm(tmp_path / "other-swtpm") as other_tcti:
        other = _parse(tpm_profile(other_tcti))
        assert other.tpm is not None
        registered = _der(enroll(other.tpm))
    provider = TpmProvider(profile, make_root(tmp_path / "root"))
    side = HubSide(tmp_path, provider.measure().digests, registered)
    with side.registry:
        verdict, detail = side.answer(provider)
        assert verdict is Verdict.FAIL and "does not verify under the registered" in detail
        side.registry.set_tpm_ak("gw-001", None, NOW)
        verdict, detail = side.answer(provider)
        assert verdict is Verdict.FAIL and "no attestation key is registered" in detail


def test_a_tpm_gone_after_start_fails_the_measurement_and_the_quote(tmp_path: Path) -> None:
    with running_swtpm(tmp_path / "swtpm") as tcti:
        profile = _parse(tpm_profile(tcti))
        assert profile.tpm is not None
        enroll(profile.tpm)
        provider = TpmProvider(profile, make_root(tmp_path / "root"))
        assert provider.measure().errors == ()
    measured = provider.measure()
    assert len(measured.errors) == 3 and all("pcr:sha256:" in e for e in measured.errors)
    with pytest.raises(AttestationError, match="the TPM cannot quote"):
        provider.quote("gw-001", b"n" * 32)


def test_tpm_enroll_report_and_expectations_from_the_command_line(
    tmp_path: Path, tpm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, state = tmp_path / "keys", tmp_path / "state"
    profile_file = tmp_path / "generic-x86_64.toml"
    profile_file.write_text(tpm_profile(tpm, interval=60))
    root = make_root(tmp_path / "root")
    assert hub_main(["keys", "init", "--out", str(keys)]) == 0
    init = ["init", "--device-id", "gw-001", "--root", str(keys / "root.cbor")]
    more = ["--region", "eu-1", "--group", "line-a", "--profile", "generic-x86_64"]
    assert agent_main([*init, *more, "--state-dir", str(state)]) == 0
    capsys.readouterr()

    enroll_args = ["attest", "tpm-enroll", "--profile-file", str(profile_file)]
    assert agent_main([*enroll_args, "--state-dir", str(state)]) == 0
    assert "edge-hub attest tpm-ak gw-001 tpm-ak.pem" in capsys.readouterr().out
    pem = (state / "tpm-ak.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")

    attest = ["attest", "--profile-file", str(profile_file), "--measure-root", str(root)]
    assert agent_main([*attest, "--json", "--state-dir", str(state)]) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = {m["name"]: m["kind"] for m in report["measurements"]}
    assert kinds["pcr:sha256:16"] == "pcr" and kinds["os-release"] == "file"
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(report))
    expect = ["attest", "expect", "--profile", str(profile_file)]
    assert hub_main([*expect, "--from-device-report", str(report_file)]) == 0
    expected = json.loads(capsys.readouterr().out)["profiles"]["generic-x86_64"]
    assert {"pcr:sha256:0", "pcr:sha256:7", "pcr:sha256:16"} <= set(expected["measurements"])

    hub = make_hub_dir(tmp_path / "hub")
    register = ["attest", "tpm-ak", "gw-001", str(state / "tpm-ak.pem")]
    assert hub_main([*register, "--hub-dir", str(hub.path)]) == 0
    assert "registered" in capsys.readouterr().out
    with open_registry(hub.registry) as registry:
        assert registry.tpm_ak("gw-001") == _der(pem)
    assert (
        hub_main(
            ["attest", "tpm-ak", "gw-404", str(state / "tpm-ak.pem"), "--hub-dir", str(hub.path)]
        )
        == 2
    )
    assert "not registered" in capsys.readouterr().err
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n")
    assert (
        hub_main(
            ["attest", "tpm-ak", "gw-001", str(tmp_path / "junk.pem"), "--hub-dir", str(hub.path)]
        )
        == 2
    )
    assert hub_main(["attest", "tpm-ak", "gw-001", "--remove", "--hub-dir", str(hub.path)]) == 0
    with open_registry(hub.registry) as registry:
        assert registry.tpm_ak("gw-001") is None


# --- the whole fabric ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_running_agent_answers_with_a_quote_and_an_extended_pcr_denies(
    tmp_path: Path, tpm: str
) -> None:
    setup = make_hub_dir(tmp_path / "hub", devices=())
    state_dir = tmp_path / "gw-001"
    public = init_state_dir(state_dir, DEVICE, setup.root.raw, int(time.time()))
    profile = _parse(tpm_profile(tpm))
    assert profile.tpm is not None
    with open_registry(setup.registry) as registry:
        registry.add_device(DeviceRecord("gw-001", "eu-1", ("line-a",), "generic-x86_64", public))
        registry.set_tpm_ak("gw-001", _der(enroll(profile.tpm)), int(time.time()))
    config = _config(tmp_path, tpm_profile(tpm))
    attestor = open_attestor(config, DEVICE, machine="x86_64")
    assert attestor is not None

    keys = setup.keys
    root = load_root(keys / ROOT_FILE)
    signers = load_role_keys(keys, Role.POLICY, root)
    source = load_policy_source(POLICY.format(group="line-a", extra=""))
    now = int(time.time())
    _, bundle = build_bundle(source, root=root, signers=signers, version=1, ttl=None, now=now)
    expectations = build_expectations(attestor.profile, [("gw-001", attestor.first.digests)])
    data, _ = with_expectations(bundle, source.policy, expectations, root=root, signers=signers)
    (tmp_path / "bundle.cbor").write_bytes(data)
    assert (
        await run_cli("bundle", "push", str(tmp_path / "bundle.cbor"), "--hub-dir", str(setup.path))
        == 0
    )

    async with amqtt_broker() as broker:
        agent = LocalAgent.open(state_dir)
        daemon = AgentDaemon(agent, broker.settings, FAST_SYNC, attestor=attestor)
        hub_config = HubConfig(
            setup.path,
            registry=setup.url,
            broker=broker.settings,
            freshness_interval_s=0.3,
            token_ttl_s=5,
            attest_interval_s=INTERVAL,
            attest_ttl_s=3,
            attest_retry_s=0.5,
        )
        task = asyncio.create_task(daemon.run(), name="gw-001")
        try:
            async with HubService(hub_config) as hub:
                await hub.wait_ready()

                def reason() -> Reason:
                    return daemon.agent.decide(REQUEST, int(time.time())).reason

                await wait_for(lambda: reason() is Reason.ALLOWED, WAIT_S)
                passed = hub.registry.attestation("gw-001")
                assert passed is not None and "TPM quote verified" in passed.detail

                await asyncio.to_thread(extend_pcr, tpm, 16, b"an unexpected boot component")
                await wait_for(lambda: reason() is Reason.ATTESTATION_FAILED, INTERVAL + SLACK_S)
                lineage = daemon.agent.lineage
                assert lineage is not None and lineage.store is not None
                kinds = [decode_entry(d).kind for _, d, _ in lineage.store.iter_rows()]
                assert Kind.ATTESTATION_FAILED in kinds
                await wait_for(
                    lambda: (
                        (record := hub.registry.attestation("gw-001")) is not None
                        and record.verdict == "fail"
                        and "pcr:sha256:16" in record.detail
                    ),
                    WAIT_S,
                )
        finally:
            await stop_daemon(daemon, task)
