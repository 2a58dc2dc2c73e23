"""The on-disk tokenization cache: keyed by tokenizer, max_length and the rows."""

from __future__ import annotations

import pytest

from sentisweep.config import DataConfig
from sentisweep.trial.data import load_task_data
from sentisweep.trial.models import get_model_spec
from sentisweep.trial.tokenization import CACHE_STATS, cache_path, tokenize_frame

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_spec("minilm-l6").resolve_tokenizer())


def test_cache_key_and_reuse(data_dir, tmp_path, tokenizer):
    frame = load_task_data(DataConfig(source=str(data_dir))).splits["train"]
    key = "minilm"
    first = tokenize_frame(frame, tokenizer, key, 32, tmp_path)
    assert max(len(ids) for ids in first["input_ids"]) <= 32
    hits, misses = CACHE_STATS["hits"], CACHE_STATS["misses"]
    again = tokenize_frame(frame, tokenizer, key, 32, tmp_path)
    assert CACHE_STATS["hits"] == hits + 1 and CACHE_STATS["misses"] == misses
    assert again["input_ids"].map(list).tolist() == first["input_ids"].map(list).tolist()
    assert again["row_id"].tolist() == frame["row_id"].tolist()
    # other max_length, other rows: other files
    assert cache_path(tmp_path, tokenizer, key, 64, frame) != cache_path(tmp_path, tokenizer, key, 32, frame)
    assert cache_path(tmp_path, tokenizer, key, 32, frame.iloc[1:]) != cache_path(tmp_path, tokenizer, key, 32, frame)


def test_damaged_cache_file_is_rebuilt(data_dir, tmp_path, tokenizer):
    frame = load_task_data(DataConfig(source=str(data_dir))).splits["test"]
    tokenize_frame(frame, tokenizer, "minilm", 16, tmp_path)
    path = cache_path(tmp_path, tokenizer, "minilm", 16, frame)
    path.write_bytes(b"garbage")
    rebuilt = tokenize_frame(frame, tokenizer, "minilm", 16, tmp_path)
    assert len(rebuilt) == len(frame)
    assert not list(path.parent.glob(".*.tmp"))  # no temp files left behind
