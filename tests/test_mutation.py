"""The mutation harness (tools/mutation.py) on a small, fast subset.

The full analysis (every misreading on every stream, minutes) writes
tools/results/conformance-mutation.md; here a few misreadings run as plain Python
(NUMBA_DISABLE_JIT=1, no compilation) on small streams made to catch them, each of
which must catch them, and one provably equivalent rewrite must be caught by none.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("mutation", ROOT / "tools" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runner(mutation, tmp_path_factory):
    return mutation.Runner(tmp_path_factory.mktemp("mutation"), jit=False)


def _streams(mutation, numbers: list[str]) -> list:
    by_number = {stream.name.split("-", 1)[0]: stream for stream in mutation.load_suite()}
    return [by_number[number] for number in numbers]


def _mutant(mutation, name: str):
    return next(m for m in mutation.all_mutants() if m.name == name)


def test_catalogue_applies_to_the_decoder(mutation) -> None:
    """Every rewrite's text occurs exactly once in decoder/ and the result parses; at
    least 40 misreadings, each with its spec section and description."""
    assert mutation.check_catalogue() == []
    assert len(mutation.MUTANTS) >= 40
    for mutant in mutation.all_mutants():
        assert mutant.section and mutant.misreading and mutant.rewrites
        assert (mutant.equivalent is None) == (mutant in mutation.MUTANTS)
        assert set(mutant.versions) <= {1, 2}
        # The version-2 misreadings are those of the cross-grid context (v2 5.1, 5.2a, 3.2).
        assert (mutant.versions == (2,)) == mutant.name.startswith("v2-")


# Misreading -> streams (numbers) made to catch it; each of them must.
CAUGHT = {
    "v2-cross-grids-unbounded": ["371", "372", "374"],  # v2: cross_grids > n_grids - 1
    "v2-cross-missing-grid-repeats-coarsest": ["302", "306"],  # C above the coarser grids
    "layer-round-shift-wide": ["050", "053"],  # round_shift overflow: ARM, synthesis
    "ups-round-shift-wide": ["056", "058"],  # round_shift overflow: upsampling
    "chroma-sum-no-wrap": ["060", "063"],
    "chroma-no-plus-2": ["060", "061"],
    "chroma-clip-first": ["061", "064"],
    "header-trailing-data": ["248", "249"],
}


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_misreading_is_caught(mutation, runner, name: str) -> None:
    streams = _streams(mutation, CAUGHT[name])
    result = runner.run(_mutant(mutation, name), streams)
    assert sorted(result.caught_by) == sorted(s.name for s in streams), result.notes


def test_equivalent_rewrite_is_not_caught(mutation, runner) -> None:
    """Wrapping every product of the upsampling sums, not only the sum: no stream may
    tell, not even those whose upsampling sums wrap."""
    streams = _streams(mutation, ["018", "056", "057", "058", "060", "022"])
    result = runner.run(_mutant(mutation, "ups-wrap-each-product"), streams)
    assert result.tried == len(streams)
    assert result.caught_by == [], result.notes


def test_unmutated_copy_passes(mutation, runner) -> None:
    """The harness's own judgement: the unmutated copy catches nothing."""
    streams = _streams(mutation, ["001", "053", "201", "217"])
    outcomes = runner.warm_up(streams)
    assert [s.name for s in streams if outcomes[s.name].caught(s)] == []
