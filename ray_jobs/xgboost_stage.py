"""XGBoost on frozen embeddings, distributed with Ray Train; one TrialResult row per run.

    python ray_jobs/xgboost_stage.py --embeddings results/emb/minilm --storage results --name embed-xgb
    python ray_jobs/xgboost_stage.py --embeddings ... --workers 0      # single process, no Ray
    ray job submit --working-dir . -- python ray_jobs/xgboost_stage.py --embeddings /shared/emb/minilm ...
    python ray_jobs/xgboost_stage.py --smoke-test --storage /tmp/xgb   # embeds 96 tiny texts first

Reads `<embeddings>/{train,validation,test}.parquet` (from ray_jobs/embed.py), trains on
train with early stopping on validation (`XGBoostTrainer`, `--workers` data-parallel
workers), scores test once, and writes the row (method `embed+xgboost`) and per-example
predictions to `<storage>/<name>/trials/<trial_id>/`, and the row into
`<storage>/<name>/results.parquet`, where `python -m analysis report` reads it like any
sweep's. Ray-specific lines are marked `# [Ray]`.

Why `--report-every` defaults to 0 (report once, at the end): Ray's XGBoost callback reports
every boosting round, about 2 s a round here (200 rounds: 427 s against 4.4 s in one process).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a checkout or a `ray job submit --working-dir .` upload

from sentisweep.config import ConfigError  # noqa: E402
from sentisweep.embeddings import EmbeddingError  # noqa: E402
from sentisweep.probe import XGBoostConfig, fit_single_process, load_splits, probe_trial_id, run_probe  # noqa: E402
from sentisweep.storage import Store  # noqa: E402
from sentisweep.sweep import trial_parts  # noqa: E402

EXIT_BAD_INPUT = 2
RESULTS_TABLE = "results.parquet"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", help="folder with train/validation/test.parquet from ray_jobs/embed.py")
    p.add_argument("--storage", default="results", help="results store, a local folder (default ./results)")
    p.add_argument("--name", default="embed-xgb", help="results go to <storage>/<name>/")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers; 0 = single process, no Ray")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--report-every", type=int, default=0,
                   help="report metrics to Ray every N rounds (0: only at the end; each report costs ~2 s here)")
    p.add_argument("--seed", type=int, default=42)
    for name, field in XGBoostConfig.model_fields.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                       help=f"{field.description or 'booster setting'} (default {field.default})")
    p.add_argument("--overwrite", action="store_true", help="replace this run's existing row")
    p.add_argument("--local", action="store_true", help="start Ray here even when RAY_ADDRESS is set")
    p.add_argument("--smoke-test", action="store_true",
                   help="embed tiny-bert texts into --storage first, then a few rounds (seconds)")
    return p


def xgboost_config(args: argparse.Namespace) -> XGBoostConfig:
    given = {k: getattr(args, k) for k in XGBoostConfig.model_fields if getattr(args, k) is not None}
    given = {k: (None if v in ("none", "null") else v) for k, v in given.items()}
    try:
        return XGBoostConfig.model_validate(given, strict=False)
    except Exception as err:  # pydantic names each bad field and what it allows
        raise ConfigError([str(err)], "xgboost_stage.py arguments") from None


# -- the Ray layer ---------------------------------------------------------------------

def xgboost_worker(config: dict) -> None:
    """[Ray] Runs on each Ray Train worker: its shard of train and validation, one booster
    trained together through XGBoost's collective (Ray Train sets it up)."""
    import resource

    import numpy as np
    import ray.train  # [Ray]
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback  # [Ray]

    class ReportRarely(RayTrainReportCallback):
        """Ray's callback, reporting every `every` rounds (0: never) and the model at the end."""

        def __init__(self, every: int):
            # Each worker is a fresh process: its lifetime peak RSS is this training's.
            super().__init__(metrics=["validation-error"], checkpoint_at_end=True, results_postprocessing_fn=lambda m: {
                **m, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
            self.every = every

        def after_iteration(self, model, epoch, evals_log):
            self._evals_log = evals_log
            if self.every and (epoch + 1) % self.every == 0:
                self._report_metrics(self._get_report_dict(evals_log))
            return False

    def matrix(name: str) -> xgboost.DMatrix:
        batches = list(ray.train.get_dataset_shard(name).iter_batches(batch_size=None, batch_format="numpy"))  # [Ray]
        features = np.concatenate([np.stack(list(b["embedding"])) for b in batches]).astype(np.float32)
        return xgboost.DMatrix(features, label=np.concatenate([b["label"] for b in batches]))

    dtrain, dvalid = matrix("train"), matrix("validation")
    xgboost.train(config["params"], dtrain, num_boost_round=config["rounds"], evals=[(dvalid, "validation")],
                  early_stopping_rounds=config["early_stopping_rounds"], verbose_eval=False,
                  callbacks=[ReportRarely(config["report_every"])])


def fit_distributed(args: argparse.Namespace, embeddings: Path, storage_path: str):
    def fit(params: dict, train, validation):
        import ray.data  # [Ray]
        from ray.train import RunConfig, ScalingConfig  # [Ray]
        from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer  # [Ray]

        trainer = XGBoostTrainer(  # [Ray]
            xgboost_worker,
            train_loop_config={"params": {**params, "nthread": max(1, int(args.cpus_per_worker))},
                               "rounds": args.xgb.rounds, "early_stopping_rounds": args.xgb.early_stopping_rounds,
                               "report_every": args.report_every},
            scaling_config=ScalingConfig(num_workers=args.workers,
                                         resources_per_worker={"CPU": args.cpus_per_worker}),
            # Read before the workers take their CPUs: on a small machine, read tasks queued
            # behind workers that hold every CPU never run (the pipeline hangs).
            datasets={split: ray.data.read_parquet(str(embeddings / f"{split}.parquet")).materialize()
                      for split in ("train", "validation")},
            run_config=RunConfig(storage_path=storage_path, name="xgboost_trainer"),
        )
        result = trainer.fit()  # [Ray]
        return RayTrainReportCallback.get_model(result.checkpoint), result.metrics.get("peak_rss_bytes")  # [Ray]
    return fit


# -- the command ---------------------------------------------------------------------

def smoke_embeddings(args: argparse.Namespace) -> Path:
    from ray_jobs import embed

    out = Path(args.storage) / "smoke-embeddings"
    if not (out / "test.parquet").is_file():
        code = embed.main(["--smoke-test", "--out", str(out), "--concurrency", "1", "--local"])
        if code:
            raise SystemExit(code)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.smoke_test:
            args.rounds, args.name = args.rounds or "5", "smoke-embed-xgb" if args.name == "embed-xgb" else args.name
            args.embeddings = args.embeddings or str(smoke_embeddings(args))
        args.xgb = xgboost_config(args)
        if not args.embeddings:
            raise ConfigError(["--embeddings: required (a folder written by ray_jobs/embed.py)"])
        if args.workers < 0 or args.report_every < 0:
            raise ConfigError([f"--workers = {args.workers}, --report-every = {args.report_every}: "
                               "must be 0 or more"])
        splits = load_splits(args.embeddings)  # checks the files before Ray starts
    except (ConfigError, EmbeddingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    store = Store(args.storage)
    if store.remote:
        print("error: --storage: a local folder (the booster and predictions are written beside the row)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    trial_id = probe_trial_id(splits["train"].meta, args.seed)
    trial_dir = Path(store.path(*trial_parts(args.name, trial_id)))
    if (trial_dir / "result.parquet").exists() and not args.overwrite:
        print(f"error: {trial_dir / 'result.parquet'} exists: this run already finished (pass --overwrite to "
              "replace it; nothing was changed)", file=sys.stderr)
        return EXIT_BAD_INPUT

    embeddings = Path(args.embeddings).resolve()
    if args.workers == 0:
        fit = lambda params, train, validation: fit_single_process(  # noqa: E731
            params, args.xgb.rounds, args.xgb.early_stopping_rounds, train, validation)
        threads = os.cpu_count()
    else:
        from sweeps import common

        common.connect(args.local, None)  # [Ray]
        # Ray Train's own run folder (its checkpoint of the booster) stays beside the row.
        fit, threads = fit_distributed(args, embeddings, str(trial_dir.resolve() / "ray_train")), None
    print(f"{trial_id}: XGBoost on {embeddings} ({len(splits['train'].labels)} train rows, "
          f"{'1 process' if args.workers == 0 else f'{args.workers} Ray Train workers'}) ...", flush=True)
    result = run_probe(embeddings, args.xgb, trial_dir, args.name, args.seed, fit, args.workers, threads)
    write_table(store, args.name, result)
    if result.status != "ok":
        print(f"{trial_id}: {result.status}: {result.error}", file=sys.stderr)
        return 1
    print(f"{trial_id}: test accuracy {result.accuracy:.4f} (validation {result.best_val_accuracy:.4f}, "
          f"best round {result.best_epoch:.0f}), fit + embedding {result.train_seconds:.1f} s -> "
          f"{store.uri(args.name, RESULTS_TABLE)}")
    return 0


def write_table(store: Store, name: str, result) -> None:
    """Add (or replace) this run's row in `<storage>/<name>/results.parquet`."""
    import pandas as pd

    from sentisweep.results import SCHEMA

    row = pd.DataFrame([result.to_row()], columns=SCHEMA.names)
    if store.exists(name, RESULTS_TABLE):
        table = store.read_frame(name, RESULTS_TABLE)
        row = pd.concat([table[table["trial_id"] != result.trial_id], row], ignore_index=True)
    store.write_frame(row, name, RESULTS_TABLE)


if __name__ == "__main__":
    raise SystemExit(main())
