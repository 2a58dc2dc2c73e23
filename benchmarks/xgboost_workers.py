"""XGBoost on embeddings: one process against Ray Train's XGBoostTrainer, in one run.

Same embeddings, same booster settings: (1) `xgboost.train` in this process; (2) the stage's
Ray Train path with 2 workers, reporting once at the end (our default); (3) the same,
reporting every round as Ray's callback does by default. Prints seconds, ratios and test
accuracies. Ray starts before the timings, so `ray.init` is not in them.

    python benchmarks/xgboost_workers.py --embeddings results/embed-xgb-quick/embeddings/minilm-l6-pretrained
    python benchmarks/xgboost_workers.py --smoke-test   # synthetic embeddings, a few rounds, ours only (the tests)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ray_jobs import xgboost_stage
from sentisweep.probe.booster import Split, XGBoostConfig, fit_single_process, load_splits, probabilities_of

ROOT = Path(__file__).resolve().parents[1]


def synthetic(folder: Path, dim: int = 384) -> Path:
    """Separable random embeddings in the embed job's format."""
    import json

    import pyarrow as pa

    from sentisweep.probe.embeddings import META_KEY
    from sentisweep.storage import write_parquet_atomic

    rng = np.random.default_rng(0)
    direction = rng.normal(size=dim) / np.sqrt(dim) * 3
    for split, n in (("train", 2000), ("validation", 500), ("test", 1000)):
        labels = rng.integers(0, 2, n)
        matrix = (rng.normal(size=(n, dim)) + labels[:, None] * direction).astype(np.float32)
        table = pa.table({"row_id": pa.array(np.arange(n)), "label": pa.array(labels, pa.int64()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim)})
        meta = {"model": "synthetic", "checkpoint": "pretrained", "pooling": "mean", "max_length": 0}
        write_parquet_atomic(table.replace_schema_metadata({META_KEY: json.dumps(meta)}), folder / f"{split}.parquet")
    return folder


def accuracy(booster, split: Split) -> float:
    return float((probabilities_of(booster, split.matrix, 2).argmax(axis=1) == split.labels).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", help="a folder from ray_jobs/embed.py (default: synthetic 384-d)")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--smoke-test", action="store_true")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.rounds = 5
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.embeddings) if args.embeddings else synthetic(Path(tmp) / "emb")
        splits = load_splits(folder)
        # No early stopping: every run boosts the same number of rounds.
        xgb = XGBoostConfig(rounds=args.rounds, early_stopping_rounds=None)
        params = xgb.booster_params(2, 42, 2)
        start = time.perf_counter()
        single, _ = fit_single_process(params, args.rounds, None, splits["train"], splits["validation"])
        rows = [("one process, xgboost.train (2 threads)", time.perf_counter() - start,
                 accuracy(single, splits["test"]))]

        from ray_session.connect import connect

        connect(True, 0)
        variants = ((0, "Ray Train, report at the end (ours)"), (1, "Ray Train, report every round"))
        # The smoke test runs ours only: each Ray Train fit costs ~25 s of start-up here, and
        # the tests' two-worker stage run reports every few rounds, the other variant's path.
        for every, name in variants[:1] if args.smoke_test else variants:
            stage_args = argparse.Namespace(xgb=xgb, workers=args.workers, cpus_per_worker=1.0, report_every=every)
            fit = xgboost_stage.fit_distributed(stage_args, folder.resolve(), str(Path(tmp, f"ray{every}")))
            start = time.perf_counter()
            booster, _ = fit(params, splits["train"], splits["validation"])
            rows.append((f"{name}, {args.workers} workers", time.perf_counter() - start,
                         accuracy(booster, splits["test"])))
    train = splits["train"]
    print(f"\n{args.rounds} rounds on {len(train.labels)} x {train.matrix.shape[1]} train embeddings")
    print("| run | seconds | vs one process | test accuracy |\n| --- | ---: | ---: | ---: |")
    for name, seconds, acc in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / rows[0][1]:.1f}x | {acc:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
