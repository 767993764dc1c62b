"""What the exec-enforcement tests share: a private mount namespace with its own tmpfs mounts.

Every scenario that marks a mount runs in a child process started with
``unshare --mount --propagation private`` (so nothing it mounts or marks is visible to the
machine), on two fresh tmpfs mounts inside the test's ``tmp_path``: ``work`` (the workload
mount the scenario marks) and ``var`` (the state directory and the holder socket: the agent's
own files, never marked). The child runs ``module:function(sandbox, **params)`` and prints
its JSON result; the test asserts on it. The whole process group is killed when the
scenario ends or times out, and with it every fanotify group it created (the namespace and
its tmpfs mounts die with the last process), so no test can leave execs blocked.

Executions are observed by their effect, not by timing: exit status, the errno the kernel
gave ``execve``, and the lineage entries.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.agent import LocalAgent, init_state_dir
from edge_agent.policy.compiler import policy_payload
from edge_agent.protocol.lineage_entries import Kind, decode_entry
from tests.factory import DAY, DEVICE, HubSim

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0
TRUE = "/bin/true"


def can_enforce() -> bool:
    """Root on a kernel with fanotify (the scenario itself proves the rest)."""
    return (
        os.geteuid() == 0
        and Path("/proc/sys/fs/fanotify").is_dir()
        and bool(shutil.which("unshare"))
    )


def run_in_sandbox(
    target: str, tmp_path: Path, *, timeout_s: float = 120.0, **params: object
) -> dict[str, object]:
    """Run ``target`` (``module:function``) in a private mount namespace; its JSON result."""
    process = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "tests.fanotify_helpers",
            target,
            str(tmp_path),
            json.dumps(params),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        out, err = process.communicate()
        raise AssertionError(f"scenario {target} timed out; stderr:\n{err[-4000:]}") from None
    finally:
        _kill_group(process.pid)
    if process.returncode != 0:
        raise AssertionError(f"scenario {target} failed ({process.returncode}):\n{err[-6000:]}")
    lines = out.strip().splitlines()
    if not lines:
        raise AssertionError(f"scenario {target} printed nothing; stderr:\n{err[-4000:]}")
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Sandbox:
    """The scenario's world: the workload mount, the agent's directory, the processes it
    started (killed at the end)."""

    work: Path
    var: Path
    hub: HubSim = field(default_factory=HubSim)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.var / "state"

    @property
    def holder_socket(self) -> Path:
        return self.var / "holder.sock"

    def enroll(
        self,
        rules: Sequence[Mapping[str, object]],
        *,
        ttl_s: int = DAY,
        workloads: Mapping[str, Sequence[str]] | None = None,
    ) -> bytes:
        """Initialise the state directory with a bundle of ``rules`` valid for ``ttl_s``;
        the bundle bytes."""
        wall = int(time.time())
        root = self.hub.root_bytes(issued_at=wall - DAY, expires_at=wall + 365 * DAY)
        init_state_dir(self.state, DEVICE, root, wall)
        policy = policy_payload(groups={}, workloads=workloads or {}, rules=rules)
        bundle = self.hub.bundle(1, policy=policy, issued_at=wall - 60, expires_at=wall + ttl_s)
        with LocalAgent.open(self.state) as agent:
            agent.install_bundle(bundle, wall)
        return bundle

    def binary(self, relative: str, content: bytes | None = None) -> Path:
        """A program on the workload mount: a copy of /bin/true, or ``content``."""
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            shutil.copyfile(TRUE, path)
        else:
            path.write_bytes(content)
        path.chmod(0o755)
        return path

    def start_enforce(self, *args: str) -> subprocess.Popen[str]:
        """``edge-agent enforce`` on the workload mount, returned once it is up."""
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "enforce",
                "--state-dir",
                str(self.state),
                "--mounts",
                str(self.work),
                "--holder-socket",
                str(self.holder_socket),
                *args,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        if "exec enforcement" not in line:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"enforce did not start: {line!r}\n{err}")
        return process

    def stop(self, process: subprocess.Popen[str]) -> tuple[int, str, str]:
        """SIGTERM, then its exit status, the rest of its stdout and its stderr."""
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=READY_TIMEOUT_S)
        return process.returncode, out, err

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def execute(path: Path | str, *args: str) -> dict[str, object]:
    """Run a program; ``{"rc": status}`` or ``{"errno": name}`` when ``execve`` failed."""
    try:
        done = subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=READY_TIMEOUT_S
        )
    except OSError as exc:
        return {"errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}
    return {"rc": done.returncode, "out": done.stdout}


def decisions(state: Path) -> list[dict[str, object]]:
    """Every decision entry of the state directory's lineage, oldest first."""
    with LocalAgent.open(state) as agent:
        assert agent.lineage is not None and agent.lineage.store is not None
        rows = list(agent.lineage.store.iter_rows(0, "kind = 'decision'", []))
    entries = []
    for seq, data, _ in rows:
        entry = decode_entry(data, seq)
        if entry.kind is not Kind.DECISION or entry.request is None:
            continue
        entries.append(
            {
                "seq": seq,
                "allowed": entry.allowed,
                "reason": entry.reason,
                "rule": entry.rule,
                "subject": entry.request.subject,
                "action": entry.request.action,
                "resource": entry.request.resource,
                "context": dict(entry.request.context),
                "selectors": list(entry.request.selectors),
                "detail": entry.detail,
            }
        )
    return entries


def allow_rule(rule_id: str, pattern: str, **extra: object) -> dict[str, object]:
    return {
        "id": rule_id,
        "effect": "allow",
        "subjects": ["uid:0"],
        "actions": ["exec"],
        "resources": [pattern],
        **extra,
    }


def deny_rule(rule_id: str, pattern: str) -> dict[str, object]:
    return {
        "id": rule_id,
        "effect": "deny",
        "subjects": ["*"],
        "actions": ["exec"],
        "resources": [pattern],
    }


@contextlib.contextmanager
def _mounted(base: Path) -> Iterator[Sandbox]:
    work, var = base / "work", base / "var"
    for path in (work, var):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256m,mode=0755", "tmpfs", str(path)], check=True
        )
    sandbox = Sandbox(work, var)
    try:
        yield sandbox
    finally:
        sandbox.close()


def _child_main(argv: Sequence[str]) -> int:
    target, base, params = argv
    module_name, _, function_name = target.partition(":")
    function: Callable[..., dict[str, object]] = getattr(
        importlib.import_module(module_name), function_name
    )
    with _mounted(Path(base)) as sandbox:
        result = function(sandbox, **json.loads(params))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
