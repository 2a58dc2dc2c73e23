"""The embeddings + XGBoost study: per model, pretrained and fine-tuned embeddings -> XGBoost.

    python ray_jobs/embed_xgb.py --config sweeps/configs/embed_xgb_quick.yaml
    python ray_jobs/embed_xgb.py --config sweeps/configs/embed_xgb_quick.yaml --dry-run
    ray job submit --working-dir . -- python ray_jobs/embed_xgb.py --config sweeps/configs/embed_xgb_gpu.yaml

For each model in the config: embed the splits with the pretrained model, and with the best
checkpoint (by validation accuracy) of that model in the sweep named by `finetuned_from`
(ray_jobs/embed.py, Ray Data), then train XGBoost on each (ray_jobs/xgboost_stage.py, Ray
Train). Rows go to `<storage>/<name>/results.parquet` beside the embeddings
(`<storage>/<name>/embeddings/<model>-<source>/`). Finished steps are kept: running the same
command again continues where it stopped (`--overwrite` redoes everything).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ray_jobs import embed, xgboost_stage
from ray_session.connect import connect
from ray_session.guard import driver_lock, running_now
from sentisweep import exit_codes
from sentisweep.config import ConfigError
from sentisweep.config_load import load_config
from sentisweep.exit_codes import BadInput
from sentisweep.layout import DRIVER_LOCK, RESULTS_TABLE
from sentisweep.locations import pin_args, pinned, pinned_data, refusal
from sentisweep.probe.embed_xgb_config import (
    EmbedXgbConfig,
    best_checkpoint,
    data_differences,
    embedding_differences,
    row_differences,
    trial_differences,
)
from sentisweep.probe.embeddings import META_KEY
from sentisweep.results import ResultsError, read_results
from sentisweep.screen import report_command, shown
from sentisweep.storage import Store, driver_running, exists, is_remote
from sentisweep.trial.data import check_source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python ray_jobs/embed_xgb.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default = shown(str(Path(__file__).resolve().parents[1] / "sweeps" / "configs" / "embed_xgb_quick.yaml"))
    p.add_argument("--config", default=default, help=f"the study's YAML (default {default})")
    p.add_argument("--storage", help="overrides the config's storage (results, and where finetuned_from is found)")
    p.add_argument("--dry-run", action="store_true", help="validate, pick the checkpoints, print the plan; run nothing")
    p.add_argument("--overwrite", action="store_true", help="redo embeddings and rows that already exist")
    p.add_argument("--local", action="store_true", help="start Ray here even when RAY_ADDRESS is set")
    return p


def plan(config: EmbedXgbConfig, strict: bool = True) -> list[dict]:
    """One entry per (model, source): the checkpoint and the embeddings folder. Every
    finetuned_from is resolved here, before anything runs; all problems at once. Not strict
    (--dry-run): a sweep that is not there yet is shown as waited for, not an error."""
    runs, problems, advice = [], [], ""
    store = Store(config.storage)  # a folder, or object storage (s3://...)
    for i, entry in enumerate(config.models):
        sources = [("pretrained", None, None, None)] if entry.pretrained else []
        if entry.finetuned_from:
            named = entry.finetuned_from  # a results location itself, or a sweep's name in this storage
            location = named if is_remote(named) else str(Path(named).resolve()) if Path(named).exists() \
                else store.uri(named)
            try:
                if not exists(location):
                    raise ConfigError([f"no results at {location} yet; run that sweep first, into the same "
                                       f"storage ({config.storage})"])
                if driver_running(location):
                    raise ConfigError([f"{location} is running now (its driver holds {DRIVER_LOCK}): its best "
                                       "so far need not be its best; run the study when that sweep ends"])
                best = best_checkpoint(read_results(location), entry.model, location)
                differences = trial_differences(config, best)
                if differences:
                    advice = ("set the study's data as that sweep's: the same rows and tokens the checkpoint "
                              "was trained and tested on")
                    raise ConfigError(differences)
                sources.append(("finetuned", str(best["trial_id"]), str(best["checkpoint_path"]), location))
            except ConfigError as err:
                problems += [f"models[{i}].finetuned_from = {entry.finetuned_from!r}: {p}" for p in err.problems]
                sources.append(("finetuned", None, None, None))
            except ResultsError as err:
                problems.append(f"models[{i}].finetuned_from = {entry.finetuned_from!r}: {err}")
                sources.append(("finetuned", None, None, None))
        for source, trial_id, checkpoint, sweep in sources:
            folder = store.uri(config.name, "embeddings", f"{entry.model.replace('/', '_')}-{source}")
            runs.append({"entry": entry, "source": source, "trial_id": trial_id, "checkpoint": checkpoint,
                         "embeddings": folder, "sweep": sweep})
    if problems and strict:
        raise ConfigError(problems, "finetuned_from", advice)
    for problem in problems:
        print(f"  not ready: {problem}")
    return [run for run in runs if run["source"] == "pretrained" or run["checkpoint"]] if strict else runs


def embedded(folder: str) -> bool:
    store = Store(folder)
    return all(store.is_file(f"{split}.parquet") for split in embed.SPLITS)


def stale_embeddings(config: EmbedXgbConfig, runs: list[dict]) -> list[str]:
    """Embeddings already there that other rows or tokens made (the config's data changed since):
    reusing them, or keeping their rows, would report the old study as the new one."""
    import pyarrow.parquet as pq

    problems = []
    # a dry run's entry that waits for its sweep has no checkpoint yet to compare with
    for run in (r for r in runs if embedded(r["embeddings"]) and (r["checkpoint"] or r["source"] == "pretrained")):
        store = Store(run["embeddings"])
        meta = json.loads(pq.read_schema(store.path("train.parquet"), filesystem=store.fs).metadata[META_KEY])
        whose = f"the embeddings in {store.uri()}"
        checkpoint = Store(run["checkpoint"]).uri() if run["checkpoint"] else "pretrained"  # as embed.run says it
        problems += data_differences(config.data, meta["data"], whose)
        problems += embedding_differences(config, run["entry"], checkpoint, meta, whose)
    return problems


def changed_rows(config: EmbedXgbConfig, runs: list[dict], by_source: dict) -> list[str]:
    """Rows already there for these embeddings, fitted under other settings than the config's."""
    return [problem for run in runs if (row := by_source.get(_key(run))) is not None
            for problem in row_differences(config, row)]


def run_embedding(config: EmbedXgbConfig, run: dict) -> None:
    e, entry = config.embedding, run["entry"]
    # the config's whole data block: the same rows as the sweep's trials
    job = embed.EmbedJob(model=entry.model, out=str(run["embeddings"]), data=config.data,
                         checkpoint=run["checkpoint"], pooling=entry.pooling, max_length=e.max_length,
                         batch_size=e.batch_size, quantize=entry.quantize, overwrite=True,
                         concurrency=e.concurrency, cpus_per_actor=e.cpus_per_actor,
                         gpus_per_actor=e.gpus_per_actor)
    problems = job.problems()
    if problems:
        raise ConfigError(problems, f"embedding {entry.model} {run['source']}")
    embed.run(job)


def xgboost_stage_of(config: EmbedXgbConfig, run: dict, local: bool) -> xgboost_stage.Stage:
    return xgboost_stage.Stage(embeddings=str(run["embeddings"]), storage=config.storage, name=config.name,
                               workers=config.workers, seed=config.seed, xgb=config.xgboost, overwrite=True,
                               local=local)


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pin_args(args)
    config = load_config(args.config, "embed_xgb", {"storage": args.storage} if args.storage else None)
    problem = refusal("storage", config.storage)
    if problem:
        raise ConfigError([problem], args.config)
    config = config.model_copy(update={"storage": pinned(config.storage), "data": pinned_data(config.data)})
    runs = plan(config, strict=not args.dry_run)
    store = Store(config.storage)
    results_table = store.uri(config.name, RESULTS_TABLE)
    rows = read_results(results_table) if store.exists(config.name, RESULTS_TABLE) else None
    # each row by the (embeddings, checkpoint) it was fitted on: what `_key(run)` gives
    by_source = {_source_of(row["method_params"]): row for _, row in rows.iterrows()} if rows is not None else {}
    if any(args.overwrite or not (_key(run) in by_source or embedded(run["embeddings"])) for run in runs):
        missing = check_source(config.data)  # texts to embed: there, before Ray starts
        if missing:
            raise ConfigError(missing, args.config)
    stale = [] if args.overwrite else stale_embeddings(config, runs) + changed_rows(config, runs, by_source)
    if stale:
        raise ConfigError(stale, args.config, "pass --overwrite to embed again and replace their rows, or give "
                                              "the study another name")
    running = running_now(store, config.name)
    if running:
        raise BadInput(running)
    fits = f"{config.workers} workers" if config.workers else "single-process"
    print(f"{config.name}: {len(runs)} embed + XGBoost runs ({fits}), results -> {results_table}")

    def done(run: dict) -> bool:
        return _key(run) in by_source

    for run in runs:
        status = "done" if done(run) else "to run"
        if run["source"] == "finetuned" and not run["checkpoint"]:
            status = "waits for its sweep (see above)"
        print(f"  {run['entry'].model} {run['source']}"
              + (f" (trial {run['trial_id']})" if run["trial_id"] else "") + f": {status}")
    if args.dry_run:
        return exit_codes.OK
    kept = [run for run in runs if done(run) and not args.overwrite]
    for run in kept:
        print(f"{run['entry'].model} {run['source']}: row exists, kept")
    to_run = [run for run in runs if run not in kept]
    try:
        with driver_lock(store, config.name):
            failed = run_stages(config, to_run, args)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"the same command continues: the embeddings and rows finished in "
                                f"{store.uri(config.name)} are kept") from None
    print(read_results(results_table)[["trial_id", "status", "accuracy", "best_val_accuracy", "train_seconds"]]
          .to_string(index=False))
    # with the sweeps the checkpoints came from: their trials and baselines on the same test rows
    print(f"next: {report_command(store.uri(config.name), *dict.fromkeys(r['sweep'] for r in runs if r['sweep']))}")
    return exit_codes.FAILED if failed else exit_codes.OK


def run_stages(config: EmbedXgbConfig, to_run: list[dict], args) -> bool:
    """Embed (where not done) and fit XGBoost for each run; whether any stage failed."""
    if to_run:
        connect(args.local, None)  # [Ray] once, for every stage below; not at all if every row exists
    failed, store = False, Store(config.storage)
    for run in to_run:
        label = f"{run['entry'].model} {run['source']}"
        if args.overwrite or not embedded(run["embeddings"]):
            run_embedding(config, run)
        else:
            print(f"{label}: embeddings exist in {run['embeddings']}, reused")
        result = xgboost_stage.run_stage(xgboost_stage_of(config, run, args.local))
        drop_earlier_rows(store, config.name, run, result.trial_id)
        failed |= result.status != "ok"
        print(f"{result.trial_id}: {result.status}" + (f", test accuracy {result.accuracy:.4f}"
                                                        if result.status == "ok" else f": {result.error}"))
    return failed


def drop_earlier_rows(store: Store, name: str, run: dict, trial_id: str) -> None:
    """The study keeps one row per embeddings. Redone (--overwrite) under another seed, the stage
    wrote its row beside the old seed's (another trial id): the old row goes once the new is in."""
    table = store.read_frame(name, RESULTS_TABLE)
    same_embeddings = table["method_params"].map(lambda params: _source_of(params) == _key(run))
    earlier = same_embeddings & (table["trial_id"] != trial_id)
    if earlier.any():
        store.write_frame(table[~earlier], name, RESULTS_TABLE)


def _key(run: dict) -> tuple[str, str]:
    """A run's (embeddings, checkpoint): what its row's `_source_of` gives."""
    return str(run["embeddings"]), run["checkpoint"] or "pretrained"


def _source_of(method_params: str) -> tuple[str, str]:
    params = json.loads(method_params or "{}")
    return params.get("embeddings", ""), params.get("checkpoint", "")


if __name__ == "__main__":
    raise SystemExit(main())
