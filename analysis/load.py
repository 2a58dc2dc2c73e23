"""Read one or more results stores into one DataFrame (sentisweep.results.read_results)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from sentisweep.results import ResultsError, read_results

__all__ = ["ResultsError", "load_results", "read_predictions", "split_by_status"]


def load_results(locations: list[str | Path]) -> pd.DataFrame:
    """Every row, once: a trial read twice (the same sweep and trial id in two of the files
    given, e.g. a store and a copy of its table) counts once, the last read, and says so."""
    results = read_results(*locations)
    duplicated = results.duplicated(subset=["sweep", "trial_id"], keep="last")
    if duplicated.any():
        print(f"note: {int(duplicated.sum())} rows read twice (same sweep and trial id) counted once: "
              f"{sorted(results.loc[duplicated, 'trial_id'])[:5]}", file=sys.stderr)
    return results[~duplicated].reset_index(drop=True)


def split_by_status(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ok rows, every other row). Only ok rows are ever averaged."""
    ok = results["status"] == "ok"
    return results[ok].copy(), results[~ok].copy()


def read_predictions(path) -> pd.DataFrame | None:
    """A trial's predictions.parquet (a local path or a URI), or None where it has none."""
    if not isinstance(path, str) or not path:
        return None
    if "://" in path:
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        fs, inner = pafs.FileSystem.from_uri(path)
        return pq.read_table(inner, filesystem=fs).to_pandas()
    return pd.read_parquet(path) if Path(path).is_file() else None
