"""The lineage log: durable decisions, tamper and fork detection, fail closed, replay, crash."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.cli import main as agent_main
from edge_agent.errors import LineageError
from edge_agent.lineage.decisions import decision_entry
from edge_agent.lineage.log import LineageConfig, LineageLog
from edge_agent.lineage.store import LINEAGE_DB, WouldWait
from edge_agent.protocol.lineage_entries import Draft, draft_of
from edge_agent.protocol.request import Request
from edge_agent.trust.gate import Reason, decide
from hub.cli.main import main as hub_main
from tests.factory import DEVICE, NOW, HubSim

ALLOWED = Request("svc:camera", "exec", "/opt/camera/bin/capture")
DENIED = Request("svc:x", "exec", "/bin/sh")


@pytest.fixture
def sim() -> HubSim:
    return HubSim()


@pytest.fixture
def state(tmp_path: Path, sim: HubSim) -> Path:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    with LocalAgent.open(state_dir) as agent:
        agent.install_bundle(sim.bundle(1), NOW)
        for i in range(40):
            agent.decide(ALLOWED if i % 3 else DENIED, NOW + i)
    return state_dir


def _verify(state_dir: Path) -> LineageError | None:
    """What ``log verify`` finds (opened as a reader: nothing is recorded or moved)."""
    with LocalAgent.open(state_dir, record_lineage_breaks=False) as agent:
        assert agent.lineage is not None
        try:
            agent.lineage.verify()
        except LineageError as exc:
            return exc
    return None


def _sql(state_dir: Path, statement: str, *params: object) -> None:
    db = sqlite3.connect(state_dir / LINEAGE_DB)
    db.execute(statement, params)
    db.commit()
    db.close()


def test_an_untouched_log_verifies_and_every_decision_is_an_entry(state: Path) -> None:
    assert _verify(state) is None
    db = sqlite3.connect(state / LINEAGE_DB)
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 41


@pytest.mark.parametrize(
    ("tamper", "bad_seq"),
    [
        ("UPDATE entries SET data = data || x'00' WHERE seq = 17", 17),
        ("DELETE FROM entries WHERE seq = 12", 12),
        ("UPDATE entries SET reason = 'policy_denied' WHERE seq = 3", 3),
        (
            "INSERT INTO entries SELECT 41, time, kind, allowed, reason, subject, action, data, "
            "nodes "
            "FROM entries WHERE seq = 40",
            41,
        ),
    ],
    ids=["edit", "delete", "edit-column", "insert"],
)
def test_log_verify_names_the_first_tampered_entry(state: Path, tamper: str, bad_seq: int) -> None:
    _sql(state, tamper)
    error = _verify(state)
    assert error is not None and error.seq == bad_seq


def test_reordered_rows_are_detected_at_the_first_swapped_seq(state: Path) -> None:
    db = sqlite3.connect(state / LINEAGE_DB)
    a = db.execute("SELECT data FROM entries WHERE seq = 5").fetchone()[0]
    b = db.execute("SELECT data FROM entries WHERE seq = 6").fetchone()[0]
    db.execute("UPDATE entries SET data = ? WHERE seq = 5", (b,))
    db.execute("UPDATE entries SET data = ? WHERE seq = 6", (a,))
    db.commit()
    db.close()
    error = _verify(state)
    assert error is not None and error.seq == 5


def test_truncated_log_is_detected(state: Path) -> None:
    _sql(state, "DELETE FROM entries WHERE seq >= 30")
    error = _verify(state)
    assert error is not None and error.seq == 30


def test_a_break_at_startup_denies_until_acknowledged(state: Path) -> None:
    _sql(state, "UPDATE entries SET data = data || x'00' WHERE seq = 40")
    with LocalAgent.open(state) as agent:
        decision = agent.decide(ALLOWED, NOW + 100)
        assert decision.reason is Reason.LINEAGE_UNAVAILABLE
    assert agent_main(["log", "acknowledge-break", "--state-dir", str(state)]) == 0
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 101).allowed
        assert agent.lineage is not None
        agent.lineage.verify()


def test_forged_checkpoint_signature_is_detected(state: Path) -> None:
    db = sqlite3.connect(state / LINEAGE_DB)
    size, note = db.execute("SELECT size, note FROM checkpoints ORDER BY size LIMIT 1").fetchone()
    text, sig = note.rsplit(" ", 1)
    forged = text + " " + sig[:-6] + ("AAAAA=" if not sig.endswith("AAAAA=") else "BBBBB=")
    db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (forged, size))
    db.commit()
    db.close()
    error = _verify(state)
    assert error is not None and error.seq == size


def _export(state_dir: Path, out: Path) -> None:
    assert agent_main(["log", "export", "--state-dir", str(state_dir), "--out", str(out)]) == 0


def test_hub_detects_a_fork_from_a_state_dir_restored_from_an_old_copy(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(state, copy)
    for directory, request in ((state, ALLOWED), (copy, DENIED)):
        with LocalAgent.open(directory) as agent:
            for i in range(5):
                agent.decide(request, NOW + 500 + i)
    _export(state, tmp_path / "a.cbor")
    _export(copy, tmp_path / "b.cbor")
    assert agent_main(["pubkey", "--state-dir", str(state)]) == 0
    (tmp_path / "pub.pem").write_text(capsys.readouterr().out)
    base = [
        "lineage",
        "verify",
        str(tmp_path / "a.cbor"),
        "--device-key",
        str(tmp_path / "pub.pem"),
    ]
    assert hub_main(base) == 0
    assert hub_main([*base, "--checkpoint", str(tmp_path / "b.cbor")]) == 1
    assert "FORK" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content", [os.urandom(300), b"", b"\x58\xff" + b"x" * 10], ids=["random", "empty", "truncated"]
)
def test_hub_verify_refuses_garbage_without_a_traceback(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "pub.pem"
    from edge_agent.protocol.keys import PrivateKey

    key.write_text(PrivateKey.generate().public.to_pem())
    (tmp_path / "x").write_bytes(content)
    assert hub_main(["lineage", "verify", str(tmp_path / "x"), "--device-key", str(key)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


def test_hub_verify_refuses_a_foreign_devices_export(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.protocol.keys import PrivateKey

    _export(state, tmp_path / "a.cbor")
    key = tmp_path / "other.pem"
    key.write_text(PrivateKey.generate().public.to_pem())
    assert hub_main(["lineage", "verify", str(tmp_path / "a.cbor"), "--device-key", str(key)]) == 1
    assert "signature" in capsys.readouterr().err


def test_full_disk_denies_lineage_unavailable_and_recovers(state: Path) -> None:
    with LocalAgent.open(state) as agent:
        assert agent.lineage is not None and agent.lineage.store is not None
        store = agent.lineage.store
        pages = sqlite3.connect(state / LINEAGE_DB).execute("PRAGMA page_count").fetchone()[0]
        store.set_page_limit(pages)
        big = Request("svc:camera", "exec", "/opt/camera/bin/" + "x" * 3000)
        for i in range(30):
            if agent.decide(big, NOW + 200 + i).reason is Reason.LINEAGE_UNAVAILABLE:
                break
        else:
            pytest.fail("a full database never denied")
        assert agent.lineage.status() is not None
        agent.lineage.store.set_page_limit(1_000_000)
        assert agent.decide(ALLOWED, NOW + 300).allowed
        assert agent.lineage.status() is None
    assert _verify(state) is None


def test_read_only_database_denies_lineage_unavailable_and_recovers(state: Path) -> None:
    path = state / LINEAGE_DB
    path.chmod(0o444)
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW + 200).reason is Reason.LINEAGE_UNAVAILABLE
        path.chmod(0o600)
        assert agent.decide(ALLOWED, NOW + 201).allowed


def test_a_lock_held_past_the_bound_denies(state: Path) -> None:
    blocker = sqlite3.connect(state / LINEAGE_DB, isolation_level=None)
    with LocalAgent.open(state, LineageConfig(busy_timeout_s=0.1)) as agent:
        blocker.execute("BEGIN IMMEDIATE")
        assert agent.decide(ALLOWED, NOW + 200).reason is Reason.LINEAGE_UNAVAILABLE
        blocker.execute("ROLLBACK")
        assert agent.decide(ALLOWED, NOW + 201).allowed
    blocker.close()


def _draft(agent: LocalAgent, wall: int) -> Draft:
    return draft_of(decision_entry(decide(agent.state, ALLOWED, wall)))


def test_a_write_asked_not_to_wait_refuses_another_connections_lock_and_writes_nothing(
    state: Path,
) -> None:
    blocker = sqlite3.connect(state / LINEAGE_DB, isolation_level=None, check_same_thread=False)
    with LocalAgent.open(state, LineageConfig(busy_timeout_s=5.0)) as agent:
        assert agent.lineage is not None and agent.lineage.store is not None
        store, draft = agent.lineage.store, _draft(agent, NOW + 200)
        size = store.tip().size
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(WouldWait):
            store.append_batch([draft], wait=False)
        release = threading.Timer(0.2, blocker.execute, ["ROLLBACK"])
        release.start()
        # The refusal left the configured busy timeout: this write waits for the release.
        assert store.append_batch([draft]).first_seq == size
        release.join()
        assert store.tip().size == size + 1
    blocker.close()
    assert _verify(state) is None


def test_a_write_asked_not_to_wait_refuses_while_another_thread_uses_the_store(
    state: Path,
) -> None:
    with LocalAgent.open(state) as agent:
        assert agent.lineage is not None and agent.lineage.store is not None
        store, draft = agent.lineage.store, _draft(agent, NOW + 200)
        size = store.tip().size
        holding, done = threading.Event(), threading.Event()

        def hold() -> None:  # as a thread reading entries to ship holds it
            with store._lock:
                holding.set()
                done.wait(5)

        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait(5)
        try:
            with pytest.raises(WouldWait):
                store.append_batch([draft], wait=False)
        finally:
            done.set()
            holder.join()
        assert store.append_batch([draft], wait=False).first_seq == size


def test_a_coroutine_waits_for_another_writers_lock_off_the_event_loop(state: Path) -> None:
    blocker = sqlite3.connect(state / LINEAGE_DB, isolation_level=None)
    with LocalAgent.open(state, LineageConfig(busy_timeout_s=5.0)) as agent:
        lineage = agent.lineage
        assert lineage is not None

        async def while_locked() -> tuple[bool, int | None]:
            blocker.execute("BEGIN IMMEDIATE")
            recording = asyncio.ensure_future(
                lineage.record_decision_async(decide(agent.state, ALLOWED, NOW + 200))
            )
            # Only a loop that is not sleeping on the lock gets here to release it.
            await asyncio.sleep(0.2)
            waited = not recording.done()
            blocker.execute("ROLLBACK")
            _, seq = await recording
            return waited, seq

        waited, seq = asyncio.run(while_locked())
    blocker.close()
    assert waited and seq == 41
    assert _verify(state) is None


def test_replay_across_two_bundles_has_no_divergence_and_a_swapped_bundle_diverges(
    tmp_path: Path, sim: HubSim, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    init_state_dir(state_dir, DEVICE, sim.root_bytes(), NOW)
    rng = random.Random(7)
    requests = [
        ALLOWED,
        DENIED,
        Request("svc:thermo", "read", "/data/x", (("zone", "plant-a"),)),
        Request("svc:thermo", "read", "/data/x"),
    ]
    with LocalAgent.open(state_dir) as agent:
        for version in (1, 2):
            agent.install_bundle(sim.bundle(version), NOW + version)
            for i in range(1500):
                agent.decide(rng.choice(requests), NOW + 10 + i)
    assert agent_main(["log", "replay", "--state-dir", str(state_dir)]) == 0
    assert "0 divergent" in capsys.readouterr().out
    db = sqlite3.connect(state_dir / "state.db")
    digests = [r[0] for r in db.execute("SELECT digest FROM bundles ORDER BY version")]
    db.execute("UPDATE bundles SET data = ? WHERE digest = ?", (sim.bundle(3), digests[0]))
    db.commit()
    db.close()
    assert agent_main(["log", "replay", "--state-dir", str(state_dir)]) == 1
    assert "1500 divergent" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments",
    [["--since", "yesterday"], ["--until", "2h5"], ["--reason", "Not A Code"], ["--limit", "0"]],
)
def test_log_show_bad_filters_exit_2(state: Path, arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        agent_main(["log", "show", "--state-dir", str(state), *arguments])
    assert exit_info.value.code == 2


def test_log_show_filters_and_prove(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        agent_main(["log", "show", "--state-dir", str(state), "--decision", "deny", "--limit", "3"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(len(line) <= 80 for line in lines)
    assert all("deny" in line for line in lines[1:])
    assert agent_main(["log", "prove", "--state-dir", str(state), "7"]) == 0


def test_prune_keeps_the_log_verifiable(state: Path) -> None:
    with LocalAgent.open(state, LineageConfig(checkpoint_every=10)) as agent:
        assert agent.lineage is not None
        for i in range(30):
            agent.decide(ALLOWED, NOW + 50 + i)
        agent.lineage.acknowledge(agent.lineage.size)
    assert agent_main(["log", "prune", "--state-dir", str(state), "--before", "55"]) == 0
    with LocalAgent.open(state) as agent:
        assert agent.lineage is not None
        report = agent.lineage.verify()
    assert 41 <= report.base <= 55


def test_verify_on_start_full_finds_a_tampered_entry_before_the_last_checkpoint(
    state: Path,
) -> None:
    _sql(state, "UPDATE entries SET data = data || x'00' WHERE seq = 3")
    with LocalAgent.open(state, LineageConfig(verify_on_start="tail")) as agent:
        assert agent.decide(ALLOWED, NOW + 100).allowed
    with LocalAgent.open(state, LineageConfig(verify_on_start="full")) as agent:
        assert agent.lineage is not None
        assert agent.lineage.fault is not None and "entry" in agent.lineage.fault
        assert agent.decide(ALLOWED, NOW + 101).reason is Reason.LINEAGE_UNAVAILABLE
        assert agent.lineage.store is not None
        assert agent.lineage.store.get_meta("break_seq") == 3
    with LocalAgent.open(state, LineageConfig(verify_on_start="tail")) as agent:
        assert agent.decide(ALLOWED, NOW + 102).reason is Reason.LINEAGE_UNAVAILABLE


@pytest.mark.parametrize(
    "settings",
    [
        {"verify_on_start": "sometimes"},
        {"synchronous": "OFF"},
        {"retain_max_entries": 0},
        {"retain_max_age_s": -5},
        {"checkpoint_every": -1},
        {"busy_timeout_s": 0},
    ],
)
def test_lineage_config_refuses_bad_settings(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LineageConfig(**settings)  # type: ignore[arg-type]


def test_a_log_of_an_older_schema_is_unavailable_with_a_clear_reason(state: Path) -> None:
    _sql(state, "UPDATE meta SET value = 1 WHERE key = 'schema'")
    log = LineageLog.open(state, DEVICE.device_id)
    assert log.fault is not None and "schema 2" in log.fault and "schema 1" in log.fault


def test_coroutines_share_commits_and_every_returned_allow_is_durable(state: Path) -> None:
    with LocalAgent.open(state) as agent:
        lineage = agent.lineage
        assert lineage is not None

        async def decide_many() -> list[int | None]:
            decisions = [decide(agent.state, ALLOWED, NOW + 300 + i) for i in range(200)]
            results = await asyncio.gather(*(lineage.record_decision_async(d) for d in decisions))
            return [seq for _, seq in results]

        seqs = asyncio.run(decide_many())
    assert sorted(s for s in seqs if s is not None) == list(range(41, 241))
    assert _verify(state) is None


def test_coroutines_are_denied_when_the_lineage_cannot_be_written(state: Path) -> None:
    (state / LINEAGE_DB).chmod(0o444)
    with LocalAgent.open(state) as agent:
        assert agent.lineage is not None
        decision = decide(agent.state, ALLOWED, NOW + 300)
        denied, seq = asyncio.run(agent.lineage.record_decision_async(decision))
    (state / LINEAGE_DB).chmod(0o600)
    assert seq is None and denied.reason is Reason.LINEAGE_UNAVAILABLE


def test_decisions_recorded_together_are_returned_only_once_durable_in_order(
    state: Path,
) -> None:
    with LocalAgent.open(state) as agent:
        lineage = agent.lineage
        assert lineage is not None
        decisions = [decide(agent.state, ALLOWED, NOW + 300 + i) for i in range(50)]
        recorded = lineage.record_decisions([(d, None) for d in decisions])
        db = sqlite3.connect(state / LINEAGE_DB)
        times = [r[0] for r in db.execute("SELECT time FROM entries WHERE seq > 40 ORDER BY seq")]
        db.close()
    assert recorded == decisions
    assert times == [NOW + 300 + i for i in range(50)]
    assert _verify(state) is None


def test_decisions_recorded_from_several_threads_at_once_are_all_durable_and_verify(
    state: Path,
) -> None:
    with LocalAgent.open(state) as agent:
        lineage = agent.lineage
        assert lineage is not None
        batches = [
            [(decide(agent.state, ALLOWED, NOW + 300 + 10 * t + i), None) for i in range(10)]
            for t in range(8)
        ]
        with ThreadPoolExecutor(len(batches)) as pool:
            recorded = [d for batch in pool.map(lineage.record_decisions, batches) for d in batch]
    assert all(d.allowed for d in recorded)
    db = sqlite3.connect(state / LINEAGE_DB)
    times = {r[0] for r in db.execute("SELECT time FROM entries WHERE seq > 40")}
    db.close()
    assert {d.time for d in recorded} <= times
    assert _verify(state) is None


def test_decisions_recorded_together_are_all_denied_when_the_lineage_cannot_be_written(
    state: Path,
) -> None:
    (state / LINEAGE_DB).chmod(0o444)
    with LocalAgent.open(state) as agent:
        assert agent.lineage is not None
        lineage = agent.lineage
        decisions = [decide(agent.state, ALLOWED, NOW + 300 + i) for i in range(3)]
        denied = lineage.record_decisions([(d, None) for d in decisions])
        assert lineage.last_error is not None
    (state / LINEAGE_DB).chmod(0o600)
    assert [(d.allowed, d.reason) for d in denied] == [(False, Reason.LINEAGE_UNAVAILABLE)] * 3


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from edge_agent.agent import LocalAgent
from edge_agent.protocol.request import Request
agent = LocalAgent.open(Path({state!r}))
request = Request("svc:camera", "exec", "/opt/camera/bin/capture")
print("ready", flush=True)
while True:
    decision = agent.decide(request, {now})
    if decision.allowed:
        print(agent.last_seq, flush=True)
"""


def _crash_rounds(state: Path, rounds: int) -> None:
    root = str(Path(__file__).resolve().parents[1])
    script = CHILD.format(root=root, state=str(state), now=NOW + 1000)
    rng = random.Random(11)
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        allowed = [int(line) for line in out.split()]
        assert _verify(state) is None
        db = sqlite3.connect(state / LINEAGE_DB)
        stored = {r[0] for r in db.execute("SELECT seq FROM entries WHERE allowed = 1")}
        db.close()
        assert set(allowed) <= stored


def test_sigkill_never_loses_a_returned_allow_quick(state: Path) -> None:
    _crash_rounds(state, 20)


@pytest.mark.slow
def test_sigkill_never_loses_a_returned_allow_soak(state: Path) -> None:
    _crash_rounds(state, 200)


def test_lineage_log_open_never_raises_on_a_damaged_file(tmp_path: Path, state: Path) -> None:
    (state / LINEAGE_DB).write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (state / (LINEAGE_DB + suffix)).unlink(missing_ok=True)
    log = LineageLog.open(state, DEVICE.device_id)
    assert log.fault is not None
    with LocalAgent.open(state) as agent:
        assert agent.decide(ALLOWED, NOW).reason is Reason.LINEAGE_UNAVAILABLE
