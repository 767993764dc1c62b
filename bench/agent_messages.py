"""CPU one running agent spends on each freshness token and revocation it is sent.

What ``bench/fleet.py`` showed to fill its agent workers (docs/performance-profile.md,
"Phase 2"), measured in one process without a broker: an enrolled agent with a bundle is
handed, through :meth:`AgentDaemon.handle` exactly as its MQTT session would, ``--messages``
freshness tokens pinning its bundle (the hub's time 5 s apart, as the bench's
``--freshness-interval``), then as many revocations of other devices (each a new epoch: a
verification and a non-durable write, as for the revocations of the fleet's other devices a
group or region topic brings), and lastly the once-a-second clock check as many times.
Process CPU time, so the figure holds up on a machine other work keeps busy; every payload is
signed before the clock starts. Prints JSON: microseconds of CPU per message, each kind.

    python bench/agent_messages.py --messages 400
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from edge_agent.agent import LocalAgent, init_state_dir  # noqa: E402
from edge_agent.support.mqtt import BrokerSettings, Incoming  # noqa: E402
from edge_agent.sync.config import SyncConfig  # noqa: E402
from edge_agent.sync.daemon import AgentDaemon  # noqa: E402
from tests.factory import DEVICE, NOW, HubSim  # noqa: E402

BASE = "edgegov/v1/eu-1"
TOKEN_INTERVAL_S = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400, help="of each kind")
    args = parser.parse_args()
    print(json.dumps(measure(args.messages)))


def measure(count: int) -> dict[str, float]:
    hub = HubSim()
    bundle = hub.bundle()
    tokens = [
        hub.freshness(bundle, hub_time=NOW + TOKEN_INTERVAL_S * i, ttl=600)
        for i in range(1, count + 1)
    ]
    revocations = [
        hub.revocation(epoch, value=f"gw-{epoch:06d}", issued_at=NOW)
        for epoch in range(1, count + 1)
    ]
    clock = [NOW]
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        init_state_dir(state_dir, DEVICE, hub.root_bytes(), NOW)
        with LocalAgent.open(state_dir) as agent:
            daemon = AgentDaemon(
                agent, BrokerSettings("127.0.0.1", 1), SyncConfig(), wall=lambda: clock[0]
            )
            daemon.handle(Incoming(f"{BASE}/bundle/group/line-a", bundle, retain=True))

            def fresh(i: int) -> None:
                clock[0] = NOW + TOKEN_INTERVAL_S * (i + 1)
                daemon.handle(Incoming(f"{BASE}/fresh/group/line-a", tokens[i], retain=True))

            def revoke(i: int) -> None:
                daemon.handle(Incoming(f"{BASE}/revoke/group/line-a", revocations[i], retain=True))

            def tick(i: int) -> None:
                clock[0] += 1
                daemon.check_clock()

            figures = {
                "fresh_us": _cpu_per_call(fresh, count),
                "revoke_us": _cpu_per_call(revoke, count),
                "clock_check_us": _cpu_per_call(tick, count),
            }
            assert agent.state.fresh_time == NOW + TOKEN_INTERVAL_S * count, "a token was lost"
            assert len(agent.state.revocations) == 0, "another device's revocation was kept"
    return figures


def _cpu_per_call(call: object, count: int) -> float:
    assert callable(call)
    started = time.process_time()
    for i in range(count):
        call(i)
    return round((time.process_time() - started) / count * 1e6, 1)


if __name__ == "__main__":
    main()
