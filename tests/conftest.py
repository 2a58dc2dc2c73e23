"""Shared fixtures: small data the tests write themselves, and one cache per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import NOT_INSTALLED, SHARED_DATA, synthetic_reviews

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub on these machines; never wait for it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the default cache is the user's (~/.cache/sentisweep): the suite and the commands it starts keep
# one of their own, so they touch only what they made
if "SENTISWEEP_CACHE_DIR" not in os.environ:  # and removed at the end: each run left one in /tmp
    os.environ["SENTISWEEP_CACHE_DIR"] = tempfile.mkdtemp(prefix="sentisweep-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SENTISWEEP_CACHE_DIR"], ignore_errors=True)
if SHARED_DATA.is_dir():  # these machines' copy of the Hub's datasets (data.source: imdb)
    os.environ.setdefault("SENTISWEEP_DATA_MIRROR", str(SHARED_DATA))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores (`-n 2`, as .ci/run). Ray's raylet starts its workers at nice
    # 15, and beside the other worker's in-process training at nice 0 a trial gets ~3% of a core
    # (CFS weights 36 against 1024): a resumed search's trial sat in its imports for 900 s. The
    # Rays this worker starts give their workers the default priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # and one torch thread for the tests run in this process: two workers of two threads each on
    # two cores keep OpenMP's threads waiting on each other
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reviews")
    synthetic_reviews(160, seed=1).to_parquet(folder / "train.parquet")
    synthetic_reviews(48, seed=2).to_parquet(folder / "test.parquet")
    return folder


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Tokenization and tiny-model cache shared by the whole session, as a sweep shares it."""
    return tmp_path_factory.mktemp("cache")


TIERS = ("unit", "integration", "ray", "gpu", "cluster", "container")


def pytest_addoption(parser):
    parser.addoption("--all-tiers", action="store_true",
                     help="run every tier (what .ci/run does); without it and without -m, only the fast unit tier")


def pytest_collection_modifyitems(config, items):
    """Every test in exactly one tier. A bare `python -m pytest` runs the fast tier (unit: in-process,
    no subprocess Ray, no root, no container); `--all-tiers` runs them all, `-m` chooses, and
    tests named by file or node id run as named."""
    wrong = [f"{item.nodeid}: {sorted(tiers) or 'no tier'}" for item in items
             if len(tiers := {m.name for m in item.iter_markers()} & set(TIERS)) != 1]
    if wrong:
        raise pytest.UsageError("each test needs exactly one of the markers " + ", ".join(TIERS) + ":\n  "
                                + "\n  ".join(wrong))
    # tests named on the command line (a file, a node id) run whatever their tier
    named = config.args_source == pytest.Config.ArgsSource.ARGS
    if config.getoption("--all-tiers") or config.option.markexpr or named:
        return
    slower = [item for item in items if item.get_closest_marker("unit") is None]
    if slower:
        config.hook.pytest_deselected(items=slower)
        items[:] = [item for item in items if item.get_closest_marker("unit") is not None]
        config._sentisweep_slower = len(slower)


# One rule for "installed here, so the test must run": a test skips for a missing tool with
# helpers.not_installed(...); where .ci/run installed the tools (SENTISWEEP_REQUIRE_INSTALLED=1)
# such a skip is a failure, so a missing install step cannot hide behind a green run.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SENTISWEEP_REQUIRE_INSTALLED") and NOT_INSTALLED in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"{report.longrepr}\n(.ci/run installs this tool: SENTISWEEP_REQUIRE_INSTALLED is set)"


def pytest_terminal_summary(terminalreporter, config):
    if getattr(config, "_sentisweep_slower", 0):
        terminalreporter.write_line(f"the fast tier only: {config._sentisweep_slower} tests of the slower tiers "
                                    "(integration, ray, gpu, cluster, container) deselected; run every tier with "
                                    "`python -m pytest --all-tiers` (as .ci/run does)")
