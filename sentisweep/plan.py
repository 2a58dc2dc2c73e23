"""Planning: the trials a sweep or a search runs, expanded in one place, with each trial's
memory estimate and GPU share. No Ray here: `sweeps/` hands the planned trials to Ray Tune.
A sweep's trial runs in `<storage>/<name>/trials/<trial_id>` (sentisweep/layout.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sentisweep.config import (
    MethodConfig,
    Resources,
    SearchConfig,
    SweepConfig,
    TrainingConfig,
    TrialConfig,
    trial_id,
)
from sentisweep.layout import trial_parts
from sentisweep.locations import pinned_data, pinned_model
from sentisweep.storage import Store
from sentisweep.trial.device import precision_problem
from sentisweep.trial.memory import MemoryEstimate, estimate_trial_memory
from sentisweep.trial.methods import (
    IncompatibleMethodError,
    check_compatible,
    get_method,
)
from sentisweep.trial.models import get_model_spec

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


def rate_warnings(sweep: SweepConfig, planned: list[PlannedTrial]) -> list[str]:
    """Each cell of an untuned sweep that runs at a learning rate outside its method's usual range
    (one rate for every method: the default 2e-5 leaves a LoRA trial near chance). A tuned sweep
    chooses each cell's rate within its range: none."""
    if sweep.tuning:
        return []
    found: dict[str, str] = {}
    for trial in (t for t in planned if t.runs):
        c = trial.config
        warning = get_method(c.method.name).rate_warning(c.training.learning_rate)
        if warning:
            found.setdefault(f"{c.model} / {c.resolved_variant()}", warning)
    return [f"{cell}: {warning}; give the variant its own training.learning_rate, or add `tuning:` to the "
            "config" for cell, warning in found.items()]


# A trial's estimate must fit in this share of its GPU memory: the rest is for what the planner
# does not count (the caching allocator's fragmentation, cuBLAS workspaces, transient casts).
# On one H100 run (benchmarks/README.md, memory item 6) the allocator reserved 3-9% above its peak.
FIT_SHARE = 0.9


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
            trial.gpus = min(1.0, max(1, math.ceil(8 * trial.memory.total / (FIT_SHARE * gpu_memory_bytes))) / 8)
        else:
            trial.gpus = 1.0  # nothing to size it by: a whole GPU
        too_big = trial.memory and gpu_memory_bytes and trial.memory.total > FIT_SHARE * gpu_memory_bytes * trial.gpus
        if device == "cuda" and too_big:
            problems.append(f"{trial.config.trial_id}: needs about {trial.memory.describe()}; its GPU share holds "
                            f"{gpu_memory_bytes * trial.gpus / 2**30:.1f} GiB ({trial.gpus:g} of "
                            f"{gpu_memory_bytes / 2**30:.1f} GiB), {FIT_SHARE:.0%} of it for what the planner counts. "
                            "Use a smaller batch_size (with gradient_accumulation), gradient_checkpointing, an adapter "
                            "method, or a larger GPU")
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
                tid = trial_id(model, label, seed)
                training = TrainingConfig.model_validate({**sweep.training.model_dump(), **(variant.training or {})})
                config = TrialConfig(model=pinned_model(model), method=variant.method_config(), seed=seed, data=data,
                                     training=training, output_dir=store.path(*trial_parts(sweep.name, tid)),
                                     sweep=sweep.name, trial_id=tid, variant=label)
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
    tid = trial_id(search.model, variant, search.seed, trial_key)
    return TrialConfig(
        model=search.model, seed=search.seed, data=search.data, sweep=search.name, trial_id=tid,
        variant=variant,
        method=MethodConfig(name=search.method, r=r, alpha=alpha, dropout=dropout, placement=search.placement),
        training=search.training.model_copy(update={"learning_rate": lr}),
        output_dir=store.path(*trial_parts(search.name, tid)))


