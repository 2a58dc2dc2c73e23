"""Equal-budget tuning on Ray Tune: every (model, method) cell of a sweep searched at the same
budget before its seeds run (sweeps/ablation.py). The cells, the sampled trials and the choice
are plain Python (`sentisweep/tuning.py`); Ray-specific lines are marked `# [Ray]`.

All cells share one Tuner, so both cores stay busy while one cell's last trial finishes (one
Tuner per cell left a core idle at each cell's end: 7.8 min a cell of the quick sweep). Each
cell keeps its own search and its own ASHA: `CellSearch` gives each cell an Optuna TPE over its
space and exactly `tuning.trials` trials, and `PerCellASHA` compares a trial only with its own
cell's (IA3's accuracy after 32 steps says nothing about full fine-tuning's). --resume
continues an interrupted tuning from Tune's saved state; choices already made are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sentisweep.config import SweepConfig, TrialConfig, Tuning
from sentisweep.layout import CHOSEN_FILE, RESULT_FILE, RESULTS_TABLE, TUNING_FOLDER, trial_parts
from sentisweep.plan import PlannedTrial
from sentisweep.results import SCHEMA, gather_results
from sentisweep.storage import Store
from sentisweep.tuning import (
    Cell,
    budget_text,
    cells,
    choose,
    describe_choice,
    reusable,
    sampled_trial,
)
from sweeps import trainable
from sweeps.study import tpe_sampler

CELL = "cell"  # the key of a sampled config that names its cell


def run_tuning_trial(params: dict, cells: dict, tuning: dict, sweep_name: str, storage: str) -> None:
    """Tune trainable: one sampled point of one cell's space as a trial."""
    from ray import tune  # [Ray]

    cell = cells[params[CELL]]
    cell = Cell(cell["model"], cell["label"], TrialConfig.model_validate(cell["base"]), cell["space"])
    trial = tuning_trial(cell, params, Tuning.model_validate(tuning), sweep_name,
                         tune.get_context().get_trial_id(), Store(storage))  # [Ray]
    trainable.execute_trial(trial, storage)


def tuning_trial(cell: Cell, sample: dict, tuning: Tuning, sweep_name: str, trial_key: str,
                 store: Store) -> TrialConfig:
    trial = sampled_trial(cell, sample, tuning, sweep_name, trial_key, "")
    return trial.model_copy(update={"output_dir": store.path(*trial_parts(trial.sweep, trial.trial_id))})


def param_space(cell: Cell) -> dict[str, Any]:
    from ray import tune  # [Ray]
    from ray.tune.search.optuna import OptunaSearch  # [Ray]

    space = {key: tune.loguniform(*values) if key == "learning_rate" else tune.choice(values)  # [Ray]
             for key, values in cell.space.items()}
    # in Optuna's own terms: given Tune's, OptunaSearch converts them and warns each cell that it did
    return OptunaSearch.convert_search_space(space)  # [Ray]


def cell_search(spaces: dict[str, dict], trials: int, seed: int):
    """A Tune Searcher with one Optuna TPE per cell: each suggestion goes to the cell with the most
    trials left (cells advance together), and each result to its own cell's TPE."""
    from ray import cloudpickle  # [Ray]
    from ray.tune.search import Searcher  # [Ray]
    from ray.tune.search.optuna import OptunaSearch  # [Ray]

    class CellSearch(Searcher):  # [Ray]
        def __init__(self):
            super().__init__(metric="val_accuracy", mode="max")
            self.searchers = {key: OptunaSearch(space=space, metric="val_accuracy", mode="max",  # [Ray]
                                                sampler=tpe_sampler(trials, seed))
                              for key, space in spaces.items()}
            self.left = {key: trials for key in spaces}
            self.cell_of: dict[str, str] = {}

        def suggest(self, trial_id: str):
            key = max(self.left, key=lambda k: self.left[k])
            if self.left[key] == 0:
                return Searcher.FINISHED
            self.left[key] -= 1
            self.cell_of[trial_id] = key
            return {**self.searchers[key].suggest(trial_id), CELL: key}

        def on_trial_result(self, trial_id: str, result: dict):
            self.searchers[self.cell_of[trial_id]].on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            self.searchers[self.cell_of[trial_id]].on_trial_complete(trial_id, result, error)

        def save(self, checkpoint_path: str):  # Tune's experiment state, for --resume
            with open(checkpoint_path, "wb") as out:
                cloudpickle.dump({"searchers": {k: s.__dict__ for k, s in self.searchers.items()},
                                  "left": self.left, "cell_of": self.cell_of}, out)

        def restore(self, checkpoint_path: str):
            with open(checkpoint_path, "rb") as saved:
                state = cloudpickle.load(saved)
            for key, searcher_state in state["searchers"].items():
                self.searchers[key].__dict__.update(searcher_state)
            self.left, self.cell_of = state["left"], state["cell_of"]

    return CellSearch()


def per_cell_asha(make_asha):
    """A Tune scheduler that is one ASHA per cell: a trial is stopped or promoted against its own
    cell's trials only. `make_asha()` makes each cell's (with metric and mode set)."""
    from ray.tune.schedulers import FIFOScheduler  # [Ray]

    class PerCellASHA(FIFOScheduler):  # [Ray]
        def __init__(self):
            super().__init__()
            self.cells: dict[str, Any] = {}

        def _of(self, trial):
            return self.cells.setdefault(trial.config[CELL], make_asha())

        def set_search_properties(self, metric, mode, **spec) -> bool:
            return True  # each cell's ASHA has its own (validation accuracy, max)

        def on_trial_add(self, tune_controller, trial):
            self._of(trial).on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result):
            return self._of(trial).on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller, trial, result):
            self._of(trial).on_trial_complete(tune_controller, trial, result)

        def on_trial_remove(self, tune_controller, trial):
            self._of(trial).on_trial_remove(tune_controller, trial)

        def debug_string(self) -> str:
            return "; ".join(f"{key}: {asha.debug_string()}" for key, asha in self.cells.items())

    return PerCellASHA()


def tune_together(todo: list[Cell], sweep: SweepConfig, store: Store, resume: bool) -> dict:
    """Search the cells in one Tuner; each cell's rows (one per tuning trial, whatever its status)."""
    import pandas as pd
    from ray import tune  # [Ray]

    from sweeps import driver

    tuning = sweep.tuning
    by_key = {c.key: c for c in todo}
    trial_fn = tune.with_parameters(  # [Ray]
        run_tuning_trial, storage=store.uri(), sweep_name=sweep.name, tuning=tuning.model_dump(mode="json"),
        cells={c.key: {"model": c.model, "label": c.label, "space": c.space, "base": c.base.model_dump(mode="json")}
               for c in todo})
    gpus = 1.0 if sweep.resources.gpus_per_trial == "auto" else sweep.resources.gpus_per_trial
    grid = driver.fit(trial_fn, {"cpu": sweep.resources.cpus_per_trial, "gpu": gpus}, store,
                      (sweep.name, TUNING_FOLDER), resume, sweep.max_failures, lambda: tuning_config(todo, sweep))

    def trial_of(result):
        key = result.metrics.get("trial_id") or Path(result.path).name
        return tuning_trial(by_key[result.config[CELL]], result.config, tuning, sweep.name, key, store)

    seen = trainable.outcomes(grid, lambda r: trial_of(r).trial_id)
    rows = {}
    for key in by_key:
        planned = [PlannedTrial(trial_of(r)) for r in grid if r.config and r.config.get(CELL) == key]
        rows[key] = gather_results(planned, store, seen) if planned else pd.DataFrame(columns=SCHEMA.names)
    return rows


def tuning_config(todo: list[Cell], sweep: SweepConfig):
    """Tune's TuneConfig of the cells' tuning: one TPE and one ASHA per cell; no param space (the
    searcher samples each cell's)."""
    from ray import tune  # [Ray]
    from ray.tune.schedulers import ASHAScheduler  # [Ray]
    from ray.tune.search import ConcurrencyLimiter  # [Ray]

    tuning = sweep.tuning
    # a validation report every eval_steps, then the finished row's: 125 steps / 32 -> 4 + 1. At
    # max_t Tune ends a trial, so a smaller max_t would stop the best before it writes its row
    steps = tuning.max_steps or trial_steps(todo[0].base)
    reports = -(-steps // tuning.eval_steps) + 1 if steps else tuning.scheduler.max_reports
    searcher = cell_search({c.key: param_space(c) for c in todo}, tuning.trials, tuning.search_seed)  # [Ray]
    if sweep.resources.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=sweep.resources.max_concurrent)  # [Ray]
    scheduler = per_cell_asha(lambda: ASHAScheduler(  # [Ray]
        metric="val_accuracy", mode="max", time_attr="training_iteration", max_t=reports,
        grace_period=tuning.scheduler.grace_period, reduction_factor=tuning.scheduler.reduction_factor))
    return tune.TuneConfig(metric="val_accuracy", mode="max", num_samples=len(todo) * tuning.trials,  # [Ray]
                           search_alg=searcher, scheduler=scheduler, reuse_actors=False), {}


def trial_steps(config: TrialConfig) -> int | None:
    """A trial's optimizer steps when its config says (max_steps, or epochs x batches of its train_size)."""
    t = config.training
    if t.max_steps:
        return t.max_steps
    if config.data.train_size:
        batches = -(-config.data.train_size // (t.batch_size * t.gradient_accumulation))  # 2,000 / 16 -> 125
        return int(-(-batches * t.epochs // 1))
    return None


def tune_cells(sweep: SweepConfig, planned: list[PlannedTrial], store: Store, resume: bool) -> dict[str, dict]:
    """Search every cell not yet chosen, write the choices and every tuning row, and return the
    choices: cell_key(model, variant) -> choice (sentisweep.tuning.choose)."""
    import pandas as pd

    parts = (sweep.name, TUNING_FOLDER, CHOSEN_FILE)
    saved = store.read_json(*parts) or {"cells": {}}
    chosen: dict[str, dict] = saved["cells"]
    todo = [c for c in cells(sweep, planned) if c.key not in chosen]
    print(f"tuning {len(todo)} cell(s) together: {budget_text(sweep.tuning, sweep)}", flush=True)
    if not todo:
        return chosen
    for cell in todo:
        print(f"  {cell.model} / {cell.label}: " + ", ".join(f"{k} {list(v)}" for k, v in cell.space.items()),
              flush=True)
    rows = tune_together(todo, sweep, store, resume)
    for cell in todo:
        chosen[cell.key] = choose(cell, rows[cell.key])
        print(describe_choice(chosen[cell.key]), flush=True)
    earlier = ([store.read_frame(sweep.name, TUNING_FOLDER, RESULTS_TABLE)]
               if store.exists(sweep.name, TUNING_FOLDER, RESULTS_TABLE) else [])
    store.write_frame(pd.concat([*earlier, *rows.values()], ignore_index=True), sweep.name, TUNING_FOLDER,
                      RESULTS_TABLE)
    store.write_bytes(json.dumps({"budget": sweep.tuning.model_dump(mode="json"),
                                  "budget_text": budget_text(sweep.tuning, sweep), "cells": chosen},
                                 indent=1).encode(), *parts)
    return chosen


def reuse_chosen_runs(sweep: SweepConfig, planned: list[PlannedTrial], chosen: dict[str, dict], store: Store) -> None:
    """A chosen tuning trial that ran exactly as a planned seed trial would (the seeds' own
    budget, at that seed) is that trial's row: written into its folder, it is not run twice."""
    import pyarrow as pa

    for cell in cells(sweep, planned):
        choice = chosen.get(cell.key) or {}
        trial = reusable(cell, choice, sweep.tuning, sweep.name, planned)
        if trial is None or store.exists(*trial_parts(sweep.name, trial.config.trial_id), RESULT_FILE):
            continue
        row = store.read_frame(*trial_parts(f"{sweep.name}/{TUNING_FOLDER}", choice["trial_id"]), RESULT_FILE)
        row = row.assign(trial_id=trial.config.trial_id, sweep=sweep.name, tuned_from=choice["trial_id"])
        store.write_table(pa.Table.from_pandas(row[SCHEMA.names], schema=SCHEMA, preserve_index=False),
                          *trial_parts(sweep.name, trial.config.trial_id), RESULT_FILE)
        print(f"  {trial.config.trial_id}: the chosen tuning trial {choice['trial_id']} ran exactly this; "
              "its row stands (not run twice)", flush=True)
