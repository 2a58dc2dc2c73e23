"""Shared fixtures: small data the tests write themselves, and one cache per session."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub on these machines; never wait for it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_IMDB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imdb"

_POSITIVE = ["great", "wonderful", "moving", "brilliant", "funny", "superb", "loved"]
_NEGATIVE = ["awful", "boring", "dull", "terrible", "weak", "hated", "clumsy"]
_FILLER = ["the", "film", "plot", "actors", "story", "scene", "was", "and", "a", "movie", "ending"]


def synthetic_reviews(n: int, seed: int) -> pd.DataFrame:
    """Balanced reviews of varied length whose label follows their sentiment words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(_FILLER) for _ in range(rng.randint(4, 40))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words)), rng.choice(_POSITIVE if label else _NEGATIVE))
        rows.append({"text": " ".join(words) + ("<br /><br />the end" if i % 5 == 0 else ""), "label": label})
    return pd.DataFrame(rows)


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


def tiny_trial(model: str, method: str | dict, data_dir: Path, cache_dir: Path, out: Path, **training) -> dict:
    """A raw trial config that trains a few steps on the synthetic data."""
    return {
        "model": model, "method": method, "seed": 7, "output_dir": str(out),
        "data": {"source": str(data_dir), "train_size": 64, "eval_size": 16, "test_size": 32,
                 "cache_dir": str(cache_dir)},
        "training": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "max_length": 64,
                     "learning_rate": 1e-3, "logging_steps": 1, **training},
    }


def write_config(path: Path, config: dict, command: str) -> Path:
    """A test's own config file, opening with the command that runs it, as the shipped ones do."""
    import yaml

    path.write_text(f"# {command}\n" + yaml.safe_dump(config))
    return path
