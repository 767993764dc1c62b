"""The soak and the load-and-abuse harnesses (bench/soak.py, bench/abuse.py), run small.

`make soak` runs them at full size (1,000 agents for 10 minutes; 100 agents under a
2-minute flood) and holds them to their bars; here a bounded run of each pins what must hold
at any size: every entry decided is stored at the hub, nothing logs an error or a traceback,
and no honest device is denied a request its bundle allows, flood or not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.brokers import require_mosquitto

REPO = Path(__file__).resolve().parents[1]
RUN_BOUND_S = 600


def _bench(script: str, out: Path, *args: str) -> dict[str, object]:
    subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args, "--json", str(out)],
        check=True,
        cwd=REPO,
        timeout=RUN_BOUND_S,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads(out.read_text())
    assert isinstance(result, dict)
    return result


def test_a_short_soak_on_mosquitto_stores_every_entry_and_logs_no_error(tmp_path: Path) -> None:
    require_mosquitto()
    result = _bench(
        "soak.py",
        tmp_path / "soak.json",
        *("--agents", "8", "--minutes", "0.25", "--decide-every", "1", "--sample", "2"),
    )
    assert result["drained"] is True
    assert result["entries"] == result["stored"] == result["acknowledged"]
    assert result["lost"] == 0
    assert result["decided"] > 0
    assert result["errors"] == {"agents": 0, "hub": 0}
    assert result["tracebacks"] == {"agents": 0, "hub": 0}
    assert result["denied_allowed"] == {}


def test_a_short_flood_denies_no_honest_device_and_the_flooders_got_through(
    tmp_path: Path,
) -> None:
    result = _bench("abuse.py", tmp_path / "abuse.json", *("--agents", "6", "--seconds", "8"))
    abuse = result["abuse"]
    assert isinstance(abuse, dict)
    assert abuse["denied_allowed"] == {}
    assert abuse["agent_errors"] == 0
    assert abuse["ack_latency_s"]["count"] > 0
    assert all(f.get("published", 0) > 0 for f in abuse["flooded"])
