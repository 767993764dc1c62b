"""Write the seed corpus: ``tests/fuzz/corpus/<target>/<digest>``, one file per seed.

The seeds are each target's ``seeds()`` (real objects signed with the world's fixed keys,
and a few edge cases). Run it again after adding a target or changing what an object looks
like: ``python -m tests.fuzz.make_corpus``. It replaces each target's folder whole and
refuses to write more than :data:`MAX_CORPUS_BYTES`.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from tests.fuzz.targets import TARGETS

__all__ = ["CORPUS", "MAX_CORPUS_BYTES", "corpus_files", "main", "seed_files"]

CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_CORPUS_BYTES = 1 << 20


def seed_files() -> dict[str, bytes]:
    """Every seed as ``{"<target>/<sha256 prefix>": bytes}``."""
    return {
        f"{target.name}/{hashlib.sha256(data).hexdigest()[:16]}": data
        for target in TARGETS
        for data in target.seeds()
    }


def corpus_files(target: str) -> list[Path]:
    """The committed seeds of ``target``, in a stable order."""
    folder = CORPUS / target
    return sorted(folder.iterdir()) if folder.is_dir() else []


def main() -> int:
    files = seed_files()
    total = sum(len(data) for data in files.values())
    if total > MAX_CORPUS_BYTES:
        print(f"the corpus would be {total} bytes, over {MAX_CORPUS_BYTES}", file=sys.stderr)
        return 1
    for target in TARGETS:
        shutil.rmtree(CORPUS / target.name, ignore_errors=True)
    for name, data in files.items():
        path = CORPUS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} seeds, {total} bytes, for {len(TARGETS)} targets in {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
