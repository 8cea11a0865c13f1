"""The tiers of tests/conftest.py: a test's markers follow from its fixtures, and a bare `pytest` leaves out
the slow and engine tests that `--runslow` (what `make test` and CI pass) runs."""

from __future__ import annotations

from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = """
import pytest

@pytest.fixture
def pruned(ray_local):
    pass

def test_plain(): pass
def test_with_ray(ray_local): pass
def test_through_a_fixture(pruned): pass
def test_on_a_cluster(two_node_cluster): pass
def test_vllm_installed(vllm): pass
def test_vllm_engine(vllm_engine): pass
"""


def _selected(pytester, *args) -> set[str]:
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", *args)
    return {line.split("::")[1] for line in result.outlines if "::" in line}


def test_bare_pytest_runs_the_fast_tier_and_runslow_everything(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_tiers_example=TESTS)
    assert _selected(pytester) == {"test_plain", "test_vllm_installed"}
    everything = {"test_plain", "test_with_ray", "test_through_a_fixture", "test_on_a_cluster", "test_vllm_installed",
                  "test_vllm_engine"}
    assert _selected(pytester, "--runslow") == everything
    assert _selected(pytester, "--runslow", "-m", "slow") == {"test_with_ray", "test_through_a_fixture",
                                                              "test_on_a_cluster"}
    assert _selected(pytester, "--runslow", "-m", "engine") == {"test_vllm_engine"}
    assert _selected(pytester, "--runslow", "-m", "needs_vllm") == {"test_vllm_installed", "test_vllm_engine"}
