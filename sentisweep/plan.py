"""Planning: every kind of config file loaded and checked against the registries, and the
trials a sweep or a search runs, expanded in one place. No Ray here: `sweeps/` hands the
planned trials to Ray Tune.

A config file says what it is with `kind:` (trial, sweep, search, embed_xgb), or is
recognised by its fields. Every problem is reported at once, before any model loads or
Ray starts. A sweep's trial runs in `<storage>/<name>/trials/<trial_id>`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from sentisweep.config import (
    ConfigError,
    MethodConfig,
    Resources,
    SearchConfig,
    SweepConfig,
    TrainingConfig,
    TrialConfig,
    format_pydantic,
    read_yaml,
    short,
    trial_id,
)
from sentisweep.locations import pinned_data, pinned_model
from sentisweep.results import RESULT_FILE, SCHEMA
from sentisweep.storage import Store
from sentisweep.trial.device import precision_problem
from sentisweep.trial.memory import MemoryEstimate, estimate_trial_memory
from sentisweep.trial.methods import (
    METHODS,
    IncompatibleMethodError,
    check_compatible,
    method_problems,
    resolved_params,
)
from sentisweep.trial.models import architecture_problems, get_model_spec, model_problems
from sentisweep.trial.run import identity
from sentisweep.tuning import space_problems

KINDS = ("trial", "sweep", "search", "embed_xgb")
SEARCHED_PARAMETERS = ("r", "alpha", "dropout")  # what a search's space sets on the method


# -- loading ------------------------------------------------------------------------------

def load_config(path: str | Path, kind: str, overrides: dict[str, Any] | None = None):
    """The config in `path`, validated as `kind`; a file that says or looks like another kind
    is refused with the command that runs it."""
    raw = read_yaml(path, overrides)
    found = raw.get("kind") or _looks_like(raw)
    if found and found != kind:
        raise ConfigError([f"kind = {found!r}: this is a {found} config, not a {kind} config "
                           f"({RUNS_WITH.get(found, 'see README')})"], str(path))
    if kind == "embed_xgb":
        from sentisweep.probe.study import parse_embed_xgb_config

        return parse_embed_xgb_config(raw, str(path))
    return PARSERS[kind](raw, str(path))


RUNS_WITH = {"trial": "python -m sentisweep.train --config", "sweep": "python sweeps/ablation.py --config",
             "search": "python sweeps/search.py --config", "embed_xgb": "python ray_jobs/embed_xgb.py --config"}


def _looks_like(raw: dict[str, Any]) -> str | None:
    if "space" in raw or "num_samples" in raw:
        return "search"
    if isinstance(raw.get("methods"), list):
        return "sweep"
    if isinstance(raw.get("models"), list) and any(isinstance(m, dict) for m in raw["models"]):
        return "embed_xgb"
    return None


def _validated(model_class, raw: Any, source: str | None, extra_problems=()):
    try:
        return model_class.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_pydantic(err) + list(extra_problems), source) from None


def parse_trial_config(raw: dict[str, Any], source: str | None = None) -> TrialConfig:
    """Types first, then registry names and method parameters; every problem at once."""
    config = _validated(TrialConfig, raw, source, _raw_registry_problems(raw))
    problems = model_problems(config.model) + method_problems(config.method)
    if not problems:
        problems = _architecture_problems(config.model, config.training.max_length, config.method)
    if problems:
        raise ConfigError(problems, source)
    return config


def _architecture_problems(model: str, max_length: int, method: MethodConfig, where: str = "") -> list[str]:
    """What the model's config says cannot work (a max_length past its positions, module names
    it lacks), for a known model and method; `where` prefixes the fields (a sweep's `methods[1].`)."""
    placement = resolved_params(method).get("placement")
    problems = architecture_problems(model, max_length, placement)
    return [p.replace("method.", where, 1) if where else p for p in problems]


def _raw_registry_problems(raw: Any) -> list[str]:
    """Registry checks on whatever parts of an invalid trial config are well-typed, so one
    run shows every mistake."""
    if not isinstance(raw, dict):
        return []
    problems = model_problems(raw["model"]) if isinstance(raw.get("model"), str) else []
    method = raw.get("method")
    method = {"name": method} if isinstance(method, str) else method
    if isinstance(method, dict):
        try:
            problems += method_problems(MethodConfig.model_validate(method))
        except ValidationError:
            pass  # already reported field by field
    return problems


def parse_sweep_config(raw: dict[str, Any], source: str | None = None) -> SweepConfig:
    sweep = _validated(SweepConfig, raw, source)
    problems = []
    for i, model in enumerate(sweep.models):
        problems += [p.replace("model =", f"models[{i}] =", 1) for p in model_problems(model)]
    repeated = sorted({m for m in sweep.models if sweep.models.count(m) > 1})
    if repeated:
        problems.append(f"models = {sweep.models}: {repeated} listed twice would run the same trials twice")
    for i, variant in enumerate(sweep.methods):
        problems += [p.replace("method.", f"methods[{i}].", 1) for p in method_problems(variant.method_config())]
        problems += [f"methods[{i}].models[{j}] = {model!r}: not one of the sweep's models {sweep.models}"
                     for j, model in enumerate(variant.models or []) if model not in sweep.models]
        if variant.training:
            try:
                TrainingConfig.model_validate({**sweep.training.model_dump(), **variant.training})
            except ValidationError as err:
                problems += [f"methods[{i}].{p}" for p in format_pydantic(err)]
    labels = [v.resolved_label() for v in sweep.methods]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        problems.append(f"methods: variants {duplicates} appear twice; give them distinct 'label's")
    from sentisweep.probe.baselines import baseline_problems

    problems += baseline_problems(sweep.baselines)
    problems += space_problems(sweep)
    if len(set(sweep.seeds)) != len(sweep.seeds):
        problems.append(f"seeds = {sweep.seeds}: repeated seeds would run the same trial twice")
    if not problems:
        for model in sweep.models:
            for i, variant in enumerate(sweep.methods):
                if variant.models is None or model in variant.models:
                    training = {**sweep.training.model_dump(), **(variant.training or {})}
                    problems += [f"{model}: {p}" for p in _architecture_problems(
                        model, training["max_length"], variant.method_config(), f"methods[{i}].")]
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index), source)
    return sweep


def parse_search_config(raw: dict[str, Any], source: str | None = None) -> SearchConfig:
    search = _validated(SearchConfig, raw, source)
    problems = model_problems(search.model)
    if search.method not in METHODS:
        problems.append(METHODS.unknown(search.method, "method"))
    elif not METHODS.get(search.method).takes(*SEARCHED_PARAMETERS):
        takes = sorted(name for name, spec in METHODS.items() if spec.takes(*SEARCHED_PARAMETERS))
        problems.append(f"method = {search.method!r}: the search space sets {', '.join(SEARCHED_PARAMETERS)}, "
                        f"which it does not take; allowed: {', '.join(takes)}")
    else:
        problems += method_problems(MethodConfig(name=search.method, placement=search.placement))
    if not problems:
        problems += _architecture_problems(search.model, search.training.max_length,
                                           MethodConfig(name=search.method, placement=search.placement))
    from sentisweep.probe.baselines import baseline_problems

    problems += baseline_problems(search.baselines)
    if search.resources.gpus_per_trial == "auto":
        problems.append("resources.gpus_per_trial = 'auto': a search's trials differ only in their sampled "
                        "values; give the share of a GPU each gets (e.g. 1 or 0.5)")
    if search.training.eval_steps is None and search.training.epochs < 2:
        problems.append("training.eval_steps = None with fewer than 2 epochs: the scheduler would see one "
                        "validation report per trial; set eval_steps")
    if problems:
        raise ConfigError(problems, source)
    return search


PARSERS = {"trial": parse_trial_config, "sweep": parse_sweep_config, "search": parse_search_config}


# -- the trials ---------------------------------------------------------------------------

@dataclass
class PlannedTrial:
    config: TrialConfig
    skip_reason: str | None = None
    memory: MemoryEstimate | None = None  # set by plan_memory
    gpus: float = 0.0  # the trial's share of a GPU (Ray's resource request)
    tuning: str | None = None  # its cell's tuning: chosen | untuned | failed (sentisweep.tuning.apply_choices)
    blocked: str | None = None  # why a trial that could run does not (its cell's tuning failed)

    @property
    def runs(self) -> bool:
        return self.skip_reason is None and self.blocked is None


def plan_memory(planned: list[PlannedTrial], resources: Resources, gpu_memory_bytes: int | None) -> list[str]:
    """Each runnable trial's memory estimate and GPU share; the trials that cannot fit theirs.
    `gpus_per_trial: auto` gives each the eighths of the GPU its estimate needs (at least one)."""
    device = "cuda" if resources.uses_gpus else "cpu"
    problems = []
    for trial in (t for t in planned if t.skip_reason is None):
        precision = trial.config.training.precision
        precision = precision if precision != "auto" else ("bf16" if device == "cuda" else "fp32")
        trial.memory = estimate_trial_memory(trial.config, device, precision)
        if resources.gpus_per_trial != "auto":
            trial.gpus = resources.gpus_per_trial
        elif trial.memory and gpu_memory_bytes:
            trial.gpus = min(1.0, max(1, math.ceil(8 * trial.memory.total / gpu_memory_bytes)) / 8)
        else:
            trial.gpus = 1.0  # nothing to size it by: a whole GPU
        if device == "cuda" and trial.memory and gpu_memory_bytes and trial.memory.total > gpu_memory_bytes * trial.gpus:
            problems.append(f"{trial.config.trial_id}: needs about {trial.memory.describe()}; its GPU share holds "
                            f"{gpu_memory_bytes * trial.gpus / 2**30:.1f} GiB ({trial.gpus:g} of "
                            f"{gpu_memory_bytes / 2**30:.1f} GiB). Use a smaller batch_size (with "
                            "gradient_accumulation), gradient_checkpointing, an adapter method, or a larger GPU")
    return problems


def expand(sweep: SweepConfig, store: Store, device: str) -> list[PlannedTrial]:
    """Every model x method variant x seed (a variant with `models` only on those) as a
    TrialConfig with its locations pinned (sentisweep/locations.py: Ray Tune runs trials in
    working directories of their own), plus why a trial will be skipped. A trial's output_dir
    is its folder in the store, `<name>/trials/<trial_id>`."""
    data = pinned_data(sweep.data)
    planned = []
    for model in sweep.models:
        for variant in (v for v in sweep.methods if v.models is None or model in v.models):
            for seed in sweep.seeds:
                label = variant.resolved_label()
                identity = trial_id(model, label, seed)
                training = TrainingConfig.model_validate({**sweep.training.model_dump(), **(variant.training or {})})
                config = TrialConfig(model=pinned_model(model), method=variant.method_config(), seed=seed, data=data,
                                     training=training, output_dir=store.path(*trial_parts(sweep.name, identity)),
                                     sweep=sweep.name, trial_id=identity, variant=label)
                reason = precision_problem(device, training.precision)
                try:
                    check_compatible(config.method, get_model_spec(model), device)
                except IncompatibleMethodError as err:
                    reason = str(err)
                planned.append(PlannedTrial(config, reason))
    return planned


def trial_from_sample(search: SearchConfig, sample: dict[str, Any], trial_key: str, store: Store) -> TrialConfig:
    """The TrialConfig of one sampled point of a search: r, alpha_multiple, learning_rate, dropout."""
    r = int(sample["r"])
    alpha = r * float(sample["alpha_multiple"])
    lr, dropout = float(sample["learning_rate"]), float(sample["dropout"])
    variant = f"{search.method}-r{r}-alpha{alpha:g}-lr{lr:.2e}-drop{dropout:.2f}"
    identity = trial_id(search.model, variant, search.seed, trial_key)
    return TrialConfig(
        model=search.model, seed=search.seed, data=search.data, sweep=search.name, trial_id=identity,
        variant=variant,
        method=MethodConfig(name=search.method, r=r, alpha=alpha, dropout=dropout, placement=search.placement),
        training=search.training.model_copy(update={"learning_rate": lr}),
        output_dir=store.path(*trial_parts(search.name, identity)))


def trial_parts(name: str, trial: str) -> tuple[str, ...]:
    return (name, "trials", trial)


def attempts_parts(name: str, trial: str) -> tuple[str, ...]:
    """Where a sweep logs each start of a trial (beside its folder, which a retry replaces)."""
    return (name, "attempts", f"{trial}.jsonl")


def attempts_of(store: Store, name: str, trial: str) -> tuple[int, str]:
    """(how many times the trial started, the JSON list of each start's host)."""
    starts = [json.loads(line) for line in store.read_lines(*attempts_parts(name, trial))]
    return len(starts), json.dumps([start["host"] for start in starts])


def matrix_table(planned: list[PlannedTrial], resources: Resources, baselines: list[str] = (),
                 tuned: dict[tuple[str, str], dict] | None = None) -> str:
    """The trial matrix as a Markdown table (the --dry-run output), with each trial's memory estimate.
    `tuned`: (model, variant) -> search space of the cells equal-budget tuning will set."""
    rows = ["| # | trial | model | method | seed | lr | resources | memory (est.) | status |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, trial in enumerate(planned, 1):
        c = trial.config
        res = f"{resources.cpus_per_trial:g} CPU" + (f", {trial.gpus:g} GPU" if trial.gpus else "")
        memory = f"{trial.memory.total / 2**30:.2f} GiB" if trial.memory else "-"
        status = f"skip: {trial.skip_reason}" if trial.skip_reason else "run"
        params = " ".join(f"{k}={short(v)}" for k, v in sorted(c.method.params().items()))
        space = (tuned or {}).get((c.model, c.variant))
        lr = f"{c.training.learning_rate:g}"
        if space is not None and not trial.skip_reason:
            lr = "tuned: " + ", ".join(f"{k} {list(v)}" for k, v in space.items())
        rows.append(f"| {i} | {c.trial_id} | {c.model} | {c.method.name} {params} | {c.seed} | "
                    f"{lr} | {res} | {memory} | {status} |")
    runnable = sum(t.skip_reason is None for t in planned)
    rows.append(f"\n{len(planned)} trials: {runnable} to run, {len(planned) - runnable} skipped")
    if baselines:
        rows.append(f"plus baselines on the same splits: {', '.join(baselines)}")
    return "\n".join(rows)


def gather_results(planned: list[PlannedTrial], store: Store, outcomes: dict[str, dict] | None = None):
    """One TrialResult row per planned trial, whatever happened: the trial's own
    result.parquet; a `skipped` row; a `stopped` row for a trial a scheduler (ASHA) ended
    early; or a `failed` row for a trial that never wrote one (its worker died more often
    than max_failures allowed). `outcomes`: trial_id -> {"error", "metrics"} as Tune saw it."""
    frames = []
    for trial in planned:
        parts = (*trial_parts(trial.config.sweep, trial.config.resolved_trial_id()), RESULT_FILE)
        if store.exists(*parts):
            frames.append(store.read_frame(*parts).assign(tuning=trial.tuning))
            continue
        row = identity(trial.config)
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
