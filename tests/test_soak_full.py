"""The full-size reliability runs behind ``make soak`` (the ``soak`` marker): never part of
``make test`` or ``make test-slow``.

- the fuzz suite (docs/reliability.md), every target for ``EDGEGOV_FUZZ_SECONDS`` each
  (default 116 s: an hour over its 31 targets), coverage-guided under atheris;
- the fleet soak: 1,000 agents on Mosquitto for 10 minutes (bench/soak.py --check: RSS
  slope after warm-up under 1 MB per 10 minutes per hub/broker process and per agent,
  nothing lost, no error or traceback logged, no allowed request denied);
- the load-and-abuse run: 100 honest agents while an intruder and a compromised device
  flood for 2 minutes (bench/abuse.py --check: honest ack p99 <= 2 s, hub RSS <= 200 MB,
  hub.db growth from the abuse <= 1 MB, no honest device denied).

Each writes its figures to ``soak-results/`` in the checkout (JSON, and the fuzz summary).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.brokers import require_mosquitto

pytestmark = pytest.mark.soak

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "soak-results"
FUZZ_SECONDS = int(os.environ.get("EDGEGOV_FUZZ_SECONDS", "116"))


def _run(*args: str, log: str, timeout: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / log).open("w") as out:
        done = subprocess.run(
            [sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        )
    text = (RESULTS / log).read_text()
    print(text[-4000:])
    assert done.returncode == 0, f"{args[0]} missed its bar; see {RESULTS / log}"


@pytest.mark.timeout(FUZZ_SECONDS * 40 + 600)
def test_every_decoder_fuzzed_for_its_budget_finds_nothing() -> None:
    _run(
        *("-m", "tests.fuzz.run", "--target", "all", "--seconds", str(FUZZ_SECONDS)),
        log="fuzz.txt",
        timeout=FUZZ_SECONDS * 40 + 300,
    )


@pytest.mark.timeout(1800)
def test_a_thousand_agents_for_ten_minutes_hold_the_soak_bar() -> None:
    require_mosquitto()
    _run(
        "bench/soak.py",
        *("--agents", "1000", "--minutes", "10", "--check"),
        *("--json", str(RESULTS / "soak.json")),
        log="soak.txt",
        timeout=1700,
    )


@pytest.mark.timeout(1200)
def test_a_two_minute_flood_leaves_honest_agents_within_their_targets() -> None:
    _run(
        "bench/abuse.py",
        *("--agents", "100", "--seconds", "120", "--check"),
        *("--json", str(RESULTS / "abuse.json")),
        log="abuse.txt",
        timeout=1100,
    )
