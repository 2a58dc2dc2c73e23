"""TrialResult: one row per trial, whatever happened; its Parquet files and the one reader.

A trial's folder holds `result.parquet` (its row) and `sentisweep_trial.json` beside its
checkpoint (what predict, export and the embedder need to use it alone). A sweep's folder
holds `results.parquet`, every trial's row. `read_results` reads either, or a folder of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentisweep.exit_codes import BadInput
from sentisweep.layout import (
    RESULT_FILE,
    RESULTS_TABLE,
    TRIAL_INFO_FILE,
    TUNING_FOLDER,
    attempts_parts,
    trial_parts,
)
from sentisweep.storage import Store, write_parquet_atomic

if TYPE_CHECKING:
    from sentisweep.plan import PlannedTrial

BASELINE_MODEL = "tfidf"  # the `model` of a classical baseline's row (probe/baselines.py), never a searched trial
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
    variant: str | None = None  # the method variant's label in its sweep (e.g. lora-r8-attention)
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
    train_steps: int | None = None  # optimizer steps taken (a trial a scheduler stopped: steps until then)
    padding_fraction: float | None = None  # padded positions / all positions in training batches
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None  # cuda_max_allocated | host_rss_peak (kernel VmHWM) | host_rss_sampled
    peak_memory_reserved_bytes: int | None = None
    memory_growth_bytes: int | None = None  # CPU: the host RSS the trial added (peak - at its start)
    memory_estimate_bytes: int | None = None  # the planner's peak of the allocator (trial/memory.py)
    gpu_memory_cap_bytes: int | None = None  # a shared GPU: this trial's CUDA memory cap (training.gpu_share)
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_percent: float | None = None
    adapter_bytes: int | None = None
    torch_threads: int | None = None
    onednn_linears: int | None = None  # CPU: linears whose matmuls ran through oneDNN (training.onednn_linears)
    uniform_dropouts: int | None = None  # CPU: dropouts whose masks came from torch.rand (training.uniform_dropout)
    gradient_checkpointing: int | None = None  # 1 when activations were recomputed (less memory, more time)
    # provenance
    device: str | None = None
    device_name: str | None = None
    precision_mode: str | None = None
    hostname: str | None = None
    resumed_from_step: int | None = None  # a resumable trial started again: the checkpoint's optimizer step
    tuned_from: str | None = None  # a tuned cell's seed run that its search already ran in full: that trial's id
    # a tuned sweep's trial: chosen (at its cell's choice) | untuned (its cell's tuning failed, run at the
    # configured settings by --untuned-fallback: kept out of verdicts) | failed (so not run); None: no tuning
    tuning: str | None = None
    attempts: int | None = None  # how many times a sweep started this trial (retries after a lost worker)
    attempt_hosts: str | None = None  # JSON list: the host of each attempt, in order
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

    def relocate(self, local: str, remote: str) -> None:
        """Point the row's file paths at where the trial's folder is uploaded (`local` -> `remote`)."""
        for name in ("output_dir", "checkpoint_path", "predictions_path", "history_path"):
            if getattr(self, name):
                setattr(self, name, getattr(self, name).replace(local, remote, 1))

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


class ResultsError(BadInput):
    """A results input that cannot be read; the message says which file and why."""


def result_files(location: str | Path) -> list[str]:
    """A results file, or every table in a folder: each sweep's results.parquet, plus the
    trial result.parquet files no table covers (a folder holds both a sweep's table and each
    trial's own row; reading both would count every trial twice). A local path or a URI
    (s3://bucket/prefix, gs://, file://)."""
    import pyarrow.fs as pafs

    from sentisweep.storage import filesystem

    fs, base, prefix = filesystem(location)
    kind = fs.get_file_info(base).type
    if kind == pafs.FileType.NotFound:
        raise ResultsError(f"{location}: no such file or folder (a sweep's <storage>/<name>, or its results.parquet)")
    if kind == pafs.FileType.File:
        return [prefix + base]
    files = [f.path for f in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if f.type == pafs.FileType.File
             and f"/{TUNING_FOLDER}/" not in f.path[len(base.rstrip("/")):]]  # read by analysis/tuning.py
    tables = sorted(f for f in files if f.rsplit("/", 1)[-1] == RESULTS_TABLE)
    covered = [table.rsplit("/", 1)[0] + "/" for table in tables]
    trials = sorted(f for f in files if f.rsplit("/", 1)[-1] == RESULT_FILE
                    and not any(f.startswith(folder) for folder in covered))
    if not tables and not trials:
        raise ResultsError(f"{location}: no {RESULTS_TABLE} or {RESULT_FILE} inside; point at a sweep's storage "
                           "folder (<storage>/<name>) or its results.parquet")
    return [prefix + f for f in tables + trials]


def read_results(*paths: str | Path) -> pd.DataFrame:
    """Every row of these results files or folders as one DataFrame with the whole schema.
    Rows written before a column existed read it as missing; a file that is not a results
    table, or a status outside STATUSES, is a ResultsError naming the file."""
    frames = []
    for file in (f for path in paths for f in result_files(path)):
        try:
            table = pq.read_table(file)
        except Exception as err:  # pyarrow raises several types for what is not Parquet
            raise ResultsError(f"{file}: not a readable Parquet file ({type(err).__name__}: {err})") from None
        missing = [name for name in ("sweep", "trial_id", "model", "method", "seed", "status")
                   if name not in table.schema.names]
        if missing:
            raise ResultsError(f"{file}: not a sentisweep results table; missing columns {missing}")
        frame = table.to_pandas()
        for column in SCHEMA.names:
            if column not in frame:
                frame[column] = None
        frames.append(frame)
    results = pd.concat(frames, ignore_index=True)
    unknown = sorted(set(results["status"]) - set(STATUSES))
    if unknown:
        raise ResultsError(f"status values {unknown} are not any of {STATUSES}")
    return results


def best_by_validation(rows: pd.DataFrame) -> pd.Series | None:
    """The one "best trial" rule: of the ok rows, the highest validation accuracy, never the test's
    (choosing on test would leak it into the result reported). None where no ok row has one."""
    ok = rows[rows["status"] == "ok"].dropna(subset=["best_val_accuracy"])
    return None if ok.empty else ok.loc[ok["best_val_accuracy"].idxmax()]


def predictions_frame(row_ids, labels, probabilities: np.ndarray) -> pd.DataFrame:
    """Per test row: its label, the predicted class, that class's probability and the last
    class's (binary: the positive one), as every method's predictions.parquet holds them."""
    predicted = probabilities.argmax(axis=1)
    return pd.DataFrame({"row_id": np.asarray(row_ids), "label": np.asarray(labels), "predicted": predicted,
                         "probability": probabilities[np.arange(len(predicted)), predicted],
                         "probability_positive": probabilities[:, -1]})


def trial_info(checkpoint: str | Path) -> dict:
    """What run_trial recorded beside a checkpoint (model, method, labels, max_length), or {}."""
    info = Path(checkpoint) / TRIAL_INFO_FILE
    return json.loads(info.read_text()) if info.is_file() else {}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout sentisweep runs from, with '+dirty' for local changes; in
    the image, SENTISWEEP_GIT_COMMIT (the Dockerfile's GIT_COMMIT build argument)."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        # No checkout (the container image has no .git): the commit the image was built from.
        return os.environ.get("SENTISWEEP_GIT_COMMIT") or None


def provenance() -> dict[str, Any]:
    return {"versions": json.dumps(package_versions(), sort_keys=True), "git_commit": git_commit(),
            "hostname": socket.gethostname(), "start_time": now_iso()}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")  # a timeline of short trials


def row_of(config) -> TrialResult:
    """A trial's row before anything runs: its identity and settings (a trial that never runs has
    them too), from its TrialConfig."""
    from sentisweep.trial.methods import METHODS, resolved_params

    spec = METHODS[config.method.name] if config.method.name in METHODS else None
    params = resolved_params(config.method) if spec else config.method.params()
    t = config.training
    placement = params.get("placement")
    return TrialResult(
        sweep=config.sweep, trial_id=config.resolved_trial_id(), model=config.model,
        method=config.method.name, variant=config.resolved_variant(), seed=config.seed,
        # a method that does not train (zero-shot) has no learning rate: the config's default is not its
        learning_rate=None if spec and not spec.trains else t.learning_rate,
        epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size, gradient_accumulation=t.gradient_accumulation,
        max_length=t.max_length, weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio,
        gradient_checkpointing=int(t.gradient_checkpointing),
        lora_r=params.get("r"), lora_alpha=params.get("alpha"), lora_dropout=params.get("dropout"),
        placement=",".join(placement) if isinstance(placement, list) else placement,
        method_params=json.dumps(params, sort_keys=True), data_source=config.data.source,
        config_json=config.to_json(), output_dir=config.output_dir, **provenance())


def attempts_of(store: Store, name: str, trial: str) -> tuple[int, str]:
    """(how many times the trial started, the JSON list of each start's host)."""
    starts = [json.loads(line) for line in store.read_lines(*attempts_parts(name, trial))]
    return len(starts), json.dumps([start["host"] for start in starts])


def _result_parts(trial: PlannedTrial) -> tuple[str, ...]:
    return (*trial_parts(trial.config.sweep, trial.config.resolved_trial_id()), RESULT_FILE)


def finished_earlier(planned: list[PlannedTrial], store: Store) -> set[str]:
    """The trial ids of the runnable trials whose rows a run before this one wrote (what --resume
    will not run again: Tune's restore reruns only the trials without one)."""
    return {t.config.trial_id for t in planned if t.skip_reason is None and store.exists(*_result_parts(t))}


def gather_results(planned: list[PlannedTrial], store: Store, outcomes: dict[str, dict] | None = None):
    """One TrialResult row per planned trial, whatever happened: the trial's own
    result.parquet; a `skipped` row; a `stopped` row for a trial a scheduler (ASHA) ended
    early; or a `failed` row for a trial that never wrote one (its worker died more often
    than max_failures allowed). `outcomes`: trial_id -> {"error", "metrics"} as Tune saw it."""
    frames = []
    for trial in planned:
        parts = _result_parts(trial)
        if store.exists(*parts):
            frames.append(store.read_frame(*parts).assign(tuning=trial.tuning))
            continue
        row = row_of(trial.config)
        row.tuning = trial.tuning
        row.attempts, row.attempt_hosts = attempts_of(store, trial.config.sweep, trial.config.resolved_trial_id())
        if trial.skip_reason:
            row.status, row.error, row.error_type = "skipped", trial.skip_reason, "IncompatibleMethodError"
        elif trial.blocked:
            row.status, row.error, row.error_type = "failed", trial.blocked, "TuningFailed"
        else:
            seen = (outcomes or {}).get(trial.config.trial_id, {})
            metrics = seen.get("metrics") or {}
            if not seen.get("error") and "val_accuracy" in metrics and not metrics.get("final"):
                row.status, row.best_val_accuracy = "stopped", metrics["val_accuracy"]
                row.train_steps = metrics.get("step")
                row.error = f"stopped early by the scheduler at step {metrics.get('step')}"
            else:
                row.status, row.error_type = "failed", "TrialDidNotFinish"
                row.error = seen.get("error") or "the trial never wrote a result (was the sweep interrupted?)"
        frames.append(pd.DataFrame([row.to_row()], columns=SCHEMA.names))
    return pd.concat(frames, ignore_index=True)
