"""Optuna search over LoRA rank, alpha, learning rate and dropout, on Ray Tune with ASHA.

    python sweeps/search.py                                     # the quick CPU search
    python sweeps/search.py --config sweeps/configs/lora_search_quick.yaml --dry-run
    optuna-dashboard results/<name>/optuna.journal              # the study, while or after it runs

Ray-specific lines are marked `# [Ray]`. Trials report validation accuracy at every
evaluation, so ASHA stops weak ones early (status `stopped`). The Optuna study lives in
`<storage>/<name>/optuna.journal`, owned by the driver (or in a database: --study-storage;
sweeps/study.py). The best trial (by validation accuracy, never test) is saved as a
ready-to-run trial config, `<storage>/<name>/best_trial.yaml`. --storage may be s3://.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from ray_session import guard, tracking
from sentisweep import exit_codes
from sentisweep.config import OBJECTIVES, SearchConfig, TrialConfig
from sentisweep.config_load import load_config
from sentisweep.layout import BEST_TRIAL_FILE
from sentisweep.locations import pin_args, pinned_data, pinned_model
from sentisweep.plan import PlannedTrial, trial_from_sample
from sentisweep.results import best_by_validation, gather_results
from sentisweep.screen import shown
from sentisweep.storage import Store
from sentisweep.trial.data import check_data
from sentisweep.trial.models import get_model_spec, prefetch
from sentisweep.tuning import random_first
from sweeps import driver, trainable
from sweeps.study import JOURNAL, StudyStorage, resumable_optuna_search, saving_callback, tpe_sampler

DEFAULT_CONFIG = "lora_search_quick.yaml"


def run_search_trial(params: dict, search: dict, storage: str) -> None:
    """Tune trainable: one sampled point of the space (`params`) as a full trial."""
    from ray import tune  # [Ray]

    trial = trial_from_sample(SearchConfig.model_validate(search), params, tune.get_context().get_trial_id(),  # [Ray]
                              Store(storage))
    trainable.execute_trial(trial, storage)


def build_parser():
    p = driver.parser("python sweeps/search.py", __doc__, what="search", default_config=DEFAULT_CONFIG,
                      epilog="exit status: 0 every trial ok or stopped early; 1 done, but some trial failed; "
                             "2 bad config or arguments; 4 no trial finished, so the search found nothing; "
                             "130 interrupted (continue with --resume).")
    p.add_argument("--num-samples", type=int, help="override the config's number of trials")
    p.add_argument("--study-storage", metavar="URL",
                   help="keep the Optuna study in this database (e.g. postgresql://user:pass@host/db) instead "
                        "of a journal file on the driver, copied to the store after each trial")
    return p


def save_best(results, search: SearchConfig, store: Store) -> str | None:
    """The best finished trial by validation accuracy as a trial config people can run."""
    best = best_by_validation(results)  # the trials' rows: no baseline among them
    if best is None:
        return None
    config = json.loads(best["config_json"])
    for key in ("output_dir", "trial_id", "sweep"):
        config.pop(key, None)
    where = store.uri(search.name, BEST_TRIAL_FILE)
    command = f"python -m sentisweep.train --config {'best_trial.yaml' if store.remote else where}"
    note = f"   (a local copy of {where})" if store.remote else ""  # train reads a local file
    header = (f"# {command} --out runs/{search.name}-best{note}\n"
              f"# best of search {search.name!r} by validation accuracy {best['best_val_accuracy']:.4f} "
              f"(test accuracy {best['accuracy']:.4f}), trial {best['trial_id']}\n")
    return store.write_bytes((header + yaml.safe_dump(config, sort_keys=False)).encode(), search.name,
                             BEST_TRIAL_FILE)


def run(args, search: SearchConfig, store: Store) -> int:
    from ray import tune  # [Ray]

    started = time.monotonic()
    study = StudyStorage(store, search.name, args.study_storage)
    print(study.describe(), flush=True)
    resources = {"cpu": search.resources.cpus_per_trial, "gpu": search.resources.gpus_per_trial}
    wait_for_room = driver.start_ray(args, resources["cpu"], resources["gpu"],
                                     min(search.num_samples, search.resources.max_concurrent or search.num_samples))
    # once, not by every trial at once: its trials differ only in the sampled values
    driver.pretokenize([TrialConfig(model=search.model, method=search.method, data=search.data,
                                    training=search.training)])
    prefetch([get_model_spec(search.model)])
    wait_for_room()  # the autoscaler's node booted meanwhile
    # the search's own config goes with the trainable, not into the sampled config: Tune prints a
    # trial's config as it starts and beside the best trial, and it is only these 4 sampled values
    trial_fn = tune.with_parameters(run_search_trial, search=search.model_dump(mode="json"),  # [Ray]
                                    storage=store.uri())
    # the study first: a restored searcher (Optuna's TPE with every finished trial) reads it
    if args.resume and study.restore():
        print(f"study restored from {store.uri(search.name, JOURNAL)}", flush=True)
    grid = driver.fit(trial_fn, resources, store, (search.name,), args.resume, search.max_failures,
                      lambda: search_config(search, study),
                      [*tracking.logger_callbacks(args.mlflow_uri, search.name), saving_callback(study)])
    study.save()

    def trial_of(result):  # our TrialConfig from Tune's sampled config and its trial id
        return trial_from_sample(search, result.config, result.metrics.get("trial_id") or Path(result.path).name,
                                 store)

    planned = [PlannedTrial(trial_of(r)) for r in grid if r.config]
    trials = gather_results(planned, store, trainable.outcomes(grid, lambda r: trial_of(r).trial_id))
    best = save_best(trials, search, store)
    sections = [study.describe()] + ([f"best trial by validation accuracy, as a config: {shown(best)}\n"
                                      f"  run it alone: python -m sentisweep.train --config {shown(best)} --out "
                                      f"runs/{search.name}-best"] if best else [])
    warnings = [] if best else ["no trial of the search finished, so it found nothing "
                                f"(exit {exit_codes.TUNING_FAILED}); "
                                "the failed trials' errors are above"]
    results = driver.finish(f"search {search.name}", trials, search, store, started, sections, warnings)
    return driver.exit_status(results, best is None)


def search_config(search: SearchConfig, study: StudyStorage):
    """Tune's TuneConfig of a search (Optuna's TPE, ASHA) and the space Tune samples."""
    from ray import tune  # [Ray]
    from ray.tune.schedulers import ASHAScheduler  # [Ray]
    from ray.tune.search import ConcurrencyLimiter  # [Ray]

    space = {  # [Ray]
        "r": tune.choice(search.space.r), "alpha_multiple": tune.choice(search.space.alpha_multiple),
        "learning_rate": tune.loguniform(*search.space.learning_rate), "dropout": tune.uniform(*search.space.dropout),
    }
    several = len(search.objectives) > 1
    # one objective: Tune hands the space and metric to the searcher; several: the searcher is
    # given them itself (a list of metrics and modes), and TuneConfig's metric is ASHA's alone
    objectives = ({"space": space, "metric": search.objectives,
                   "mode": [OBJECTIVES[o] for o in search.objectives]} if several else {})
    if several:  # the costs come with a trial's final report only; Tune's documented switch lets the
        # validation reports before it (ASHA's) through without them
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    searcher = resumable_optuna_search(  # [Ray]
        sampler=tpe_sampler(search.num_samples, search.search_seed), storage=study.optuna_storage(),
        study_name=search.name, **objectives)
    if search.resources.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=search.resources.max_concurrent)  # [Ray]
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=search.scheduler.max_reports,  # [Ray]
                              grace_period=search.scheduler.grace_period,
                              reduction_factor=search.scheduler.reduction_factor)
    return tune.TuneConfig(metric="val_accuracy", mode="max", num_samples=search.num_samples,  # [Ray]
                           search_alg=searcher, scheduler=scheduler, reuse_actors=False), {} if several else space


@exit_codes.command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pin_args(args)  # every location made absolute here, before anything leaves this process
    search = load_config(args.config, "search", driver.overrides(args, num_samples=args.num_samples))
    store = driver.open_store(args.storage)
    print(f"search {search.name}: {search.num_samples} trials of {search.model} / {search.method} "
          f"(placement {search.placement}) -> {store.uri(search.name)}\n  space: {search.space.describe()}\n"
          f"  objectives: {', '.join(f'{o} ({OBJECTIVES[o]})' for o in search.objectives)}\n"
          f"  ASHA: grace period {search.scheduler.grace_period} reports, reduction factor "
          f"{search.scheduler.reduction_factor:g}; Optuna TPE seed {search.search_seed}, "
          f"the first {random_first(search.num_samples)} trials at random\n"
          f"  per trial: {search.resources.cpus_per_trial:g} CPU, {search.resources.gpus_per_trial:g} GPU; "
          f"at most {search.resources.max_concurrent or 'as many as fit'} at once"
          + (f"\n  plus baselines on the same splits: {', '.join(search.baselines)}" if search.baselines else ""),
          flush=True)
    print(check_data(search.data), flush=True)  # before any work, the dry run's too: every data check
    # the config as given is what --resume compares; trials run in working directories of their
    # own (sentisweep/locations.py), so they get its local paths pinned
    pinned = search.model_copy(update={"data": pinned_data(search.data), "model": pinned_model(search.model)})
    if args.dry_run:
        return guard.dry_run_done(store, search, args.resume)
    args.resume = guard.effective_resume(store, search.name, args.resume)
    return guard.run_guarded(store, search, args.resume, lambda: run(args, pinned, store))


if __name__ == "__main__":
    raise SystemExit(main())
