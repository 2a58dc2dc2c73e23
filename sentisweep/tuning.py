"""Equal-budget tuning of a sweep's cells, plain Python (sweeps/tuning.py runs the searches on
Ray Tune): each (model, method variant) cell's search space, a sampled point as a trial, the
choice by validation accuracy, and the flags of a choice at the edge of its range.

A method judged at a hand-set learning rate may be judged under-trained, not worse (issue 26:
IA3 at 5e-4 barely moved its loss). With `tuning:` in a sweep config every cell gets the same
budget, `trials` searched trials of at most `max_steps` steps each, and its best settings run on
every seed. Results: `<storage>/<name>/tuning/results.parquet` (every tuning trial, status
`ok` or `stopped` by ASHA) and `<name>/tuning/chosen.json` (the budget and each cell's choice).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sentisweep.config import MethodConfig, SweepConfig, TrialConfig, Tuning, short, trial_id
from sentisweep.layout import TUNING_FOLDER
from sentisweep.results import best_by_validation
from sentisweep.trial.methods import METHODS, get_method, method_problems

# the test split of a tuning trial: its choice is made on validation, so its test is not paid for
# `trials` times per cell (its rows' test figures are not reported)
TUNING_TEST_ROWS = 64
EDGE = 0.1  # a chosen learning rate in the outer 10% of its log range is "at the edge"


@dataclass
class Cell:
    """One (model, method variant) of a sweep, with what its search covers."""

    model: str
    label: str
    base: TrialConfig  # the cell's trial at the tuning seed, as planned
    space: dict[str, Any]  # learning_rate: (low, high), log-uniform; a method parameter: [choices]

    @property
    def key(self) -> str:
        return cell_key(self.model, self.label)


def variant_space(method: str, tune: dict[str, Any] | None) -> dict[str, Any]:
    """A variant's search space: the method's learning-rate range unless `tune` gives one, and
    the method parameters `tune` lists."""
    tune = dict(tune or {})
    rates = tune.pop("learning_rate", None) or get_method(method).learning_rates
    return ({"learning_rate": tuple(rates)} if rates else {}) | tune


def space_problems(sweep: SweepConfig) -> list[str]:
    """What is wrong with each variant's `tune` (or its missing learning-rate range), one line each."""
    problems = []
    for i, variant in enumerate(sweep.methods):
        field = f"methods[{i}].tune"
        if variant.name not in METHODS:
            continue  # reported already
        method = get_method(variant.name)
        if sweep.tuning is None:
            if variant.tune:
                problems.append(f"{field} = {variant.tune}: only used with the sweep's `tuning:` section; add one "
                                "(e.g. tuning: {trials: 4, eval_steps: 20}) or remove it")
            continue
        if not method.trains:
            if variant.tune:
                problems.append(f"{field} = {variant.tune}: method {variant.name!r} does not train; nothing to tune")
            continue
        rates = (variant.tune or {}).get("learning_rate", method.learning_rates)
        if rates is None:
            problems.append(f"{field}.learning_rate: method {variant.name!r} has no default range; give "
                            "[low, high] (e.g. [1.0e-4, 1.0e-2])")
        elif (not isinstance(rates, list | tuple) or len(rates) != 2
              or not all(isinstance(v, int | float) for v in rates) or not 0 < rates[0] < rates[1] < 1):
            problems.append(f"{field}.learning_rate = {rates!r}: need [low, high] with 0 < low < high < 1")
        for key, choices in (variant.tune or {}).items():
            if key == "learning_rate":
                continue
            if key not in method.params.model_fields:
                problems.append(f"{field}.{key}: {variant.name!r} has no parameter {key!r}; it takes "
                                f"{sorted(method.params.model_fields) or 'none'} (and learning_rate)")
            elif not isinstance(choices, list) or not choices:
                problems.append(f"{field}.{key} = {choices!r}: give a list of values to choose from")
            elif key in variant.params():
                problems.append(f"{field}.{key}: also fixed at {variant.params()[key]!r} in methods[{i}]; "
                                "keep one of the two")
            else:
                for value in choices:  # each checked by the method's own parameter model
                    problems += [f"{field}.{p.removeprefix('method.')}" for p in method_problems(
                        MethodConfig(name=variant.name, **{key: value}))]
    return problems


def cells(sweep: SweepConfig, planned) -> list[Cell]:
    """The cells to tune: one per (model, variant) whose trials train and run here."""
    assert sweep.tuning is not None
    seed = sweep.tuning.seed if sweep.tuning.seed is not None else sweep.seeds[0]
    variants = {v.resolved_label(): v for v in sweep.methods}
    found: dict[tuple[str, str], Cell] = {}
    for trial in planned:
        c = trial.config
        if trial.skip_reason or not get_method(c.method.name).trains or (c.model, c.variant) in found:
            continue
        variant = variants[c.variant]
        found[(c.model, c.variant)] = Cell(c.model, c.variant, c.model_copy(update={"seed": seed}),
                                           variant_space(variant.name, variant.tune))
    return list(found.values())


def with_values(config: TrialConfig, values: dict[str, Any]) -> TrialConfig:
    """`config` with a learning rate and method parameters set (a sampled point, or a cell's choice)."""
    method = {k: v for k, v in values.items() if k != "learning_rate"}
    update: dict[str, Any] = {"method": config.method.model_copy(update=method)}
    if "learning_rate" in values:
        update["training"] = config.training.model_copy(update={"learning_rate": float(values["learning_rate"])})
    return config.model_copy(update=update)


def sampled_trial(cell: Cell, sample: dict[str, Any], tuning: Tuning, sweep_name: str, trial_key: str,
                  output_dir: str) -> TrialConfig:
    """One tuning trial: the cell's trial at the sampled values, within the tuning budget. With
    no max_steps of its own it is the seeds' own run at the tuning seed, whole (test split and
    checkpoint): the chosen one then stands as that seed's run (`reusable`)."""
    training: dict[str, Any] = {"eval_steps": tuning.eval_steps}
    data: dict[str, Any] = {}
    if tuning.max_steps:  # a shorter run, judged on validation: no checkpoint, a token test split
        training.update(max_steps=tuning.max_steps, keep_checkpoint=False)
        data["test_size"] = min(cell.base.data.test_size or TUNING_TEST_ROWS, TUNING_TEST_ROWS)
    base = cell.base.model_copy(update={"training": cell.base.training.model_copy(update=training),
                                        "data": cell.base.data.model_copy(update=data)})
    values = {k: sample[k] for k in cell.space}
    return with_values(base, values).model_copy(update={
        "sweep": f"{sweep_name}/{TUNING_FOLDER}", "variant": cell.label, "output_dir": output_dir,
        "trial_id": trial_id(cell.model, cell.label, cell.base.seed, trial_key)})


def values_of(row: pd.Series, space: dict[str, Any]) -> dict[str, Any]:
    """The searched values a tuning row ran with."""
    params = json.loads(row["method_params"])
    return {k: float(row["learning_rate"]) if k == "learning_rate" else params[k] for k in space}


def edges(values: dict[str, Any], space: dict[str, Any]) -> list[str]:
    """A chosen value at the edge of what was searched: the best may lie beyond it."""
    flags = []
    for key, value in values.items():
        if key == "learning_rate":
            low, high = space[key]
            where = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
            if where < EDGE or where > 1 - EDGE:
                side = "low" if where < EDGE else "high"
                flags.append(f"learning_rate {value:.2e} at the {side} edge of [{low:g}, {high:g}]: widen the range")
        else:
            choices = space[key]
            ordered = all(isinstance(c, int | float) for c in choices)
            if ordered and len(choices) > 2 and value in (min(choices), max(choices)):
                side = "smallest" if value == min(choices) else "largest"
                flags.append(f"{key} {short(value)} is the {side} of {choices}: widen the choices")
    return flags


def choose(cell: Cell, rows: pd.DataFrame) -> dict[str, Any]:
    """The cell's choice from its tuning rows: the best finished trial by validation accuracy,
    what the budget bought (trials by status, optimizer steps), and edge flags."""
    counts = rows["status"].value_counts().to_dict()
    steps = rows["train_steps"].fillna(0).astype(int)
    summary = {"model": cell.model, "variant": cell.label, "seed": cell.base.seed,
               "space": {k: list(v) for k, v in cell.space.items()}, "trials": len(rows),
               **{s: int(counts.get(s, 0)) for s in ("ok", "stopped", "failed")}, "steps": int(steps.sum())}
    best = best_by_validation(rows)
    if best is None:
        return {**summary, "values": None, "val_accuracy": None, "edges": [],
                "error": "no tuning trial finished", "trial_errors": trial_errors(rows)}
    values = values_of(best, cell.space)
    return {**summary, "values": values, "val_accuracy": float(best["best_val_accuracy"]),
            "trial_id": best["trial_id"], "edges": edges(values, cell.space)}


def trial_errors(rows: pd.DataFrame) -> list[str]:
    """The distinct first lines of a cell's failed tuning trials' errors, most frequent first."""
    if "error" not in rows:
        return []
    failed = rows[rows["status"] == "failed"]["error"].dropna().map(lambda e: str(e).strip().splitlines()[0][:300])
    return [f"{error} ({count} trial{'s' if count > 1 else ''})" for error, count in failed.value_counts().items()]


def apply_choices(planned, chosen: dict[str, dict[str, Any]], untuned_fallback: bool = False) -> None:
    """Every planned trial of a tuned cell at the cell's chosen values (all its seeds), its
    `tuning` "chosen". A cell whose tuning found nothing does not run its seeds at settings
    nobody chose: they are `failed` rows ("failed"), unless the user asked for the configured
    settings (`untuned_fallback`: "untuned", said on the final screen and kept out of verdicts)."""
    for trial in planned:
        c = trial.config
        choice = chosen.get(cell_key(c.model, c.variant))
        if choice is None or trial.skip_reason:
            continue  # not a tuned cell (a method that does not train), or a trial that cannot run here
        if choice.get("values"):
            trial.config, trial.tuning = with_values(c, choice["values"]), "chosen"
        elif untuned_fallback:
            trial.tuning = "untuned"
        else:
            trial.tuning = "failed"
            trial.blocked = (f"not run: its cell's tuning found no setting ({choice['error']}; "
                             f"{'; '.join(choice.get('trial_errors') or []) or 'no error recorded'}). Fix the "
                             "cause and run again with --resume, or pass --untuned-fallback to run it at the "
                             "configured settings")


def reusable(cell: Cell, choice: dict[str, Any], tuning: Tuning, sweep_name: str, planned):
    """The planned trial that the cell's chosen tuning trial already is, or None: the same in
    everything that changes a result (TrialConfig.digest), which holds when the tuning ran the
    seeds' own budget and evaluation steps (no `max_steps`, `eval_steps` = training.eval_steps)."""
    if not choice.get("values"):
        return None
    ran = sampled_trial(cell, choice["values"], tuning, sweep_name, "chosen", "")
    for trial in planned:
        c = trial.config
        if (c.model, c.variant, c.seed) == (cell.model, cell.label, cell.base.seed) and c.digest() == ran.digest():
            return trial
    return None


def cell_key(model: str, label: str) -> str:
    """A cell's one key, in chosen.json, in Tune's sampled configs and in the dry-run matrix:
    `model__label`, the trial id without its seed (safe in a folder name)."""
    return trial_id(model, label, 0).removesuffix("__s0")


def random_first(trials: int) -> int:
    """How many of a search's `trials` Optuna's TPE draws at random before it models. Its default,
    10, made any search of 10 trials or fewer (ours are 3 to 8) a random search: search_vs_grid.py
    (retired; benchmarks/README.md) measured that as 9.3 points below the grid. A fifth of the
    trials, at least 2: 3 trials 2, 6 trials 2, 50 trials 10 (Optuna's own figure)."""
    return max(2, trials // 5)


def budget_text(tuning: Tuning, sweep: SweepConfig) -> str:
    steps = f"at most {tuning.max_steps} steps" if tuning.max_steps else "at most the seeds' own steps"
    return (f"each cell: {tuning.trials} trials of {steps}, validation every {tuning.eval_steps} steps, "
            f"ASHA (grace {tuning.scheduler.grace_period} report(s), reduction factor "
            f"{tuning.scheduler.reduction_factor:g}), Optuna TPE (seed {tuning.search_seed}, "
            f"the first {random_first(tuning.trials)} at random), at trial seed "
            f"{tuning.seed if tuning.seed is not None else sweep.seeds[0]}; chosen by validation accuracy")


def describe_choice(choice: dict) -> str:
    where = f"{choice['model']} / {choice['variant']}"
    spent = (f"{choice['trials']} trials ({choice['ok']} finished, {choice['stopped']} stopped early, "
             f"{choice['failed']} failed), {choice['steps']} steps")
    if not choice.get("values"):
        errors = "".join(f"\n    {error}" for error in choice.get("trial_errors") or [])
        return f"  {where}: FAILED, {choice['error']}; {spent}{errors}"
    values = ", ".join(f"{k} {v:.2e}" if k == "learning_rate" else f"{k} {v}" for k, v in choice["values"].items())
    lines = [f"  {where}: chose {values} (validation accuracy {choice['val_accuracy']:.4f}); {spent}"]
    lines += [f"    at the edge: {flag}" for flag in choice["edges"]]
    return "\n".join(lines)
