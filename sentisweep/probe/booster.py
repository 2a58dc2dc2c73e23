"""Frozen embeddings + XGBoost (a "probe"), as a TrialResult row like any trial.

The embeddings come from `ray_jobs/embed.py` (`<dir>/{train,validation,test}.parquet`);
the booster is trained by a `fit(params, train, validation) -> (booster, peak_memory_bytes
or None)` function given to `run_probe`: single-process here
(`fit_single_process`), or distributed with Ray Train (`ray_jobs/xgboost_stage.py`).
Early stopping watches the validation split; the test split is scored once, at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from sentisweep.config import Strict, trial_id
from sentisweep.layout import RESULT_FILE
from sentisweep.probe.embeddings import EmbeddingError, read_embeddings
from sentisweep.results import TrialResult, now_iso, predictions_frame, provenance, trial_info, write_results
from sentisweep.storage import Store, write_parquet_atomic
from sentisweep.trial.metrics import PeakMemory, Stopwatch, classification_metrics

METHOD = "embed+xgboost"
SPLITS = ("train", "validation", "test")


class XGBoostConfig(Strict):
    """Booster settings; the defaults are the usual starting point for dense embeddings."""

    rounds: int = Field(300, gt=0, description="boosting rounds at most")
    early_stopping_rounds: int | None = Field(20, gt=0, description="stop after this many rounds without "
                                                                    "validation improvement; null = never")
    max_depth: int = Field(6, gt=0, le=32)
    learning_rate: float = Field(0.1, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    tree_method: Literal["hist", "approx"] = "hist"  # both run distributed; "exact" does not

    def booster_params(self, num_classes: int, seed: int, threads: int | None) -> dict:
        # Early stopping watches the last metric: log loss, not the error rate, which on a few
        # hundred validation rows moves in steps and stopped MiniLM's probe 30 rounds too early.
        objective = ({"objective": "binary:logistic", "eval_metric": ["error", "logloss"]} if num_classes == 2
                     else {"objective": "multi:softprob", "num_class": num_classes,
                           "eval_metric": ["merror", "mlogloss"]})
        params = {**objective, "max_depth": self.max_depth, "eta": self.learning_rate, "subsample": self.subsample,
                  "colsample_bytree": self.colsample_bytree, "min_child_weight": self.min_child_weight,
                  "tree_method": self.tree_method, "seed": seed}
        if threads:
            params["nthread"] = threads
        return params


@dataclass
class Split:
    row_ids: np.ndarray
    labels: np.ndarray
    matrix: np.ndarray
    meta: dict


def load_splits(embeddings_dir: str | Path) -> dict[str, Split]:
    """The three splits of a folder of embeddings, local or in object storage (s3://...)."""
    folder = Store(str(embeddings_dir))
    missing = [s for s in SPLITS if not folder.is_file(f"{s}.parquet")]
    if missing:
        raise EmbeddingError(f"embeddings = {str(embeddings_dir)!r}: no "
                             f"{', '.join(f'{s}.parquet' for s in missing)} (write them with ray_jobs/embed.py)")
    splits = {s: Split(*read_embeddings(folder.uri(f"{s}.parquet"))) for s in SPLITS}
    for name, split in splits.items():
        if len(split.labels) == 0:
            raise EmbeddingError(f"{folder.uri(name)}.parquet: no rows")
    dims = {s.matrix.shape[1] for s in splits.values()}
    models = {(s.meta["model"], s.meta["checkpoint"], s.meta["pooling"]) for s in splits.values()}
    if len(dims) > 1 or len(models) > 1:
        raise EmbeddingError(f"embeddings = {str(folder)!r}: the splits come from different models or poolings "
                             f"({sorted(models)}, dims {sorted(dims)}); embed them in one run")
    return splits


def fit_single_process(params: dict, rounds: int, early_stopping_rounds: int | None, train: Split,
                       validation: Split):
    """The same training as the distributed stage, in this process (the baseline it is measured against)."""
    import xgboost

    dtrain = xgboost.DMatrix(train.matrix, label=train.labels)
    dvalid = xgboost.DMatrix(validation.matrix, label=validation.labels)
    booster = xgboost.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "validation")],
                            early_stopping_rounds=early_stopping_rounds, verbose_eval=False)
    return booster, None  # None: this process's sampled peak is the one to report


def probabilities_of(booster, matrix: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, classes) class probabilities from the best round (early stopping keeps later rounds)."""
    import xgboost

    best = booster.best_iteration if booster.attr("best_iteration") is not None else booster.num_boosted_rounds() - 1
    scores = booster.predict(xgboost.DMatrix(matrix), iteration_range=(0, best + 1))
    return np.column_stack([1 - scores, scores]) if num_classes == 2 else scores


def source_label(meta: dict) -> str:
    """`pretrained`, or `finetuned-<variant>` naming the variant of the trial the checkpoint came from."""
    if meta["checkpoint"] == "pretrained":
        return "pretrained"
    variant = trial_info(meta["checkpoint"]).get("variant")
    return f"finetuned-{variant}" if variant else "finetuned"


def probe_variant(meta: dict) -> str:
    return f"{METHOD}-{source_label(meta)}"


def probe_trial_id(meta: dict, seed: int) -> str:
    return trial_id(meta["model"], probe_variant(meta), seed)


def run_probe(embeddings_dir: str | Path, xgb: XGBoostConfig, output_dir: str | Path, sweep: str, seed: int,
              fit: Callable[[dict, Split, Split], tuple], workers: int, threads: int | None) -> TrialResult:
    """Train the booster with `fit(params, train, validation)` and score the test split.
    Whatever happens, a row is written to `<output_dir>/result.parquet` and returned."""
    out = Path(output_dir)
    splits = load_splits(embeddings_dir)  # bad input: an error before anything is written
    meta = splits["train"].meta
    labels = meta.get("label_names") or sorted({int(x) for x in splits["train"].labels})
    settings = {"pooling": meta["pooling"], "checkpoint": meta["checkpoint"], "source": source_label(meta),
                "workers": workers, "embeddings": Store(str(embeddings_dir)).uri(), **xgb.model_dump()}
    result = TrialResult(
        sweep=sweep, trial_id=probe_trial_id(meta, seed), model=meta["model"], method=METHOD,
        variant=probe_variant(meta), seed=seed, max_length=meta["max_length"], data_source=meta.get("data_source"),
        method_params=json.dumps(settings, sort_keys=True),
        config_json=json.dumps({**settings, "data": meta.get("data")}, sort_keys=True),
        train_rows=len(splits["train"].labels), validation_rows=len(splits["validation"].labels),
        test_rows=len(splits["test"].labels), output_dir=str(out), device="cpu", torch_threads=threads,
        **provenance())
    try:
        params = xgb.booster_params(len(labels), seed, threads)
        with PeakMemory("cpu") as memory:
            with Stopwatch() as fit_clock:
                booster, worker_peak_bytes = fit(params, splits["train"], splits["validation"])
            validation = probabilities_of(booster, splits["validation"].matrix, len(labels))
            with Stopwatch() as predict_clock:
                probabilities = probabilities_of(booster, splits["test"].matrix, len(labels))
        test = splits["test"]
        # Time to a result: embedding the split is part of the method's cost.
        embed_seconds = {s: float(splits[s].meta.get("seconds") or 0.0) for s in SPLITS}
        result.train_seconds = fit_clock.seconds + embed_seconds["train"] + embed_seconds["validation"]
        result.eval_seconds = predict_clock.seconds + embed_seconds["test"]
        result.train_samples_per_second = result.train_rows / result.train_seconds
        result.eval_samples_per_second = result.test_rows / result.eval_seconds
        result.best_val_accuracy = float((validation.argmax(axis=1) == splits["validation"].labels).mean())
        result.best_epoch = float(booster.best_iteration if booster.attr("best_iteration") is not None
                                  else booster.num_boosted_rounds() - 1)
        # The booster's fitted values are its leaves; the embedding model stays frozen.
        leaves = int((booster.trees_to_dataframe()["Feature"] == "Leaf").sum())
        result.trainable_params = leaves
        _record_peak(result, memory, worker_peak_bytes, splits)

        for key, value in classification_metrics(test.labels, probabilities).items():
            setattr(result, key, value)
        predictions = predictions_frame(test.row_ids, test.labels, probabilities)
        result.predictions_path = str(write_parquet_atomic(predictions, out / "predictions.parquet"))
        booster.save_model(str(out / "booster.ubj"))
        result.checkpoint_path = str(out / "booster.ubj")
        result.status = "ok"
    except Exception as err:  # failed trials are data
        result.status, result.error_type = "failed", type(err).__name__
        result.error = f"{type(err).__name__}: {err}"[:4000]
    result.end_time = now_iso()
    write_results([result], out / RESULT_FILE)
    return result


def _record_peak(result: TrialResult, memory, worker_peak_bytes: int | None, splits: dict) -> None:
    """The method's peak memory: this process's, the training workers' when distributed, or the
    embedding actors' (the model's forward passes, as the embed job recorded them) if larger."""
    result.peak_memory_bytes, result.peak_memory_kind = memory.peak_bytes, memory.kind
    if worker_peak_bytes:  # distributed: the training happened in the workers, not here
        result.peak_memory_bytes, result.peak_memory_kind = worker_peak_bytes, "host_rss_peak_worker"
    embedding_peak = max(int(splits[s].meta.get("peak_rss_bytes") or 0) for s in SPLITS)
    if embedding_peak > (result.peak_memory_bytes or 0):
        result.peak_memory_bytes, result.peak_memory_kind = embedding_peak, "host_rss_peak_worker"
