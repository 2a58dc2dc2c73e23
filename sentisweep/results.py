"""TrialResult: one row per trial, whatever happened, and its Parquet storage."""

from __future__ import annotations

import dataclasses
import json
import platform
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentisweep.storage import write_parquet_atomic

STATUSES = ("ok", "failed", "skipped", "stopped")  # stopped: ended early by a search scheduler
PACKAGES = ("sentisweep", "torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes",
            "scikit-learn", "xgboost", "pyarrow", "ray", "optuna")


@dataclass
class TrialResult:
    # identity
    sweep: str
    trial_id: str
    model: str
    method: str
    seed: int
    status: str = "ok"
    error: str | None = None
    error_type: str | None = None
    # hyperparameters (flat copies of the config, for filtering in pandas)
    learning_rate: float | None = None
    epochs: float | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    gradient_accumulation: int | None = None
    max_length: int | None = None
    weight_decay: float | None = None
    warmup_ratio: float | None = None
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    placement: str | None = None
    method_params: str | None = None  # JSON of the method's resolved parameters
    data_source: str | None = None
    train_rows: int | None = None
    validation_rows: int | None = None
    test_rows: int | None = None
    # quality (test split)
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    eval_loss: float | None = None
    tn: int | None = None
    fp: int | None = None
    fn: int | None = None
    tp: int | None = None
    best_val_accuracy: float | None = None
    best_epoch: float | None = None
    # cost
    train_seconds: float | None = None
    eval_seconds: float | None = None
    train_samples_per_second: float | None = None
    train_tokens_per_second: float | None = None
    eval_samples_per_second: float | None = None
    train_tokens: int | None = None
    padding_fraction: float | None = None  # padded positions / all positions in training batches
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None  # cuda_max_allocated | host_rss_sampled
    peak_memory_reserved_bytes: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_percent: float | None = None
    adapter_bytes: int | None = None
    torch_threads: int | None = None
    # provenance
    device: str | None = None
    device_name: str | None = None
    precision_mode: str | None = None
    hostname: str | None = None
    git_commit: str | None = None
    versions: str | None = None  # JSON {package: version}
    start_time: str | None = None
    end_time: str | None = None
    config_json: str | None = None
    # paths, relative to the trial's output folder's parent when possible
    output_dir: str | None = None
    checkpoint_path: str | None = None
    predictions_path: str | None = None
    history_path: str | None = None

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _arrow_type(annotation: str) -> pa.DataType:
    base = annotation.replace(" | None", "")
    return {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}[base]


SCHEMA = pa.schema([pa.field(f.name, _arrow_type(f.type)) for f in dataclasses.fields(TrialResult)])


def results_table(results: list[TrialResult]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in results], schema=SCHEMA)


def write_results(results: list[TrialResult], path: str | Path) -> Path:
    path = Path(path)
    write_parquet_atomic(results_table(results), path)
    return path


def result_files(path: str | Path) -> list[Path]:
    """A results file, or every table in a folder: each sweep's results.parquet, plus the
    trial result.parquet files no table covers (a folder holds both a sweep's table and each
    trial's own row; reading both would count every trial twice)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    tables = sorted(path.rglob("results.parquet"))
    covered = {table.parent for table in tables}
    trials = [f for f in sorted(path.rglob("result.parquet"))
              if not any(parent in covered for parent in f.parents)]
    return tables + trials


def read_results(path: str | Path) -> pd.DataFrame:
    """Load a results file (or a folder of them) as a DataFrame, checking the schema."""
    files = result_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no result.parquet or results.parquet inside")
    frames = []
    for file in files:
        table = pq.read_table(file)
        missing = [name for name in SCHEMA.names if name not in table.schema.names]
        if missing:
            raise ValueError(f"{file}: not a sentisweep results file; missing columns {missing[:8]}")
        frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout sentisweep runs from, with '+dirty' for local changes."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict[str, Any]:
    return {"versions": json.dumps(package_versions(), sort_keys=True), "git_commit": git_commit(),
            "hostname": socket.gethostname(), "start_time": now_iso()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # a timeline of short trials
