"""A software TPM (``swtpm`` from Debian's packages) for tests, on 127.0.0.1 free ports.

:func:`running_swtpm` starts ``swtpm socket --tpm2`` with its state in a temporary
directory, waits until it accepts connections, yields the TCTI string the agent's profile
names (``swtpm:host=127.0.0.1,port=P``; the control channel is ``P+1``, as the swtpm TCTI
expects), and kills the process by its PID on exit. Tests that need it skip, naming the
package, when swtpm or tpm2-pytss is not installed (under CI they fail: tests.system_tools).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.system_tools import require, require_module

__all__ = ["extend_pcr", "require_tpm2_pytss", "running_swtpm", "skip_without_swtpm"]

START_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0


def require_tpm2_pytss() -> None:
    """Skip the calling test (fail it under CI) when tpm2-pytss is not in the venv: the
    Makefile installs the [tpm] extra only when libtss2-dev was there as the venv was built."""
    require_module(
        "tpm2_pytss", "libtss2-dev pkg-config", ", then .venv/bin/pip install -e '.[tpm]'"
    )


def skip_without_swtpm() -> None:
    """Skip the calling test (fail it under CI) when swtpm or tpm2-pytss is missing."""
    require("swtpm", "swtpm swtpm-tools")
    require_tpm2_pytss()


def _port_pair() -> int:
    """A port P with P and P+1 both free on 127.0.0.1 (swtpm's server and control)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_swtpm(state_dir: Path) -> Iterator[str]:
    """A running swtpm with its state in ``state_dir``; yields its TCTI string."""
    skip_without_swtpm()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = _port_pair()
    log = state_dir / "swtpm.log"
    process = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--server",
            f"type=tcp,port={port},bindaddr=127.0.0.1",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
            "--tpmstate",
            f"dir={state_dir}",
            "--flags",
            "not-need-init,startup-clear",
            "--log",
            f"file={log}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not _accepting(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"swtpm did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield f"swtpm:host=127.0.0.1,port={port}"
    finally:
        process.terminate()
        try:
            process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def extend_pcr(tcti: str, pcr: int, data: bytes) -> None:
    """Extend sha256 PCR ``pcr`` of the TPM at ``tcti`` with SHA-256 of ``data`` (as a boot
    component measuring something new would)."""
    tss = importlib.import_module("tpm2_pytss")
    constants = tss.constants
    name, _, conf = tcti.partition(":")
    with tss.TCTILdr(name, conf) as tcti_ctx, tss.ESAPI(tcti_ctx) as esapi:
        digest = tss.TPMT_HA(
            hashAlg=constants.TPM2_ALG.SHA256,
            digest=tss.TPMU_HA(sha256=hashlib.sha256(data).digest()),
        )
        esapi.pcr_extend(getattr(constants.ESYS_TR, f"PCR{pcr}"), tss.TPML_DIGEST_VALUES([digest]))
