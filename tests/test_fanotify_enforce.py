"""Exec enforcement for real: ``edge-agent enforce`` and ``ExecEnforcer`` on a kernel with
fanotify permission events, each scenario in its own mount namespace on its own tmpfs
(tests/fanotify_helpers.py). Every assertion is about what ran, what the kernel refused
(``EPERM``: denied by the agent; ``EACCES``: the mount is ``noexec``) and what the lineage
holds, never about how long anything took.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.agent import LocalAgent
from edge_agent.fanotify import _abi
from edge_agent.fanotify.enforcer import EnforcerOptions, ExecEnforcer, Mode
from edge_agent.fanotify.mounts import is_noexec
from edge_agent.fanotify.responder import sweep_deny
from edge_agent.lineage.replay import replay
from tests.fanotify_helpers import (
    REPO,
    TRUE,
    Sandbox,
    allow_rule,
    can_enforce,
    decisions,
    deny_rule,
    execute,
    run_in_sandbox,
)

pytestmark = pytest.mark.skipif(
    not can_enforce(), reason="needs root, fanotify and unshare (CI runs as root)"
)

HERE = "tests.test_fanotify_enforce"
TRUE_SHA256 = hashlib.sha256(Path(TRUE).read_bytes()).hexdigest()


def _options(sandbox: Sandbox, **extra: object) -> EnforcerOptions:
    return EnforcerOptions(holder_socket=sandbox.holder_socket, **extra)  # type: ignore[arg-type]


def _blocked(process: subprocess.Popen[str], wait_s: float = 1.0) -> bool:
    """Whether ``process`` is still waiting (its exec has not been allowed) after ``wait_s``."""
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return True
    return False


def _waiter(program: Path) -> subprocess.Popen[str]:
    """A shell (on the root filesystem) that runs ``program`` and reports its status."""
    return subprocess.Popen(
        ["/bin/sh", "-c", f"{program}; echo rc=$?"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- allowed, denied, logged; outside untouched; stopped -> noexec --------------------------


def scenario_allow_deny_and_stop(sandbox: Sandbox) -> dict[str, object]:
    work = sandbox.work
    sandbox.enroll([allow_rule("workloads", f"{work}/ok/*"), deny_rule("never", f"{work}/bad/*")])
    ok, bad, unknown = (sandbox.binary(p) for p in ("ok/tool", "bad/tool", "other/tool"))
    process = sandbox.start_enforce()
    result: dict[str, object] = {
        "ok": execute(ok),
        "bad": execute(bad),
        "unknown": execute(unknown),
        "outside": execute("/bin/sh", "-c", "echo outside"),
    }
    result["exit"], _, _ = sandbox.stop(process)
    result["noexec_after_stop"] = is_noexec(str(work))
    result["after_stop"] = execute(ok)
    result["entries"] = decisions(sandbox.state)
    result["paths"] = [str(ok), str(bad), str(unknown)]
    result["python"] = os.path.realpath(sys.executable)
    return result


def test_allowed_binary_runs_unknown_and_denied_ones_get_eperm_and_every_exec_is_logged(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_allow_deny_and_stop", tmp_path)
    assert result["ok"] == {"rc": 0, "out": ""}
    assert result["bad"] == {"errno": "EPERM"}
    assert result["unknown"] == {"errno": "EPERM"}
    assert result["outside"] == {"rc": 0, "out": "outside\n"}
    entries = result["entries"]
    assert isinstance(entries, list)
    ok, bad, unknown = result["paths"]  # type: ignore[misc]
    assert [(e["resource"], e["allowed"], e["reason"], e["rule"]) for e in entries] == [
        (ok, True, "allowed", "workloads"),
        (bad, False, "policy_denied", "never"),
        (unknown, False, "no_matching_rule", None),
    ]
    for entry in entries:
        assert entry["action"] == "exec"
        assert entry["context"] == {"sha256": TRUE_SHA256}
        assert entry["subject"] == f"exe:{result['python']}"
        assert entry["selectors"][:3] == ["uid:0", "gid:0", "user:root"]
        assert entry["selectors"][3].startswith("exe-sha256:")


def test_a_stopped_enforcer_leaves_the_workload_mount_noexec(tmp_path: Path) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_allow_deny_and_stop", tmp_path)
    assert result["exit"] == 0
    assert result["noexec_after_stop"] is True
    assert result["after_stop"] == {"errno": "EACCES"}


# --- a binary rewritten in place is decided again -------------------------------------------

SCRIPT_A = b"#!/bin/sh\necho AAAA\n"
SCRIPT_B = b"#!/bin/sh\necho BBBB\n"


def scenario_rewritten_in_place(sandbox: Sandbox) -> dict[str, object]:
    pinned = {"when": {"context": {"sha256": [hashlib.sha256(SCRIPT_A).hexdigest()]}}}
    sandbox.enroll([allow_rule("pinned", f"{sandbox.work}/pinned/*", **pinned)])
    tool = sandbox.binary("pinned/tool", SCRIPT_A)
    process = sandbox.start_enforce()
    runs = [execute(tool)]
    for content in (SCRIPT_B, SCRIPT_A):
        before = os.stat(tool)
        with open(tool, "r+b") as handle:
            handle.write(content)
        # Same size, and the mtime put back: only the ctime tells the versions apart.
        os.utime(tool, ns=(before.st_atime_ns, before.st_mtime_ns))
        runs.append(execute(tool))
    sandbox.stop(process)
    entries = decisions(sandbox.state)
    return {"runs": runs, "digests": [e["context"]["sha256"] for e in entries]}  # type: ignore[index]


def test_a_binary_replaced_in_place_after_it_was_allowed_is_decided_again(tmp_path: Path) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_rewritten_in_place", tmp_path)
    assert result["runs"] == [
        {"rc": 0, "out": "AAAA\n"},
        {"errno": "EPERM"},
        {"rc": 0, "out": "AAAA\n"},
    ]
    a, b = (hashlib.sha256(s).hexdigest() for s in (SCRIPT_A, SCRIPT_B))
    assert result["digests"] == [a, b, a]


# --- a closed gate denies every workload exec; the shell outside keeps working --------------


def scenario_gate_closed(sandbox: Sandbox, cause: str) -> dict[str, object]:
    ttl = 3 if cause == "expired" else 3600
    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/**")], ttl_s=ttl)
    tools = [sandbox.binary(f"app{i}/tool") for i in range(3)]

    async def body() -> dict[str, object]:
        with LocalAgent.open(sandbox.state) as agent:
            assert agent.state.bundle is not None
            expires_at = agent.state.bundle.expires_at
            async with ExecEnforcer(agent, Mode.ENFORCE, [sandbox.work], _options(sandbox)):
                before = await asyncio.to_thread(execute, tools[0])
                if cause == "revoked":
                    wall = int(time.time())
                    agent.install_revocation(sandbox.hub.revocation(1, issued_at=wall), wall)
                else:
                    await asyncio.sleep(max(0.0, expires_at + 1 - time.time()))
                after = [await asyncio.to_thread(execute, t) for t in tools]
                outside = await asyncio.to_thread(execute, "/bin/sh", "-c", "echo still here")
        return {"before": before, "after": after, "outside": outside}

    result = asyncio.run(body())
    result["reasons"] = [e["reason"] for e in decisions(sandbox.state)]
    return result


@pytest.mark.parametrize(
    ("cause", "reason"), [("revoked", "revoked"), ("expired", "bundle_expired")]
)
def test_a_closed_gate_denies_every_workload_exec_while_a_shell_outside_keeps_working(
    tmp_path: Path, cause: str, reason: str
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_gate_closed", tmp_path, cause=cause)
    assert result["before"] == {"rc": 0, "out": ""}
    assert result["after"] == [{"errno": "EPERM"}] * 3
    assert result["outside"] == {"rc": 0, "out": "still here\n"}
    assert result["reasons"] == ["allowed", reason, reason, reason]


# --- the responder killed with an exec waiting: blocked, then denied on restart --------------


def scenario_responder_killed(sandbox: Sandbox) -> dict[str, object]:
    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/ok/*")])
    tool = sandbox.binary("ok/tool")
    first = sandbox.start_enforce()
    os.kill(first.pid, signal.SIGSTOP)
    waiter = _waiter(tool)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    blocked = _blocked(waiter)
    second = sandbox.start_enforce("--json")
    out, err = waiter.communicate(timeout=30)
    after = execute(tool)
    _, stats, _ = sandbox.stop(second)
    return {"blocked": blocked, "out": out, "err": err, "after": after, "stats": stats}


def test_an_exec_waiting_when_the_responder_is_killed_is_never_allowed_and_denied_on_restart(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_responder_killed", tmp_path)
    assert result["blocked"] is True
    assert result["out"] == "rc=126\n"
    assert "Operation not permitted" in str(result["err"])
    assert result["after"] == {"rc": 0, "out": ""}
    assert '"stale_denied": 1' in str(result["stats"])


def scenario_holder_gives_up(sandbox: Sandbox) -> dict[str, object]:
    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/ok/*")])
    tool = sandbox.binary("ok/tool")
    process = sandbox.start_enforce("--recover-s", "1")
    os.kill(process.pid, signal.SIGSTOP)
    waiter = _waiter(tool)
    os.kill(process.pid, signal.SIGKILL)
    out, _ = waiter.communicate(timeout=30)
    return {"out": out, "noexec": is_noexec(str(sandbox.work)), "later": execute(tool)}


def test_without_an_agent_coming_back_the_holder_denies_and_leaves_the_mount_noexec(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_holder_gives_up", tmp_path)
    assert result["out"] == "rc=126\n"
    assert result["noexec"] is True
    assert result["later"] == {"errno": "EACCES"}


def scenario_sweep(sandbox: Sandbox) -> dict[str, object]:
    """An event read by a process that then died unanswering is denied by descriptor
    number from another holder of the group."""
    tool = sandbox.binary("tool")
    group = _abi.fanotify_init()
    _abi.fanotify_mark(
        group,
        _abi.FAN_MARK_ADD | _abi.FAN_MARK_FILESYSTEM,
        _abi.FAN_OPEN_EXEC_PERM,
        str(tool.parent),
    )
    waiter = _waiter(tool)
    reader = os.fork()
    if reader == 0:
        os.set_blocking(group, True)
        os.read(group, _abi.EVENT_BUFFER_BYTES)
        os._exit(0)
    os.waitpid(reader, 0)
    blocked = _blocked(waiter)
    denied = sweep_deny(group, 1024)
    out, _ = waiter.communicate(timeout=30)
    os.close(group)
    return {"blocked": blocked, "denied": denied, "out": out}


def test_events_a_dead_reader_left_unanswered_are_denied_by_descriptor_sweep(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_sweep", tmp_path)
    assert result == {"blocked": True, "denied": 1, "out": "rc=126\n"}


# --- the responder thread dies: restarted after denying; past the cap: noexec ---------------


def scenario_responder_crashes(sandbox: Sandbox, crashes: int) -> dict[str, object]:
    from edge_agent.fanotify import responder

    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/**")])
    tool = sandbox.binary("tool")
    real = responder.Responder._answer_all
    left = [crashes]

    def crash_then_answer(self: responder.Responder, data: bytes) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise RuntimeError("injected responder crash")
        real(self, data)

    responder.Responder._answer_all = crash_then_answer  # type: ignore[method-assign]

    async def body() -> dict[str, object]:
        options = _options(sandbox, restart_limit=2)
        with LocalAgent.open(sandbox.state) as agent:
            enforcer = ExecEnforcer(agent, Mode.ENFORCE, [sandbox.work], options)
            async with enforcer:
                runs = []
                for _ in range(4):
                    runs.append(await asyncio.to_thread(execute, tool))
                    await asyncio.sleep(0.2)
                stats = enforcer.stats()
                noexec = is_noexec(str(sandbox.work))
        return {
            "runs": runs,
            "health": stats.responder,
            "restarts": stats.restarts,
            "noexec": noexec,
        }

    return asyncio.run(body())


def test_a_crashed_responder_is_restarted_after_denying_what_it_had_read(tmp_path: Path) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_responder_crashes", tmp_path, crashes=1)
    assert result["runs"] == [{"errno": "EPERM"}] + [{"rc": 0, "out": ""}] * 3
    assert (result["health"], result["restarts"], result["noexec"]) == ("running", 1, False)


def test_a_responder_that_keeps_crashing_gives_up_closed_with_the_mount_noexec(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_responder_crashes", tmp_path, crashes=100)
    assert result["runs"] == [{"errno": "EPERM"}] * 3 + [{"errno": "EACCES"}]
    assert (result["health"], result["restarts"], result["noexec"]) == ("failed", 3, True)


# --- bursts: nothing allowed without a decision, nothing lost from the lineage -------------

_BURST_LOOP = """
ran=0; denied=0; leaked=0; failed=0; i=0
while [ $i -lt {n} ]; do
  if [ $((i % 4)) -eq 3 ]; then
    if {bad} 2>/dev/null; then leaked=$((leaked+1)); else denied=$((denied+1)); fi
  else
    if {ok}; then ran=$((ran+1)); else failed=$((failed+1)); fi
  fi
  i=$((i+1))
done
echo "$ran $denied $leaked $failed"
"""


def scenario_burst(sandbox: Sandbox, total: int, workers: int) -> dict[str, object]:
    work = sandbox.work
    sandbox.enroll([allow_rule("workloads", f"{work}/ok/*"), deny_rule("never", f"{work}/bad/*")])
    ok, bad = sandbox.binary("ok/tool"), sandbox.binary("bad/tool")
    process = sandbox.start_enforce("--json")
    loop = _BURST_LOOP.format(n=total // workers, ok=ok, bad=bad)
    shells = [
        subprocess.Popen(["/bin/sh", "-c", loop], stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    counts = [0, 0, 0, 0]
    for shell in shells:
        out, _ = shell.communicate(timeout=600)
        counts = [a + int(b) for a, b in zip(counts, out.split(), strict=True)]
    _, stats, _ = sandbox.stop(process)
    entries = decisions(sandbox.state)
    logged = {
        "ok_allowed": sum(1 for e in entries if e["resource"] == str(ok) and e["allowed"]),
        "bad_denied": sum(1 for e in entries if e["resource"] == str(bad) and not e["allowed"]),
        "other": sum(1 for e in entries if e["reason"] not in ("allowed", "policy_denied")),
    }
    ran, denied, leaked, failed = counts
    return {
        "ran": ran,
        "denied": denied,
        "leaked": leaked,
        "failed": failed,
        **logged,
        "stats": stats,
    }


def _check_burst(result: dict[str, object], total: int) -> None:
    assert result["leaked"] == 0
    assert result["failed"] == 0
    assert result["ran"] == total * 3 // 4
    assert result["denied"] == total // 4
    assert result["ok_allowed"] == result["ran"]
    assert result["bad_denied"] == result["denied"]
    assert result["other"] == 0
    assert '"unlogged": 0' in str(result["stats"])


def test_a_burst_of_execs_is_decided_one_by_one_and_every_decision_is_logged(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_burst", tmp_path, total=2000, workers=4)
    _check_burst(result, 2000)


@pytest.mark.slow
def test_twenty_thousand_execs_in_a_burst_none_allowed_undecided_none_lost(tmp_path: Path) -> None:
    result = run_in_sandbox(
        f"{HERE}:scenario_burst", tmp_path, timeout_s=900, total=20000, workers=4
    )
    _check_burst(result, 20000)


# --- a stalled lineage: execs denied once the queue is full, never hung ---------------------


class _StalledLineage:
    """The agent's lineage, with every decision write held until ``release`` is set."""

    def __init__(self, real: object, release: asyncio.Event) -> None:
        self._real = real
        self._release = release

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def record_decision_numbered_soon(
        self, decision: object, follow: object = None
    ) -> asyncio.Future[object]:
        return asyncio.ensure_future(self._after_release(decision, follow))

    async def _after_release(self, decision: object, follow: object) -> object:
        await self._release.wait()
        return await self._real.record_decision_numbered_soon(decision, follow)  # type: ignore[attr-defined]


def scenario_stalled_lineage(sandbox: Sandbox) -> dict[str, object]:
    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/**")])
    tool = sandbox.binary("tool")

    async def body() -> dict[str, object]:
        release = asyncio.Event()
        with LocalAgent.open(sandbox.state) as agent:
            real = agent.lineage
            agent.lineage = _StalledLineage(real, release)  # type: ignore[assignment]
            options = _options(sandbox, queue_entries=20)
            enforcer = ExecEnforcer(agent, Mode.ENFORCE, [sandbox.work], options)
            async with enforcer:
                runs = [await asyncio.to_thread(execute, tool) for _ in range(30)]
                stalled = enforcer.stats()
                release.set()
            agent.lineage = real
        return {
            "runs": runs,
            "backlog": stalled.lineage_backlog,
            "queue_full": stalled.queue_full,
            "logged": len(decisions(sandbox.state)),
        }

    return asyncio.run(body())


def test_a_stalled_lineage_denies_execs_once_the_queue_is_full_and_never_hangs_them(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_stalled_lineage", tmp_path)
    assert result["runs"] == [{"rc": 0, "out": ""}] * 20 + [{"errno": "EPERM"}] * 10
    assert (result["backlog"], result["queue_full"]) == (20, 10)
    assert result["logged"] == 20


# --- audit: everything runs, the lineage says what enforce would have done ------------------


def scenario_audit(sandbox: Sandbox) -> dict[str, object]:
    work = sandbox.work
    sandbox.enroll([allow_rule("workloads", f"{work}/ok/*"), deny_rule("never", f"{work}/bad/*")])
    tools = [sandbox.binary(p) for p in ("ok/tool", "bad/tool", "other/tool")]
    process = sandbox.start_enforce("--mode", "audit", "--json")
    runs = [execute(t) for t in tools]
    _, stats, _ = sandbox.stop(process)
    with LocalAgent.open(sandbox.state) as agent:
        assert agent.lineage is not None and agent.lineage.store is not None
        report = replay(sandbox.state, agent.lineage.store, None)
    return {
        "runs": runs,
        "entries": [(e["allowed"], e["reason"], e["detail"]) for e in decisions(sandbox.state)],
        "replayed": report.replayed,
        "divergences": len(report.divergences),
        "noexec": is_noexec(str(work)),
        "stats": stats,
    }


def test_audit_mode_runs_everything_and_logs_what_enforce_would_have_done_replayably(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_audit", tmp_path)
    assert result["runs"] == [{"rc": 0, "out": ""}] * 3
    entries = result["entries"]
    assert [(allowed, reason) for allowed, reason, _ in entries] == [  # type: ignore[union-attr]
        (True, "allowed"),
        (False, "policy_denied"),
        (False, "no_matching_rule"),
    ]
    details = [detail for _, _, detail in entries]  # type: ignore[union-attr]
    assert details[0].startswith("audit mode: exec allowed; enforce would have allowed it")
    assert details[1].startswith("audit mode: exec allowed; enforce would have denied it")
    assert (result["replayed"], result["divergences"]) == (3, 0)
    assert result["noexec"] is False
    assert '"audit_would_deny": 2' in str(result["stats"])


# --- refusals: never silently unenforced, never the wrong mount -----------------------------


def scenario_refusals(sandbox: Sandbox) -> dict[str, object]:
    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/**")])
    (sandbox.work / "sub").mkdir()
    base = [sys.executable, "-m", "edge_agent.cli", "enforce", "--state-dir", str(sandbox.state)]
    base += ["--holder-socket", str(sandbox.holder_socket), "--mounts"]
    outcomes = {}
    for name, prefix, mount in [
        ("root", [], "/"),
        ("own_files", [], str(sandbox.var)),
        ("not_a_mount", [], str(sandbox.work / "sub")),
        ("no_cap_sys_admin", ["setpriv", "--bounding-set=-sys_admin"], str(sandbox.work)),
    ]:
        done = subprocess.run(
            [*prefix, *base, mount], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        outcomes[name] = {"rc": done.returncode, "err": done.stderr}
    outcomes["still_exec"] = {"rc": 0 if not is_noexec(str(sandbox.work)) else 1, "err": ""}
    outcomes["no_holder"] = {"rc": int(sandbox.holder_socket.exists()), "err": ""}
    return outcomes


def test_the_root_filesystem_the_agents_own_files_and_non_mounts_are_refused(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_refusals", tmp_path)
    assert result["root"]["rc"] == 2  # type: ignore[index]
    assert "never marks the OS root" in result["root"]["err"]  # type: ignore[index]
    assert result["own_files"]["rc"] == 2  # type: ignore[index]
    assert "holds the agent's own files" in result["own_files"]["err"]  # type: ignore[index]
    assert result["not_a_mount"]["rc"] == 2  # type: ignore[index]
    assert "is not a mount point" in result["not_a_mount"]["err"]  # type: ignore[index]


def test_enforcement_refuses_to_start_without_the_right_to_receive_permission_events(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_refusals", tmp_path)
    refused = result["no_cap_sys_admin"]
    assert refused["rc"] == 1  # type: ignore[index]
    assert "needs CAP_SYS_ADMIN" in refused["err"]  # type: ignore[index]
    assert "refusing to run exec enforcement unenforced" in refused["err"]  # type: ignore[index]
    assert result["still_exec"]["rc"] == 0  # type: ignore[index]
    assert result["no_holder"]["rc"] == 0  # type: ignore[index]


def scenario_kernel_without_exec_permission_events(sandbox: Sandbox) -> dict[str, object]:
    """FAN_OPEN_EXEC_PERM refused as an older kernel refuses it (EINVAL at fanotify_mark)."""
    import errno

    from edge_agent.fanotify import enforcer as module
    from edge_agent.fanotify.errors import EnforcementUnavailable

    sandbox.enroll([allow_rule("workloads", f"{sandbox.work}/**")])
    tool = sandbox.binary("tool")

    def no_exec_events(*_: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    module._abi.fanotify_mark = no_exec_events  # type: ignore[assignment]

    async def body() -> str:
        with LocalAgent.open(sandbox.state) as agent:
            try:
                async with ExecEnforcer(agent, Mode.ENFORCE, [sandbox.work], _options(sandbox)):
                    return "started"
            except EnforcementUnavailable as exc:
                return exc.message

    message = asyncio.run(body())
    return {
        "message": message,
        "noexec": is_noexec(str(sandbox.work)),
        "after": execute(tool),
        "holder_left": sandbox.holder_socket.exists(),
    }


def test_a_kernel_without_exec_permission_events_is_refused_and_the_mount_left_closed(
    tmp_path: Path,
) -> None:
    result = run_in_sandbox(f"{HERE}:scenario_kernel_without_exec_permission_events", tmp_path)
    assert "CONFIG_FANOTIFY_ACCESS_PERMISSIONS" in str(result["message"])
    assert "refusing to run exec enforcement unenforced" in str(result["message"])
    assert result["noexec"] is True
    assert result["after"] == {"errno": "EACCES"}
    assert result["holder_left"] is False
