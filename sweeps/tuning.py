"""Equal-budget tuning on Ray Tune: one search per (model, method) cell of a sweep, run before
its seeds (sweeps/ablation.py). The cells, the sampled trials and the choice are plain Python
(`sentisweep/tuning.py`); Ray-specific lines are marked `# [Ray]`.

Each cell is one Tuner: Optuna's TPE over the cell's space with ASHA on validation accuracy,
`tuning.trials` trials. A cell already chosen (`tuning/chosen.json`) is not searched again on
--resume; a cell interrupted mid-search continues from Tune's saved state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from sentisweep.config import SweepConfig, TrialConfig, Tuning
from sentisweep.plan import PlannedTrial, gather_results, trial_parts
from sentisweep.storage import Store
from sentisweep.results import RESULT_FILE, SCHEMA
from sentisweep.tuning import (
    CHOSEN_FILE,
    TUNING_FOLDER,
    Cell,
    budget_text,
    cells,
    choose,
    chosen_key,
    reusable,
    sampled_trial,
)
from sweeps import trainable
from sweeps.study import resumable_optuna_search


def run_tuning_trial(params: dict, cell: dict, tuning: dict, sweep_name: str, storage: str) -> None:
    """Tune trainable: one sampled point of a cell's space as a trial."""
    from ray import tune  # [Ray]

    trial = tuning_trial(Cell(cell["model"], cell["label"], TrialConfig.model_validate(cell["base"]), cell["space"]),
                         params, Tuning.model_validate(tuning), sweep_name, tune.get_context().get_trial_id(),  # [Ray]
                         Store(storage))
    trainable.execute_trial(trial, storage)


def tuning_trial(cell: Cell, sample: dict, tuning: Tuning, sweep_name: str, trial_key: str,
                 store: Store) -> TrialConfig:
    identity = sampled_trial(cell, sample, tuning, sweep_name, trial_key, "")
    return identity.model_copy(update={"output_dir": store.path(*trial_parts(identity.sweep, identity.trial_id))})


def param_space(cell: Cell) -> dict[str, Any]:
    from ray import tune  # [Ray]

    return {key: tune.loguniform(*values) if key == "learning_rate" else tune.choice(values)  # [Ray]
            for key, values in cell.space.items()}


def tune_cell(cell: Cell, sweep: SweepConfig, store: Store, storage: str, resume: bool):
    """Search one cell; its rows (one per tuning trial, whatever its status)."""
    from ray import tune  # [Ray]
    from ray.tune.schedulers import ASHAScheduler  # [Ray]
    from ray.tune.search import ConcurrencyLimiter  # [Ray]

    tuning = sweep.tuning
    folder = store.path(sweep.name, TUNING_FOLDER, f"tune-{cell.key}")
    trial_fn = tune.with_parameters(run_tuning_trial, storage=storage, sweep_name=sweep.name,  # [Ray]
                                    tuning=tuning.model_dump(mode="json"),
                                    cell={"model": cell.model, "label": cell.label, "space": cell.space,
                                          "base": cell.base.model_dump(mode="json")})
    trial_fn = tune.with_resources(trial_fn, {"cpu": sweep.resources.cpus_per_trial,  # [Ray]
                                              "gpu": cell_gpus(sweep)})
    if resume and tune.Tuner.can_restore(folder, storage_filesystem=store.fs):  # [Ray]
        tuner = tune.Tuner.restore(folder, trainable=trial_fn, resume_unfinished=True,  # [Ray]
                                   restart_errored=True, storage_filesystem=store.fs)
    else:
        searcher = resumable_optuna_search(seed=tuning.search_seed)  # [Ray] TPE, seeded
        if sweep.resources.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=sweep.resources.max_concurrent)  # [Ray]
        steps = tuning.max_steps or None
        # a validation report every eval_steps, then the finished row's: 60 steps / 15 -> 4 + 1. At
        # max_t Tune ends a trial, so a smaller max_t would stop the best before it writes its row
        reports = -(-steps // tuning.eval_steps) + 1 if steps else tuning.scheduler.max_reports
        tuner = tune.Tuner(  # [Ray]
            trial_fn, param_space=param_space(cell),
            tune_config=tune.TuneConfig(
                metric="val_accuracy", mode="max", num_samples=tuning.trials, search_alg=searcher,
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=reports,
                                        grace_period=tuning.scheduler.grace_period,
                                        reduction_factor=tuning.scheduler.reduction_factor),
                reuse_actors=False),
            run_config=tune.RunConfig(name=f"tune-{cell.key}", storage_path=store.path(sweep.name, TUNING_FOLDER),  # [Ray]
                                      storage_filesystem=store.fs, verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=sweep.max_failures)))
    from ray_session import guard

    grid = guard.Interruption().fit(tuner)  # [Ray] Tuner.fit, KeyboardInterrupt on Ctrl-C

    def trial_of(result):
        key = result.metrics.get("trial_id") or Path(result.path).name
        return tuning_trial(cell, result.config, tuning, sweep.name, key, store)

    planned = [PlannedTrial(trial_of(r)) for r in grid if r.config]
    return gather_results(planned, store, trainable.outcomes(grid, lambda r: trial_of(r).trial_id))


def cell_gpus(sweep: SweepConfig) -> float:
    gpus = sweep.resources.gpus_per_trial
    return 1.0 if gpus == "auto" else gpus


def tune_cells(sweep: SweepConfig, planned: list[PlannedTrial], store: Store, storage: str,
               resume: bool) -> dict[str, dict]:
    """Search every cell not yet chosen, write the choices and every tuning row, and return the
    choices: chosen_key(model, variant) -> choice (sentisweep.tuning.choose)."""
    parts = (sweep.name, TUNING_FOLDER, CHOSEN_FILE)
    saved = json.loads("\n".join(store.read_lines(*parts)) or '{"cells": {}}')
    chosen: dict[str, dict] = saved["cells"]
    rows = [store.read_frame(sweep.name, TUNING_FOLDER, "results.parquet")] if chosen and store.exists(
        sweep.name, TUNING_FOLDER, "results.parquet") else []
    todo = [c for c in cells(sweep, planned) if chosen_key(c.model, c.label) not in chosen]
    print(f"tuning {len(todo)} cell(s): {budget_text(sweep.tuning, sweep)}", flush=True)
    for number, cell in enumerate(todo, 1):
        print(f"tuning cell {number}/{len(todo)}: {cell.model} / {cell.label} over "
              + ", ".join(f"{k} {list(v)}" for k, v in cell.space.items()), flush=True)
        cell_rows = tune_cell(cell, sweep, store, storage, resume)
        choice = choose(cell, cell_rows)
        chosen[chosen_key(cell.model, cell.label)] = choice
        rows.append(cell_rows)
        # written after every cell: an interrupted sweep keeps the cells it finished
        store.write_frame(pd.concat(rows, ignore_index=True), sweep.name, TUNING_FOLDER, "results.parquet")
        store.write_bytes(json.dumps({"budget": sweep.tuning.model_dump(mode="json"),
                                      "budget_text": budget_text(sweep.tuning, sweep), "cells": chosen},
                                     indent=1).encode(), *parts)
        print(describe_choice(choice), flush=True)
    return chosen


def reuse_chosen_runs(sweep: SweepConfig, planned: list[PlannedTrial], chosen: dict[str, dict], store: Store) -> None:
    """A chosen tuning trial that ran exactly as a planned seed trial would (the seeds' own
    budget, at that seed) is that trial's row: written into its folder, it is not run twice."""
    import pyarrow as pa

    for cell in cells(sweep, planned):
        choice = chosen.get(chosen_key(cell.model, cell.label)) or {}
        trial = reusable(cell, choice, sweep.tuning, sweep.name, planned)
        if trial is None or store.exists(*trial_parts(sweep.name, trial.config.trial_id), RESULT_FILE):
            continue
        row = store.read_frame(*trial_parts(f"{sweep.name}/{TUNING_FOLDER}", choice["trial_id"]), RESULT_FILE)
        row = row.assign(trial_id=trial.config.trial_id, sweep=sweep.name, tuned_from=choice["trial_id"])
        store.write_table(pa.Table.from_pandas(row[SCHEMA.names], schema=SCHEMA, preserve_index=False),
                          *trial_parts(sweep.name, trial.config.trial_id), RESULT_FILE)
        print(f"  {trial.config.trial_id}: the chosen tuning trial {choice['trial_id']} ran exactly this; "
              "its row stands (not run twice)", flush=True)


def describe_choice(choice: dict) -> str:
    where = f"{choice['model']} / {choice['variant']}"
    spent = (f"{choice['trials']} trials ({choice['ok']} finished, {choice['stopped']} stopped early, "
             f"{choice['failed']} failed), {choice['steps']} steps")
    if not choice.get("values"):
        return f"  {where}: {choice['error']}; {spent}"
    values = ", ".join(f"{k} {v:.2e}" if k == "learning_rate" else f"{k} {v}" for k, v in choice["values"].items())
    lines = [f"  {where}: chose {values} (validation accuracy {choice['val_accuracy']:.4f}); {spent}"]
    lines += [f"    at the edge: {flag}" for flag in choice["edges"]]
    return "\n".join(lines)
