"""Shared fixtures: small data the tests write themselves, and one cache per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from helpers import SHARED_DATA, synthetic_reviews

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub on these machines; never wait for it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the default cache is the user's (~/.cache/sentisweep): the suite and the commands it starts keep
# one of their own, so they touch only what they made
os.environ.setdefault("SENTISWEEP_CACHE_DIR", tempfile.mkdtemp(prefix="sentisweep-test-cache-"))
if SHARED_DATA.is_dir():  # these machines' copy of the Hub's datasets (data.source: imdb)
    os.environ.setdefault("SENTISWEEP_DATA_MIRROR", str(SHARED_DATA))


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


def pytest_collection_modifyitems(config, items):
    """Every test in exactly one tier, so that `-m unit` is the fast tier and nothing else."""
    wrong = [f"{item.nodeid}: {sorted(tiers) or 'no tier'}" for item in items
             if len(tiers := {m.name for m in item.iter_markers()} & set(TIERS)) != 1]
    if wrong:
        raise pytest.UsageError("each test needs exactly one of the markers " + ", ".join(TIERS) + ":\n  "
                                + "\n  ".join(wrong))
