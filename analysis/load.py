"""Read one or more results stores into one DataFrame, checking the schema."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from sentisweep.results import SCHEMA, STATUSES
from sentisweep.results import result_files as stored_result_files


class ResultsError(ValueError):
    """A results input that cannot be analysed; the message says which file and why."""


def result_files(location: str | Path) -> list[Path]:
    """A results.parquet, a store folder holding one, or a folder of trial result.parquet files."""
    path = Path(location)
    if not path.exists():
        raise ResultsError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    table = path / "results.parquet"
    if table.is_file():
        return [table]
    files = stored_result_files(path)
    if not files:
        raise ResultsError(f"{path}: no results.parquet or result.parquet inside; point at a sweep's "
                           "storage folder (<storage>/<name>) or its results.parquet")
    return files


def load_results(locations: list[str | Path]) -> pd.DataFrame:
    frames = []
    for location in locations:
        for file in result_files(location):
            try:
                table = pq.read_table(file)
            except Exception as err:
                raise ResultsError(f"{file}: not a readable Parquet file ({err})") from None
            missing = [name for name in ("trial_id", "model", "method", "seed", "status", "accuracy")
                       if name not in table.schema.names]
            if missing:
                raise ResultsError(f"{file}: not a sentisweep results table; missing columns {missing} "
                                   f"(it has {table.schema.names[:8]}...)")
            frame = table.to_pandas()
            for column in SCHEMA.names:  # older rows: absent columns read as missing values
                if column not in frame:
                    frame[column] = None
            frame["source_file"] = str(file)
            frames.append(frame)
    results = pd.concat(frames, ignore_index=True)
    unknown = sorted(set(results["status"]) - set(STATUSES))
    if unknown:
        raise ResultsError(f"status values {unknown} are not any of {STATUSES}")
    results = results.drop_duplicates(subset=["sweep", "trial_id"], keep="last")
    results["variant"] = variant_names(results)
    return results.reset_index(drop=True)


def variant_names(results: pd.DataFrame) -> pd.Series:
    """The method variant of each row: the middle part of `model__variant__sSEED` trial ids
    (sweeps), else the method name."""
    parts = results["trial_id"].astype(str).str.split("__")
    return pd.Series([p[1] if len(p) >= 3 else m for p, m in zip(parts, results["method"], strict=True)],
                     index=results.index)


def split_by_status(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ok rows, every other row). Only ok rows are ever averaged."""
    ok = results["status"] == "ok"
    return results[ok].copy(), results[~ok].copy()
