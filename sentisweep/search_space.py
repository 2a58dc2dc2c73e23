"""Search configs: one model and method, a space over LoRA rank, alpha, learning rate and
dropout. No Ray here: `sweeps/search.py` turns the space into Ray Tune / Optuna terms.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

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
from sentisweep.sweep import Resources, trial_parts

ADAPTER_METHODS = ("lora", "dora", "qlora")


class SearchSpace(_Strict):
    r: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)  # a choice
    alpha_multiple: list[float] = Field(default_factory=lambda: [1.0, 2.0], min_length=1)  # alpha = r x this
    learning_rate: tuple[float, float] = (1e-5, 1e-3)  # log-uniform between
    dropout: tuple[float, float] = (0.0, 0.2)  # uniform between

    @field_validator("r")
    @classmethod
    def _ranks(cls, value: list[int]) -> list[int]:
        if any(r <= 0 for r in value):
            raise ValueError(f"LoRA ranks must be integers > 0, got {value}")
        return value

    @field_validator("alpha_multiple")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if any(a <= 0 for a in value):
            raise ValueError(f"alpha multiples must be > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> SearchSpace:
        low, high = self.learning_rate
        if not 0 < low < high < 1:
            raise ValueError(f"learning_rate = {list(self.learning_rate)}: need 0 < low < high < 1")
        low, high = self.dropout
        if not 0 <= low <= high < 1:
            raise ValueError(f"dropout = {list(self.dropout)}: need 0 <= low <= high < 1")
        return self


class Scheduler(_Strict):
    """ASHA: a trial must reach `grace_period` validation reports before it can be stopped;
    at each rung only the top 1/reduction_factor go on."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    max_reports: int = Field(100, ge=1)


class SearchConfig(_Strict):
    name: SafeName = "search"
    model: str = "minilm-l6"
    method: str = "lora"
    placement: str | list[str] = "attention"
    seed: int = 42
    num_samples: int = Field(8, ge=1)
    search_seed: int = 0  # Optuna's TPE sampler seed: the same config proposes the same trials
    space: SearchSpace = Field(default_factory=SearchSpace)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(1, ge=0)


    @field_validator("method")
    @classmethod
    def _adapter(cls, value: str) -> str:
        if value not in ADAPTER_METHODS:
            raise ValueError(f"the search space is over LoRA rank: allowed {', '.join(ADAPTER_METHODS)}")
        return value


def parse_search_config(raw: dict[str, Any], source: str | None = None) -> SearchConfig:
    from sentisweep.methods import method_problems
    from sentisweep.models import model_problems

    try:
        search = SearchConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_pydantic(err), source) from None
    problems = model_problems(search.model)
    problems += method_problems(MethodConfig(name=search.method, placement=search.placement))
    if search.training.eval_steps is None and search.training.epochs < 2:
        problems.append("training.eval_steps = None with fewer than 2 epochs: the scheduler would see one "
                        "validation report per trial; set eval_steps")
    if problems:
        raise ConfigError(problems, source)
    return search


def load_search_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
    return parse_search_config(read_yaml(path, overrides), source=str(path))


def trial_from_sample(search: SearchConfig, sample: dict[str, Any], trial_key: str, store: Store) -> TrialConfig:
    """The TrialConfig of one sampled point: r, alpha_multiple, learning_rate, dropout."""
    r = int(sample["r"])
    alpha = r * float(sample["alpha_multiple"])
    lr, dropout = float(sample["learning_rate"]), float(sample["dropout"])
    trial_id = f"{search.model}__{search.method}-r{r}-alpha{alpha:g}-lr{lr:.2e}-drop{dropout:.2f}__{trial_key}"
    trial_id = re.sub(r"[^A-Za-z0-9_.+-]", "_", trial_id)
    return TrialConfig(
        model=search.model, seed=search.seed, data=search.data, sweep=search.name, trial_id=trial_id,
        method=MethodConfig(name=search.method, r=r, alpha=alpha, dropout=dropout, placement=search.placement),
        training=search.training.model_copy(update={"learning_rate": lr}),
        output_dir=store.path(*trial_parts(search.name, trial_id)))


def describe_space(space: SearchSpace) -> str:
    low, high = space.learning_rate
    return (f"r in {space.r}, alpha = r x {space.alpha_multiple}, learning_rate log-uniform "
            f"[{low:g}, {high:g}] ({math.log10(high / low):.1f} decades), dropout uniform {list(space.dropout)}")
