"""The quick fuzz pass of ``make test``: every target, a bounded deterministic run.

Each target gets its seed corpus as it stands, then mutated seeds and random bytes drawn by
Hypothesis with a fixed seed (``derandomize``), so a regression in any decoder shows up in CI
with the same input every time. The long, coverage-guided runs are ``python -m
tests.fuzz.run`` (``make soak``). See docs/reliability.md.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import run
from tests.fuzz.make_corpus import CORPUS, corpus_files
from tests.fuzz.mutate import mutate
from tests.fuzz.targets import TARGETS, Target, by_name
from tests.fuzz.world import world

EXAMPLES = 150
"""Mutated inputs per target; with the random-bytes run, about 200 inputs each."""

QUICK = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_IDS = [target.name for target in TARGETS]


@pytest.mark.parametrize("target", TARGETS, ids=_IDS)
def test_every_seed_in_the_corpus_decodes_to_a_value_or_our_error(target: Target) -> None:
    files = corpus_files(target.name)
    assert files, f"no seed corpus for {target.name}: run python -m tests.fuzz.make_corpus"
    for path in files:
        target.check(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS, ids=_IDS)
def test_mutated_seeds_decode_to_a_value_or_our_error(target: Target) -> None:
    seeds = [path.read_bytes() for path in corpus_files(target.name)]

    @QUICK
    @given(seed=st.sampled_from(seeds), rng=st.randoms(use_true_random=False))
    def mutated(seed: bytes, rng: object) -> None:
        target.check(mutate(seed, rng, seeds))  # type: ignore[arg-type]

    mutated()


@pytest.mark.parametrize("target", TARGETS, ids=_IDS)
def test_random_bytes_decode_to_a_value_or_our_error(target: Target) -> None:
    @settings(QUICK, max_examples=EXAMPLES // 3)
    @given(data=st.binary(max_size=512))
    def random_bytes(data: bytes) -> None:
        target.check(data)

    random_bytes()


def test_every_corpus_folder_belongs_to_a_target() -> None:
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(_IDS)


def test_a_verified_payload_the_world_never_signed_is_a_finding() -> None:
    """The oracle of the raw signed targets: a verifier that let a new payload through
    would fail here (a validly signed bundle the seeds do not hold stands in for it)."""
    unsigned_by_the_world = world().hub.bundle(9)
    with pytest.raises(AssertionError, match="nobody signed"):
        by_name("bundle").check(unsigned_by_the_world)


def test_the_runner_fuzzes_a_target_for_its_budget_and_reports_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run.main(["--target", "lineage-entry", "--seconds", "0.2", "--no-atheris"]) == 0
    report = capsys.readouterr().out
    assert "lineage-entry" in report and "findings 0" in report
