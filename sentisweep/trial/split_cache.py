"""The selected splits of a local data source, cached on disk per data config.

Why: every trial of a sweep runs in its own process and would otherwise re-read the whole
source (50,000 IMDb reviews), clean it and draw the same stratified subsets again (about
1 s, plus importing scikit-learn) only to keep a few thousand rows. The key covers every
data setting and each source file's size and modification time, so an edited file or a
changed setting is a miss, never a stale hit. Hub sources are not cached here (the
`datasets` library caches them); neither is an aclImdb folder (100,000 files to stat).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentisweep.config import DataConfig
from sentisweep.storage import write_parquet_atomic

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when load_task_data's selection changes: old entries become misses
META_KEY = b"sentisweep_splits"
SPLIT_CACHE_STATS = {"hits": 0, "misses": 0}  # per process, for tests


def cache_file(cfg: DataConfig, files: list[Path] | None) -> Path | None:
    """Where these settings' splits of these source files are kept; None for no files."""
    if not files:
        return None
    settings = cfg.model_dump(mode="json", exclude={"cache_dir"})
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, settings, stats], sort_keys=True).encode()).hexdigest()[:20]
    return Path(cfg.cache_dir) / "splits" / f"{key}.parquet"


def read(path: Path | None) -> tuple[dict[str, pd.DataFrame], list[str], list[str]] | None:
    """(splits, label_names, report) from the cache, or None (absent or unreadable)."""
    if path is None or not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[META_KEY])
        frame = table.to_pandas()
    except Exception as err:  # a damaged entry is rebuilt, never trusted
        log.warning("split cache %s unreadable (%s): rebuilding", path, err)
        return None
    SPLIT_CACHE_STATS["hits"] += 1
    splits = {name: frame[frame["split"] == name].drop(columns="split").reset_index(drop=True)
              for name in meta["splits"]}
    return splits, meta["label_names"], meta["report"] + [f"splits read from the cache {path.name}"]


def write(path: Path | None, splits: dict[str, pd.DataFrame], label_names: list[str], report: list[str]) -> None:
    if path is None:
        return
    SPLIT_CACHE_STATS["misses"] += 1
    frame = pd.concat([part.assign(split=name) for name, part in splits.items()], ignore_index=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {"splits": list(splits), "label_names": label_names, "report": report}
    write_parquet_atomic(table.replace_schema_metadata({META_KEY: json.dumps(meta)}), path)
