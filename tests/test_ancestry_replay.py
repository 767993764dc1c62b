"""``log replay`` re-decides decisions that cited a parent exactly, from the recorded facts."""

from __future__ import annotations

import time
from pathlib import Path

from edge_agent.agent import LocalAgent
from edge_agent.directory_file import DIRECTORY_FILE
from edge_agent.lineage.replay import replay
from edge_agent.lineage.store import LINEAGE_DB, LineageStore
from edge_agent.protocol.lineage_entries import decode_entry
from tests.test_ancestry_agent import CHILD, Fleet


def test_replay_re_decides_parent_entries_from_their_recorded_facts(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path / "state")
    with LocalAgent.open(fleet.state_dir) as agent:
        agent.install_directory(fleet.directory(1), fleet.wall)
        wall = int(time.time())
        reasons = [
            agent.decide(CHILD, wall, parent=fleet.camera_receipt()).reason,
            agent.decide(CHILD, wall).reason,
            agent.decide(CHILD, wall, parent=fleet.camera_receipt(age=31)).reason,
            agent.decide(CHILD, wall, parent=b"forged").reason,
        ]
    assert reasons == ["allowed", "parent_missing", "parent_invalid", "parent_invalid"]
    # Replay needs no directory: the facts are in the entries.
    (fleet.state_dir / DIRECTORY_FILE).unlink()
    store = LineageStore.open(fleet.state_dir / LINEAGE_DB)
    try:
        cited = [
            decode_entry(data).request for _, data, _ in store.iter_rows(0, "kind = 'decision'", [])
        ]
        report = replay(fleet.state_dir, store, None)
    finally:
        store.close()
    assert sum(1 for r in cited if r is not None and r.parent is not None) == 3
    assert report.divergences == ()
    assert (report.replayed, report.skipped) == (4, 0)
