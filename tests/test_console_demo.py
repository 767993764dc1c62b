"""``make demo CONSOLE=1``: the demo story, then the hub serving the console to the three
agents still running, its URL and an operator token printed, up until Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx

from tests.hub_support import suite_registry
from tests.system_tools import ctrl_c_default

STARTUP_S = 180.0


def test_the_console_demo_prints_a_url_and_token_that_log_in_and_stops_on_ctrl_c() -> None:
    suite_registry()  # the demo's hub takes $EDGEGOV_REGISTRY: it must exist by then
    demo = subprocess.Popen(
        [sys.executable, "-m", "hub.demo", "--console", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ctrl_c_default,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + STARTUP_S
    try:
        while not (lines and lines[-1].startswith("token:")):
            line = demo.stdout.readline()
            assert line, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        url = next(line.split()[1] for line in lines if line.startswith("console:"))
        token = lines[-1].split()[1]
        with httpx.Client(base_url=url, follow_redirects=False, timeout=10) as client:
            form = client.get("/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf
            login = client.post("/login", data={"token": token, "csrf": csrf.group(1)})
            assert login.status_code == 303
            page = client.get("/devices").text
        assert page.count('<td class="state-open">open</td>') == 3, page
        assert demo.poll() is None, "the demo must stay up until Ctrl-C"
    finally:
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, "".join(lines) + rest
    assert "demo finished" in rest
