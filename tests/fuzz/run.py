"""Fuzz one target or all of them for a time budget (``make soak``).

    python -m tests.fuzz.run --target bundle --seconds 900
    python -m tests.fuzz.run --target all --seconds 120      # 120 s for each target
    python -m tests.fuzz.run --target bundle --replay tests/fuzz/crashes/bundle-...

With atheris installed (``pip install -e '.[fuzz]'``) each target runs coverage-guided under
libFuzzer, in its own process (libFuzzer runs one target per process), with the
instrumented edgegov code, the committed seed corpus and a working corpus in
``tests/fuzz/work/<target>/`` that grows across runs. Without atheris, the same targets run
under the seeded mutation driver of :mod:`tests.fuzz.mutate` (not coverage-guided).

Any input that breaks the property (see :mod:`tests.fuzz.targets`) is written to
``tests/fuzz/crashes/<target>-<sha1>`` with its traceback beside it (``.txt``). The summary
names, per target: executions, coverage (libFuzzer's ``cov``: edges; ``ft``: features) and
findings. The exit status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

__all__ = ["main"]

HERE = Path(__file__).resolve().parent
CRASHES = HERE / "crashes"
WORK = HERE / "work"
MAX_LEN = 64 * 1024
"""Longest input libFuzzer builds: above every seed, far below the decoders' own limits."""
INPUT_TIMEOUT_S = 10
"""An input that takes longer than this is a finding (a decoder that can be made to hang)."""

_STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)")
_EXECS = re.compile(r"stat::number_of_executed_units: (\d+)")


@dataclass
class Outcome:
    """What one target's run did."""

    target: str
    executions: int = 0
    coverage: str = "n/a"
    findings: int = 0
    engine: str = ""

    def line(self) -> str:
        return (
            f"{self.target:<20} {self.engine:<9} {self.executions:>10} execs  "
            f"cov {self.coverage:<18} findings {self.findings}"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.atheris_child:
        # Before anything imports edgegov: atheris instruments modules as they are imported.
        _atheris_child(args.target, args.seconds)
        return 0
    from tests.fuzz.targets import TARGETS, by_name

    names = [t.name for t in TARGETS] if args.target == "all" else [by_name(args.target).name]
    if args.replay is not None:
        return _replay(args.target, args.replay)
    engine = "mutation" if args.no_atheris or not _has_atheris() else "atheris"
    CRASHES.mkdir(exist_ok=True)
    outcomes = []
    for name in names:
        run = _run_atheris if engine == "atheris" else _run_mutation
        outcome = run(name, args.seconds, args.seed)
        outcome.engine = engine
        print(outcome.line(), flush=True)
        outcomes.append(outcome)
    found = sum(o.findings for o in outcomes)
    print(f"{len(outcomes)} target(s), {found} finding(s); crashing inputs in {CRASHES}")
    return 1 if found else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--target", default="all", help="a target name, or 'all' (default)")
    parser.add_argument("--seconds", type=float, default=60.0, help="budget per target")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutation driver")
    parser.add_argument("--no-atheris", action="store_true", help="the mutation driver only")
    parser.add_argument("--replay", type=Path, help="run one input and show what it raises")
    parser.add_argument("--atheris-child", action="store_true", help=argparse.SUPPRESS)
    return parser


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# --- atheris (coverage-guided, libFuzzer) ----------------------------------------------------


def _run_atheris(name: str, seconds: float, seed: int) -> Outcome:
    before = set(CRASHES.iterdir())
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.run",
        "--atheris-child",
        "--target",
        name,
        "--seconds",
        str(seconds),
    ]
    log = WORK / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    text = log.read_text(errors="replace")
    outcome = Outcome(name)
    statuses = _STATUS.findall(text)
    if statuses:
        executions, edges, features = statuses[-1]
        outcome.executions = int(executions)
        outcome.coverage = f"{edges} edges/{features} ft"
    executed = _EXECS.findall(text)
    if executed:
        outcome.executions = int(executed[-1])
    new = sorted(set(CRASHES.iterdir()) - before)
    for path in new:
        if path.suffix != ".txt":
            path.with_name(path.name + ".txt").write_text(_tail(text))
    outcome.findings = len([p for p in new if p.suffix != ".txt"])
    return outcome


def _tail(text: str) -> str:
    """The traceback part of a libFuzzer log."""
    start = text.rfind("=== Uncaught Python exception")
    return text[start:] if start >= 0 else text[-4000:]


def _atheris_child(name: str, seconds: float) -> None:
    import atheris

    with atheris.instrument_imports(include=["edge_agent", "hub", "tests.fuzz"]):
        from tests.fuzz.make_corpus import CORPUS
        from tests.fuzz.targets import by_name

    target = by_name(name)
    target.seeds()
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-max_total_time={max(1, int(seconds))}",
        f"-max_len={MAX_LEN}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-artifact_prefix={CRASHES}/{name}-",
        "-print_final_stats=1",
        f"-dict={HERE / 'cbor.dict'}",
    ]
    atheris.Setup([sys.argv[0], *flags, str(work), str(CORPUS / name)], target.check)
    atheris.Fuzz()


# --- the mutation driver (no atheris) --------------------------------------------------------


def _run_mutation(name: str, seconds: float, seed: int) -> Outcome:
    from tests.fuzz.make_corpus import corpus_files
    from tests.fuzz.mutate import mutate
    from tests.fuzz.targets import by_name

    target = by_name(name)
    seeds = [path.read_bytes() for path in corpus_files(name)] or [b""]
    rng = random.Random(f"{seed}/{name}")
    outcome = Outcome(name)
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            data = mutate(rng.choice(seeds), rng, seeds)
            outcome.executions += 1
            try:
                target.check(data)
            except Exception:
                where = _where(traceback.format_exc())
                if where not in seen:
                    seen.add(where)
                    _save(name, data, traceback.format_exc())
                    outcome.findings += 1
    return outcome


def _where(text: str) -> str:
    """A crash's identity: its exception line and the innermost frame."""
    lines = text.strip().splitlines()
    frames = [line for line in lines if line.lstrip().startswith("File ")]
    return f"{frames[-1] if frames else ''} {lines[-1].split(':')[0] if lines else ''}"


def _save(name: str, data: bytes, text: str) -> Path:
    path = CRASHES / f"{name}-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    path.with_name(path.name + ".txt").write_text(text)
    return path


def _replay(name: str, path: Path) -> int:
    from tests.fuzz.targets import by_name

    target = by_name(name)
    try:
        target.check(path.read_bytes())
    except Exception:
        traceback.print_exc()
        return 1
    print(f"{path}: {name} holds its property on this input")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        os.environ.setdefault("PYTHONHASHSEED", "0")
        sys.exit(main())
