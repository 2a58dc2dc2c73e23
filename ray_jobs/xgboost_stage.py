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
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ray_session.connect import connect
from sentisweep import exit_codes
from sentisweep.config import ConfigError, safe_name
from sentisweep.layout import RESULT_FILE, RESULTS_TABLE, trial_parts
from sentisweep.locations import pin_args
from sentisweep.probe.booster import XGBoostConfig, fit_single_process, load_splits, probe_trial_id, run_probe
from sentisweep.results import SCHEMA, TrialResult, write_results
from sentisweep.screen import report_command
from sentisweep.storage import Store


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python ray_jobs/xgboost_stage.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", help="folder (or s3://...) with train/validation/test.parquet "
                                        "from ray_jobs/embed.py")
    p.add_argument("--storage", default="results", help="results store: a folder (default ./results) or s3://...")
    p.add_argument("--name", default="embed-xgb", help="results go to <storage>/<name>/")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers; 0 = single process, no Ray")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--report-every", type=int, default=0,
                   help="report metrics to Ray every N rounds (0: only at the end; each report costs ~2 s here)")
    p.add_argument("--seed", type=int, default=42)
    for name, setting in XGBoostConfig.model_fields.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                       help=f"{setting.description or 'booster setting'} (default {setting.default})")
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


@dataclass
class Stage:
    """One XGBoost run on one embeddings folder, its row going to `<storage>/<name>`."""

    embeddings: str
    storage: str = "results"
    name: str = "embed-xgb"
    workers: int = 2  # Ray Train workers; 0 = this process, no Ray
    cpus_per_worker: float = 1.0
    report_every: int = 0
    seed: int = 42
    xgb: XGBoostConfig = field(default_factory=XGBoostConfig)
    overwrite: bool = False
    local: bool = False


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


def fit_distributed(stage: Stage, embeddings: str, storage_path: str):
    def fit(params: dict, train, validation):
        import ray.data  # [Ray]
        from ray.train import RunConfig, ScalingConfig  # [Ray]
        from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer  # [Ray]

        trainer = XGBoostTrainer(  # [Ray]
            xgboost_worker,
            train_loop_config={"params": {**params, "nthread": max(1, int(stage.cpus_per_worker))},
                               "rounds": stage.xgb.rounds, "early_stopping_rounds": stage.xgb.early_stopping_rounds,
                               "report_every": stage.report_every},
            scaling_config=ScalingConfig(num_workers=stage.workers,
                                         resources_per_worker={"CPU": stage.cpus_per_worker}),
            # Read before the workers take their CPUs: on a small machine, read tasks queued
            # behind workers that hold every CPU never run (the pipeline hangs).
            datasets={split: ray.data.read_parquet(f"{embeddings}/{split}.parquet").materialize()  # [Ray] or s3://
                      for split in ("train", "validation")},
            run_config=RunConfig(storage_path=storage_path, name="xgboost_trainer"),
        )
        result = trainer.fit()  # [Ray]
        return RayTrainReportCallback.get_model(result.checkpoint), result.metrics.get("peak_rss_bytes")  # [Ray]
    return fit


# -- the command ---------------------------------------------------------------------

def smoke_embeddings(storage: str) -> Path:
    from ray_jobs import embed

    out = Path(storage) / "smoke-embeddings"
    if not (out / "test.parquet").is_file():
        code = embed.main(["--smoke-test", "--out", str(out), "--concurrency", "1", "--local"])
        if code:
            raise SystemExit(code)
    return out


def run_stage(stage: Stage) -> TrialResult:
    """Train and score one probe; its row is written to the trial's folder and the table.
    Bad input (ConfigError, EmbeddingError) is raised before anything is written."""
    problems = []
    try:
        safe_name(stage.name)
    except ValueError as err:
        problems.append(f"--name = {stage.name!r}: {err}")
    if stage.workers < 0 or stage.report_every < 0:
        problems.append(f"--workers = {stage.workers}, --report-every = {stage.report_every}: must be 0 or more")
    try:
        store = Store(stage.storage)
    except (OSError, ValueError) as err:  # a file, an unknown scheme, no credentials
        problems.append(f"--storage = {stage.storage!r}: {err}")
    if problems:
        raise ConfigError(problems, "xgboost stage")
    splits = load_splits(stage.embeddings)  # checks the files before Ray starts
    trial_id = probe_trial_id(splits["train"].meta, stage.seed)
    parts = trial_parts(stage.name, trial_id)
    if store.exists(*parts, RESULT_FILE) and not stage.overwrite:
        raise ConfigError([f"{store.uri(*parts, RESULT_FILE)} exists: this run already finished (pass --overwrite "
                           "to replace it; nothing was changed)"])
    # object storage: the row, booster and predictions are written here first, then uploaded
    trial_dir = Path(tempfile.mkdtemp(prefix="xgboost-")) if store.remote else Path(store.path(*parts))
    embeddings = Store(stage.embeddings).uri()
    if stage.workers == 0:
        def fit(params, train, validation):
            return fit_single_process(params, stage.xgb.rounds, stage.xgb.early_stopping_rounds, train, validation)
        threads = os.cpu_count()
    else:
        connect(stage.local, None)  # [Ray]
        # Ray Train's own run folder (its checkpoint of the booster) stays beside the row.
        fit, threads = fit_distributed(stage, embeddings, store.uri(*parts, "ray_train")), None
    print(f"{trial_id}: XGBoost on {embeddings} ({len(splits['train'].labels)} train rows, "
          f"{'1 process' if stage.workers == 0 else f'{stage.workers} Ray Train workers'}) ...", flush=True)
    result = run_probe(embeddings, stage.xgb, trial_dir, stage.name, stage.seed, fit, stage.workers, threads)
    if store.remote:
        result.relocate(str(trial_dir), store.uri(*parts))
        write_results([result], trial_dir / RESULT_FILE)
        store.upload(trial_dir, *parts)
        shutil.rmtree(trial_dir, ignore_errors=True)
    write_table(store, stage.name, result)
    return result


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pin_args(args)  # before anything leaves this process: Ray Train's workers run elsewhere
    if args.smoke_test:
        args.rounds, args.name = args.rounds or "5", "smoke-embed-xgb" if args.name == "embed-xgb" else args.name
        args.embeddings = args.embeddings or str(smoke_embeddings(args.storage))
    if not args.embeddings:
        raise ConfigError(["--embeddings: required (a folder written by ray_jobs/embed.py)"])
    stage = Stage(embeddings=args.embeddings, storage=args.storage, name=args.name, workers=args.workers,
                  cpus_per_worker=args.cpus_per_worker, report_every=args.report_every, seed=args.seed,
                  xgb=xgboost_config(args), overwrite=args.overwrite, local=args.local)
    result = run_stage(stage)
    if result.status != "ok":
        print(f"{result.trial_id}: {result.status}: {result.error}", file=sys.stderr)
        return exit_codes.FAILED
    store = Store(stage.storage)
    print(f"{result.trial_id}: test accuracy {result.accuracy:.4f} (validation {result.best_val_accuracy:.4f}, "
          f"best round {result.best_epoch:.0f}), fit + embedding {result.train_seconds:.1f} s -> "
          f"{store.uri(stage.name, RESULTS_TABLE)}\nnext: {report_command(store.uri(stage.name))}")
    return exit_codes.OK


def write_table(store: Store, name: str, result) -> None:
    """Add (or replace) this run's row in `<storage>/<name>/results.parquet`."""
    import pandas as pd

    row = pd.DataFrame([result.to_row()], columns=SCHEMA.names)
    if store.exists(name, RESULTS_TABLE):
        table = store.read_frame(name, RESULTS_TABLE)
        row = pd.concat([table[table["trial_id"] != result.trial_id], row], ignore_index=True)
    store.write_frame(row, name, RESULTS_TABLE)


if __name__ == "__main__":
    raise SystemExit(main())
