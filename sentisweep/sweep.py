"""Sweep configs: the axes (models x method variants x seeds) expanded into trial configs.

No Ray here: `sweeps/ablation.py` hands the expanded trials to Ray Tune. A sweep YAML
states the axes, the data, training defaults and per-trial resources; every trial is a
full `TrialConfig` whose output folder lies under `<storage>/<name>/trials/<trial_id>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from sentisweep.config import (
    ConfigError,
    DataConfig,
    MethodConfig,
    SafeName,
    TrainingConfig,
    TrialConfig,
    _format_pydantic,
    _Strict,
    read_yaml,
)
from sentisweep.storage import Store


class MethodVariant(MethodConfig):
    """A method with its parameters, an optional label, training overrides (e.g. another
    learning rate for the same method), and optionally the only models it runs on (a study
    like DistilBERT full fine-tuning against Qwen3-4B QLoRA is not a full cross product)."""

    label: str | None = None
    training: dict[str, Any] | None = None
    models: list[str] | None = Field(None, min_length=1)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in ("label", "training", "models")}

    def method_config(self) -> MethodConfig:
        return MethodConfig(name=self.name, **self.params())

    def resolved_label(self) -> str:
        if self.label:
            return self.label
        params = self.params()  # e.g. lora-r8-attention+ffn-lr2e-05
        parts = [self.name] + [f"{prefix}{_short(params[key])}" for key, prefix in
                               (("r", "r"), ("alpha", "alpha"), ("placement", "")) if key in params]
        for key, value in sorted((self.training or {}).items()):
            parts.append(f"{_TRAINING_ABBREVIATIONS.get(key, key)}{value:g}" if isinstance(value, float)
                         else f"{_TRAINING_ABBREVIATIONS.get(key, key)}{value}")
        return "-".join(parts)


_TRAINING_ABBREVIATIONS = {"learning_rate": "lr", "epochs": "ep", "batch_size": "bs", "max_length": "len"}


def _short(value: Any) -> str:
    return "+".join(value) if isinstance(value, list) else str(value)


class Resources(_Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    # 1 = a whole GPU per trial; a fraction lets small models share one (0.5 = two at once).
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, gt=0)


class SweepConfig(_Strict):
    name: SafeName = "sweep"
    description: str = ""  # printed before the sweep starts: what it is, how long it takes
    models: list[str] = Field(min_length=1)
    methods: list[MethodVariant] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(1, ge=0, description="retries of a trial whose worker process died")
    baselines: list[str] = Field(default_factory=list)

    @field_validator("methods", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value



@dataclass
class PlannedTrial:
    config: TrialConfig
    skip_reason: str | None = None


def load_sweep_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    return parse_sweep_config(read_yaml(path, overrides), source=str(path))


def parse_sweep_config(raw: dict[str, Any], source: str | None = None) -> SweepConfig:
    """Validate everything before any model loads or Ray starts; all problems at once."""
    from sentisweep.methods import method_problems
    from sentisweep.models import model_problems

    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_pydantic(err), source) from None
    problems = []
    for i, model in enumerate(sweep.models):
        problems += [p.replace("model =", f"models[{i}] =", 1) for p in model_problems(model)]
    for i, variant in enumerate(sweep.methods):
        problems += [p.replace("method.", f"methods[{i}].", 1) for p in method_problems(variant.method_config())]
        problems += [f"methods[{i}].models[{j}] = {model!r}: not one of the sweep's models {sweep.models}"
                     for j, model in enumerate(variant.models or []) if model not in sweep.models]
        if variant.training:
            try:
                TrainingConfig.model_validate({**sweep.training.model_dump(), **variant.training})
            except ValidationError as err:
                problems += [f"methods[{i}].{p}" for p in _format_pydantic(err)]
    labels = [v.resolved_label() for v in sweep.methods]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        problems.append(f"methods: variants {duplicates} appear twice; give them distinct 'label's")
    from sentisweep.baselines import baseline_problems

    problems += baseline_problems(sweep.baselines)
    if len(set(sweep.seeds)) != len(sweep.seeds):
        problems.append(f"seeds = {sweep.seeds}: repeated seeds would run the same trial twice")
    if problems:
        raise ConfigError(problems, source)
    return sweep


def expand(sweep: SweepConfig, store: Store, device: str) -> list[PlannedTrial]:
    """Every model x method variant x seed (a variant with `models` only on those) as a
    TrialConfig with absolute paths (Ray Tune runs trials with their own working directory),
    plus why a trial will be skipped. A trial's output_dir is its folder in the store,
    `<name>/trials/<trial_id>`."""
    from sentisweep.methods import IncompatibleMethodError, check_compatible
    from sentisweep.models import get_model_spec

    data = absolute_paths(sweep.data)
    planned = []
    for model in sweep.models:
        for variant in (v for v in sweep.methods if v.models is None or model in v.models):
            for seed in sweep.seeds:
                trial_id = re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{model}__{variant.resolved_label()}__s{seed}")
                training = TrainingConfig.model_validate({**sweep.training.model_dump(), **(variant.training or {})})
                config = TrialConfig(model=model, method=variant.method_config(), seed=seed, data=data,
                                     training=training, output_dir=store.path(*trial_parts(sweep.name, trial_id)),
                                     sweep=sweep.name, trial_id=trial_id)
                reason = None
                try:
                    check_compatible(config.method, get_model_spec(model), device)
                except IncompatibleMethodError as err:
                    reason = str(err)
                planned.append(PlannedTrial(config, reason))
    return planned


def trial_parts(name: str, trial_id: str) -> tuple[str, ...]:
    return (name, "trials", trial_id)


def absolute_paths(data: DataConfig) -> DataConfig:
    """Resolve the cache and a local data source against the driver's working directory:
    Ray Tune runs each trial in a working directory of its own."""
    source = Path(data.source).expanduser()
    return data.model_copy(update={"cache_dir": str(Path(data.cache_dir).expanduser().resolve()),
                                   "source": str(source.resolve()) if source.exists() else data.source})


def matrix_table(planned: list[PlannedTrial], resources: Resources, baselines: list[str] = ()) -> str:
    """The trial matrix as a Markdown table (the --dry-run output)."""
    rows = ["| # | trial | model | method | seed | lr | resources | status |", "|---|---|---|---|---|---|---|---|"]
    for i, trial in enumerate(planned, 1):
        c = trial.config
        res = f"{resources.cpus_per_trial:g} CPU" + (f", {resources.gpus_per_trial:g} GPU" if resources.gpus_per_trial else "")
        status = f"skip: {trial.skip_reason}" if trial.skip_reason else "run"
        rows.append(f"| {i} | {c.trial_id} | {c.model} | {c.method.name} {_params(c.method)} | {c.seed} | "
                    f"{c.training.learning_rate:g} | {res} | {status} |")
    runnable = sum(t.skip_reason is None for t in planned)
    rows.append(f"\n{len(planned)} trials: {runnable} to run, {len(planned) - runnable} skipped")
    if baselines:
        rows.append(f"plus baselines on the same splits: {', '.join(baselines)}")
    return "\n".join(rows)


def _params(method: MethodConfig) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in sorted(method.params().items())) or ""


def gather_results(planned: list[PlannedTrial], store: Store, outcomes: dict[str, dict] | None = None):
    """One TrialResult row per planned trial, whatever happened: the trial's own
    result.parquet; a `skipped` row; a `stopped` row for a trial a scheduler (ASHA) ended
    early; or a `failed` row for a trial that never wrote one (its worker died more often
    than max_failures allowed). `outcomes`: trial_id -> {"error", "metrics"} as Tune saw it."""
    import pandas as pd

    from sentisweep.results import SCHEMA
    from sentisweep.train import RESULT_FILE, identity

    frames = []
    for trial in planned:
        parts = (*trial_parts(trial.config.sweep, trial.config.resolved_trial_id()), RESULT_FILE)
        if store.exists(*parts):
            frames.append(store.read_frame(*parts))
            continue
        row = identity(trial.config)
        if trial.skip_reason:
            row.status, row.error, row.error_type = "skipped", trial.skip_reason, "IncompatibleMethodError"
        else:
            seen = (outcomes or {}).get(trial.config.trial_id, {})
            metrics = seen.get("metrics") or {}
            if not seen.get("error") and "val_accuracy" in metrics and not metrics.get("final"):
                row.status, row.best_val_accuracy = "stopped", metrics["val_accuracy"]
                row.error = f"stopped early by the scheduler at step {metrics.get('step')}"
            else:
                row.status, row.error_type = "failed", "TrialDidNotFinish"
                row.error = seen.get("error") or "the trial never wrote a result (was the sweep interrupted?)"
        frames.append(pd.DataFrame([row.to_row()], columns=SCHEMA.names))
    return pd.concat(frames, ignore_index=True)


def summary_table(results) -> str:
    """Best ok trial per model x method label (by accuracy), with the seed spread."""
    ok = results[results["status"] == "ok"].copy()
    lines = []
    if len(ok):
        ok["variant"] = ok["trial_id"].str.split("__").str[1]
        grouped = ok.groupby(["model", "variant"])
        lines += ["| model | method | seeds | accuracy mean | best | train s | peak MiB | trainable % |",
                  "|---|---|---|---|---|---|---|---|"]
        for (model, variant), group in grouped:
            lines.append(f"| {model} | {variant} | {len(group)} | {group['accuracy'].mean():.4f} | "
                         f"{group['accuracy'].max():.4f} | {group['train_seconds'].mean():.1f} | "
                         f"{group['peak_memory_bytes'].mean() / 2**20:.0f} | {group['trainable_percent'].mean():.2f} |")
    counts = results["status"].value_counts().to_dict()
    lines.append("trials: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "failed", "skipped", "stopped")))
    for _, row in results[results["status"] == "failed"].iterrows():
        lines.append(f"  failed {row['trial_id']}: {str(row['error']).splitlines()[0][:200]}")
    return "\n".join(lines)
