"""The on-disk tokenization cache: keyed by tokenizer, max_length and the rows."""

from __future__ import annotations

import pytest

from sentisweep.config import DataConfig
from sentisweep.trial.data import load_task_data
from sentisweep.trial.models import get_model_spec
from sentisweep.trial.tokenization import CACHE_STATS, cache_path, encode, tokenize_frame

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


LONG = " ".join(f"word{i}" for i in range(300)) + " in the end it was wonderful"


def test_tail_and_head_tail_keep_the_end_inside_the_special_tokens(tokenizer):
    body = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    (head,) = encode([LONG], tokenizer, 32, "head")
    (tail,) = encode([LONG], tokenizer, 32, "tail")
    (both,) = encode([LONG], tokenizer, 32, "head+tail", head_share=0.25)
    assert head == [cls, *body[:30], sep]  # 32 - [CLS] - [SEP] = 30 kept
    assert tail == [cls, *body[-30:], sep]
    assert both == [cls, *body[:8], *body[-22:], sep]  # round(30 x 0.25) = 8 from the start
    assert "wonderful" in tokenizer.decode(tail) and "wonderful" not in tokenizer.decode(head)
    short = "a short review"
    assert encode([short], tokenizer, 32, "tail") == encode([short], tokenizer, 32, "head")  # nothing to cut


def test_truncation_is_part_of_the_cache_key(data_dir, tmp_path, tokenizer):
    frame = load_task_data(DataConfig(source=str(data_dir))).splits["train"]
    paths = {cache_path(tmp_path, tokenizer, "minilm", 16, frame, mode, share)
             for mode, share in (("head", 0.25), ("tail", 0.25), ("head+tail", 0.25), ("head+tail", 0.5))}
    assert len(paths) == 4
    # the head's key is the one it always had; head_share changes nothing for head or tail
    assert cache_path(tmp_path, tokenizer, "minilm", 16, frame) == cache_path(
        tmp_path, tokenizer, "minilm", 16, frame, "head", 0.7)
    tail = tokenize_frame(frame, tokenizer, "minilm", 16, tmp_path, "tail")
    head = tokenize_frame(frame, tokenizer, "minilm", 16, tmp_path, "head")
    lengths = [len(ids) for ids in tokenizer(list(frame["text"]), add_special_tokens=False)["input_ids"]]
    cut = [i for i, length in enumerate(lengths) if length > 14]  # longer than 16 - [CLS] - [SEP]
    assert cut and all(list(tail["input_ids"][i]) != list(head["input_ids"][i]) for i in cut)
