"""Tokenize once per (tokenizer, max_length, data fingerprint), cached on disk.

Every trial of a sweep that shares a tokenizer and max_length reads the same cached
Parquet files instead of tokenizing again. Token ids are stored unpadded (truncated to
max_length); padding happens per batch, so no step computes more padding than its
longest row needs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentisweep.storage import write_parquet_atomic

log = logging.getLogger(__name__)

# Per-process counters, so tests and sweeps can see that the cache was used.
CACHE_STATS = {"hits": 0, "misses": 0}


def data_fingerprint(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for column in ("row_id", "text", "label"):
        digest.update(pd.util.hash_pandas_object(frame[column], index=False).values.tobytes())
    return digest.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer, tokenizer_key: str) -> str:
    """Identity of a tokenizer: its source, class and vocabulary (not its object id)."""
    digest = hashlib.sha256(f"{tokenizer_key}|{type(tokenizer).__name__}|{len(tokenizer)}".encode())
    vocab = tokenizer.get_vocab()
    digest.update(repr(sorted(vocab.items())[:: max(1, len(vocab) // 512)]).encode())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str | Path, tokenizer, tokenizer_key: str, max_length: int,
               frame: pd.DataFrame) -> Path:
    key = f"{tokenizer_fingerprint(tokenizer, tokenizer_key)}-L{max_length}-{data_fingerprint(frame)}"
    return Path(cache_dir) / "tokenized" / f"{key}.parquet"


def tokenize_frame(frame: pd.DataFrame, tokenizer, tokenizer_key: str, max_length: int,
                   cache_dir: str | Path) -> pd.DataFrame:
    """row_id, label, input_ids (list of int32) for one split, from the cache when present."""
    path = cache_path(cache_dir, tokenizer, tokenizer_key, max_length, frame)
    if path.is_file():
        try:
            cached = pq.read_table(path).to_pandas()
            CACHE_STATS["hits"] += 1
            return cached
        except Exception as err:  # a damaged cache file is rebuilt, never trusted
            log.warning("tokenization cache %s unreadable (%s): rebuilding", path, err)
    CACHE_STATS["misses"] += 1
    encoded = tokenizer(list(frame["text"]), truncation=True, max_length=max_length)
    table = pa.table({
        "row_id": pa.array(frame["row_id"].tolist(), pa.string()),
        "label": pa.array(frame["label"].tolist(), pa.int64()),
        "input_ids": pa.array(encoded["input_ids"], pa.list_(pa.int32())),
    })
    write_parquet_atomic(table, path)
    return table.to_pandas()
