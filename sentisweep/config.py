"""Typed configs for one trial, checked in full when loaded.

A trial is `model x method x seed` plus the data and training settings. Every field
has a default, so a YAML file states only what differs from them. Loading collects
*all* problems at once and raises one `ConfigError` whose lines each name the field,
the value given and what is allowed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator


def safe_name(value: str) -> str:
    """A sweep or search name: it names a folder."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ValueError("use letters, digits, '_', '-', '.' (it names a folder)")
    return value


SafeName = Annotated[str, AfterValidator(safe_name)]


class ConfigError(ValueError):
    """One or more invalid config fields; `problems` holds one line per field."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} invalid config field(s){where}:\n{lines}")


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the labelled texts come from and how they are split."""

    source: str = "imdb"  # hub dataset id, a local folder/file, or an aclImdb folder
    text_column: str = "text"
    label_column: str = "label"
    num_labels: int = Field(2, ge=2, description="classes the task allows")
    # Names for the encoded classes (sorted label values), e.g. [negative, positive].
    label_names: list[str] | None = None
    # holdout: keep the source's test split, carve validation from train.
    # reshuffle: pool every split and cut 80/10/10 (as one published IMDb study does).
    split: Literal["holdout", "reshuffle"] = "holdout"
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    train_size: int | None = Field(None, gt=0)
    eval_size: int | None = Field(None, gt=0)
    test_size: int | None = Field(None, gt=0)
    clean_html: bool = True  # "<br />" -> newline
    split_seed: int = 0  # the data split does not move with the trial seed
    # Tokenization and tiny-model cache; on a cluster, a path every node shares (the k8s
    # manifests set SENTISWEEP_CACHE_DIR to the shared volume).
    cache_dir: str = Field(default_factory=lambda: os.environ.get("SENTISWEEP_CACHE_DIR", ".sentisweep_cache"))


class TrainingConfig(_Strict):
    """Optimisation settings, shared by every method that trains."""

    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="overrides epochs when set")
    learning_rate: float = Field(2e-5, gt=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    gradient_accumulation: int = Field(1, gt=0)
    max_length: int = Field(256, ge=8, le=32768)
    # auto: fp32 on CPU (these CPUs have no bf16 units: bf16 is 2.5-4x slower),
    # bf16 on CUDA devices that support it, else fp16.
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # Length-grouped batches: little padding (1.2% at 256 instead of 20%), served in
    # shuffled order, but off by default: measured on MiniLM-L6 (2,000 IMDb rows, length 256,
    # 1 epoch, 3 seeds; benchmarks/README.md) grouping cost 1.1-1.2 accuracy points with both
    # full fine-tuning and LoRA. Worth turning on where speed matters more than that.
    group_by_length: bool = False
    # Dropout on attention probabilities. 0 (default) lets torch's fused attention kernel
    # run in training; with dropout it falls back to materialising the L x L probabilities
    # (MiniLM-L6, L=256, CPU: 0.62 -> 0.45 ms per token, benchmarks/README.md).
    # null keeps the pretrained model's own value (0.1 for BERT, RoBERTa, DistilBERT).
    attention_dropout: float | None = Field(0.0, ge=0, lt=1)
    eval_each_epoch: bool = True
    # Evaluate (and keep the best) every N optimizer steps instead of each epoch: gives a
    # search scheduler (ASHA) several validation points within one epoch.
    eval_steps: int | None = Field(None, gt=0)
    keep_checkpoint: bool = True
    threads: int | None = Field(None, gt=0, description="torch threads; None = leave as is")
    logging_steps: int = Field(10, gt=0)


class MethodConfig(_Strict):
    """A fine-tuning method and its parameters. Which ones apply depends on `name`
    (see `sentisweep.methods`): setting one the method does not use is an error."""

    name: str = "lora"
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    # attention | ffn | attention+ffn | all-linear, or a list of module name suffixes
    placement: str | list[str] | None = None
    quant_type: Literal["nf4", "fp4"] | None = None
    double_quant: bool | None = None
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    prompt: str | None = None
    label_words: list[str] | None = None

    def params(self) -> dict[str, Any]:
        """The parameters that were set (the name excluded)."""
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}


class TrialConfig(_Strict):
    model: str = "minilm-l6"
    method: MethodConfig = Field(default_factory=MethodConfig)
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output_dir: str = "runs/trial"
    sweep: str = "adhoc"
    trial_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _method_shorthand(cls, values: Any) -> Any:
        # `method: lora` is shorthand for `method: {name: lora}`.
        if isinstance(values, dict) and isinstance(values.get("method"), str):
            values = {**values, "method": {"name": values["method"]}}
        return values

    def resolved_trial_id(self) -> str:
        return self.trial_id or f"{self.model}__{self.method.name}__s{self.seed}".replace("/", "_")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _format_pydantic(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        problems.append(f"{field} = {shown}: {e['msg']}")
    return problems


def parse_trial_config(raw: dict[str, Any], source: str | None = None) -> TrialConfig:
    """Validate a raw dict: types first, then registry names and method parameters."""
    try:
        config = TrialConfig.model_validate(raw)
    except ValidationError as err:
        # Report the registry problems too, so one run shows every mistake at once.
        raise ConfigError(_format_pydantic(err) + _raw_semantic_problems(raw), source) from None
    problems = semantic_problems(config)
    if problems:
        raise ConfigError(problems, source)
    return config


def semantic_problems(config: TrialConfig) -> list[str]:
    """Checks that need the registries: known names, parameters the method accepts."""
    from sentisweep.methods import method_problems
    from sentisweep.models import model_problems

    return model_problems(config.model) + method_problems(config.method)


def _raw_semantic_problems(raw: Any) -> list[str]:
    """Registry checks on whatever parts of an invalid config are well-typed."""
    from sentisweep.methods import method_problems
    from sentisweep.models import model_problems

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


def read_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A YAML mapping with `overrides` merged in; ConfigError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file = {str(path)!r}: no such file"])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError([f"config file = {str(path)!r}: not valid YAML ({err})"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"config file = {str(path)!r}: top level must be a mapping"])
    return deep_merge(raw, overrides or {})


def load_trial_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrialConfig:
    return parse_trial_config(read_yaml(path, overrides), source=str(path))


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
