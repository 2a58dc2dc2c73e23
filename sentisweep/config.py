"""Typed configs (a trial, a sweep, a search), the defaults, and the one trial id.

A trial is `model x method x seed` plus the data and training settings. Every field
has a default, so a YAML file states only what differs from them. The types here check
themselves; checks that need the model and method registries are in `sentisweep.config_load`,
which loads every kind of config file. Loading collects *all* problems at once and raises
one `ConfigError` whose lines each name the field, the value given and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from sentisweep.exit_codes import BadInput

# Each default in one place: the trial's, the embedder's and the classifier's max_length.
DEFAULT_MAX_LENGTH = 256
# What an adapter's `placement` may say besides a list of module names.
PLACEMENTS = ("attention", "ffn", "attention+ffn", "all-linear")
# How a text's token states become one vector: CLS (encoders), masked mean, last real token (decoders).
POOLINGS = ("cls", "mean", "last")
Pooling = Literal["cls", "mean", "last"]


def safe_name(value: str) -> str:
    """A sweep, search or study name: it names a folder."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ValueError("use letters, digits, '_', '-', '.' (it names a folder)")
    return value


SafeName = Annotated[str, AfterValidator(safe_name)]


class ConfigError(BadInput):
    """One or more invalid config fields; `problems` holds one line per field."""

    def __init__(self, problems: list[str], source: str | None = None, advice: str = ""):
        self.problems = problems
        where = f" in {source}" if source else ""
        lines = "".join(f"\n  - {p}" for p in problems)
        advice = advice and f"\n{advice}"  # what to do about them all: not a field, so not counted
        ValueError.__init__(self, f"{len(problems)} invalid config field(s){where}:{lines}{advice}")


def default_cache_dir() -> str:
    """SENTISWEEP_CACHE_DIR, else the user's cache folder ($XDG_CACHE_HOME or ~/.cache) /
    sentisweep: one absolute place for every run, as Hugging Face's own cache is. Never a folder
    relative to where a command runs: Ray runs trials, and `ray job submit` runs drivers, in
    folders of its own that vanish with its session (sentisweep/locations.py)."""
    if os.environ.get("SENTISWEEP_CACHE_DIR"):
        return os.environ["SENTISWEEP_CACHE_DIR"]
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sentisweep")


class Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored default; so is an infinite number.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(Strict):
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
    # Which tokens of a text longer than max_length are kept: head (the first), tail (the last;
    # IMDb reviews end with their verdict: +2.8 points for MiniLM-L6 at 128), or head+tail with
    # head_share of max_length from the start (sentisweep/trial/tokenization.py)
    truncation: Literal["head", "tail", "head+tail"] = "head"
    head_share: float = Field(0.25, gt=0, lt=1)  # Sun et al. 2019: 128 + 382 of 512 on IMDb
    split_seed: int = 0  # the data split does not move with the trial seed
    # Tokenization and tiny-model cache; on a cluster, a path every node shares (the k8s
    # manifests set SENTISWEEP_CACHE_DIR to the shared volume).
    cache_dir: str = Field(default_factory=lambda: default_cache_dir())


class TrainingConfig(Strict):
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
    max_length: int = Field(DEFAULT_MAX_LENGTH, ge=8, le=32768)
    # auto: fp32 on CPU (these CPUs have no bf16 units: bf16 is 2.5-4x slower),
    # bf16 on CUDA devices that support it, else fp16.
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # auto: CUDA when it is there, else CPU. A sweep sets it from what Ray assigned the trial:
    # cuda (a GPU was assigned: no CUDA is an error, not a silent CPU run) or cpu.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Recompute activations in the backward pass: less memory, about a third more time. Off by
    # default and the same for every method (QLoRA included), so a cost comparison compares methods.
    gradient_checkpointing: bool = False
    # Dropout on attention probabilities. 0 (default) lets torch's fused attention kernel
    # run in training; with dropout it falls back to materialising the L x L probabilities
    # (MiniLM-L6, L=256, CPU: 0.62 -> 0.45 ms per token, benchmarks/README.md).
    # null keeps the pretrained model's own value (0.1 for BERT, RoBERTa, DistilBERT).
    attention_dropout: float | None = Field(0.0, ge=0, lt=1)
    eval_each_epoch: bool = True
    # Evaluate (and keep the best) every N optimizer steps instead of each epoch: gives a
    # search scheduler (ASHA) several validation points within one epoch.
    eval_steps: int | None = Field(None, gt=0)
    # Save the optimizer's and scheduler's state with each evaluation's checkpoint, so that a
    # trial started again (a sweep's retry after a lost node) resumes at that step instead of
    # step 0. Costs each checkpoint the optimizer's state too (Adam: 2 x the trainable weights, so
    # a full fine-tune's checkpoint is 3x the bytes: benchmarks/README.md). Needs evaluations.
    resumable: bool = False
    keep_checkpoint: bool = True
    threads: int | None = Field(None, gt=0, description="torch threads; None = leave as is")
    # On CPU, every fp32 linear's matmuls (forward and backward) through oneDNN instead of torch's
    # default, MKL's sgemm, which takes its AVX2 path on AMD processors (sentisweep/trial/onednn.py:
    # 2.4x on MiniLM's FFN linear on an AVX-512 CPU, 0.8x on an AVX2-only one). auto: on CPUs with
    # AVX-512 only; false: torch's own, as before 2026-12-05. The row counts the linears it changed.
    onednn_linears: Literal["auto"] | bool = "auto"
    # On CPU, dropout masks drawn by comparing uniform draws instead of torch's bernoulli_, 2.8x
    # faster here (sentisweep/trial/dropout.py: a LoRA step 9% shorter). The same dropout with
    # another random stream. false: torch's own, as before 2026-12-05's second change.
    uniform_dropout: bool = True
    # The share of one GPU this trial has (a sweep sets it from what Ray gave it). Below 1 the
    # trial's CUDA memory is capped at that share of the GPU: one underestimated trial then fails
    # alone with an out-of-memory error instead of killing the trials beside it.
    gpu_share: float | None = Field(None, gt=0, le=1)
    logging_steps: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _resumable_needs_evaluations(self):
        if self.resumable and not (self.eval_steps or self.eval_each_epoch):
            raise ValueError("resumable = true saves its state at each evaluation, and eval_each_epoch = false "
                             "with no eval_steps evaluates never; set eval_steps (e.g. 50)")
        return self


class MethodConfig(Strict):
    """A fine-tuning method by name, and the parameters set for it. Each method's parameters, their
    types, defaults and allowed values live in one typed model beside its code
    (`sentisweep.trial.methods`: LoraParams, IA3Params, ...), which checks these when the config
    loads; here they are only carried."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = "lora"

    def params(self) -> dict[str, Any]:
        """The parameters that were set (the name excluded)."""
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}


def trial_id(model: str, variant: str, seed: int, suffix: str | None = None) -> str:
    """The one trial id: `model__variant__sSEED[__suffix]`, safe as a folder name. Sweeps,
    searches (suffix: Tune's trial key), probes and ad-hoc trials (suffix: a hash of the
    config) all name their trials with it."""
    raw = f"{model}__{variant}__s{seed}" + (f"__{suffix}" if suffix else "")
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", raw)


class TrialConfig(Strict):
    kind: Literal["trial"] = "trial"  # what a config file says it is (sentisweep.config_load.load_config)
    model: str = "minilm-l6"
    method: MethodConfig = Field(default_factory=MethodConfig)
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output_dir: str = "runs/trial"
    sweep: str = "adhoc"
    trial_id: str | None = None
    variant: str | None = None  # the method variant's label in a sweep; default: the method's name

    @model_validator(mode="before")
    @classmethod
    def _method_shorthand(cls, values: Any) -> Any:
        # `method: lora` is shorthand for `method: {name: lora}`.
        if isinstance(values, dict) and isinstance(values.get("method"), str):
            values = {**values, "method": {"name": values["method"]}}
        return values

    def resolved_variant(self) -> str:
        return self.variant or self.method.name

    def resolved_trial_id(self) -> str:
        """A sweep's trials carry their id; an ad-hoc trial's id ends in a hash of what it
        runs, so two ad-hoc trials with different settings never share an id."""
        return self.trial_id or trial_id(self.model, self.resolved_variant(), self.seed, self.digest())

    def digest(self) -> str:
        """8 hex digits of everything that changes the result (not where it is written)."""
        what = self.model_dump(mode="json", exclude={"kind", "output_dir", "sweep", "trial_id"})
        what["data"].pop("cache_dir", None)
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def format_pydantic(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        problems.append(f"{field} = {shown}: {e['msg'].removeprefix('Value error, ')}")
    return problems


class YamlLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where a number with an exponent and no dot (`1e-3`) is the text
    '1e-3': `tune: {learning_rate: [1e-4, 1e-2]}` was refused as not numbers, and a variant's
    `learning_rate: 1e-3` became another label than `1.0e-3` for the same trial. Read as YAML 1.2
    does, a float."""


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))


def read_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A YAML mapping with `overrides` merged in; ConfigError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" in {Path.cwd()}"  # a relative path is the working directory's
        raise ConfigError([f"config file = {str(path)!r}: no such file{where}"])
    try:
        raw = yaml.load(path.read_text(), Loader=YamlLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError([f"config file = {str(path)!r}: not valid YAML ({err})"]) from None
    if raw is None:  # an empty file would silently run every default
        raise ConfigError([f"config file = {str(path)!r}: empty; state at least what differs from the defaults"])
    if not isinstance(raw, dict):
        raise ConfigError([f"config file = {str(path)!r}: top level must be a mapping"])
    return deep_merge(raw, overrides or {})


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- a sweep: the axes, expanded by sentisweep.plan ------------------------------------------

class MethodVariant(MethodConfig):
    """A method with its parameters, an optional label, training overrides (e.g. another
    learning rate for the same method), and optionally the only models it runs on (a study
    like DistilBERT full fine-tuning against Qwen3-4B QLoRA is not a full cross product)."""

    label: str | None = None
    training: dict[str, Any] | None = None
    models: list[str] | None = Field(None, min_length=1)
    # With the sweep's `tuning`: what this variant's search covers besides the method's own
    # learning-rate range: `learning_rate: [low, high]` (log-uniform), and a list of values to
    # choose from for a method parameter (e.g. `r: [4, 8, 16]`)
    tune: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k not in ("label", "training", "models", "tune")}

    def method_config(self) -> MethodConfig:
        return MethodConfig(name=self.name, **self.params())

    def resolved_label(self) -> str:
        if self.label:
            return self.label
        params = self.params()  # e.g. lora-r8-attention+ffn-lr2e-05
        parts = [self.name] + [f"{prefix}{short(params[key])}" for key, prefix in
                               (("r", "r"), ("alpha", "alpha"), ("placement", "")) if key in params]
        for key, value in sorted((self.training or {}).items()):
            name = _TRAINING_ABBREVIATIONS.get(key, key)
            parts.append(f"{name}{value:g}" if isinstance(value, float) else f"{name}{value}")
        return "-".join(parts)


_TRAINING_ABBREVIATIONS = {"learning_rate": "lr", "epochs": "ep", "batch_size": "bs", "max_length": "len"}


def short(value: Any) -> str:
    """A parameter value as a label shows it: a list of module names joined by '+'."""
    return "+".join(value) if isinstance(value, list) else str(value)


class Scheduler(Strict):
    """ASHA: a trial must reach `grace_period` validation reports before it can be stopped;
    at each rung only the top 1/reduction_factor go on."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    max_reports: int = Field(100, ge=1)


class Tuning(Strict):
    """Equal-budget tuning: before a sweep's trials run, each (model, method) cell gets its own
    search (Optuna's TPE, ASHA stopping weak trials at validation reports) over its learning
    rate (the method's range, or the variant's `tune.learning_rate`) and the parameters the
    variant's `tune` lists, with the same budget for every cell: `trials` trials of at most
    `max_steps` steps. The cell's best by validation accuracy (never test) then runs on every seed.
    Without it, a method is judged at whatever learning rate was written down for it."""

    trials: int = Field(4, ge=1, description="searched trials per cell, the same for every cell")
    max_steps: int | None = Field(None, gt=0, description="each tuning trial's steps; None: the sweep's own budget")
    eval_steps: int = Field(gt=0, description="steps between validation reports: where ASHA may stop a trial")
    seed: int | None = None  # the trial seed tuning runs at; None: the sweep's first seed
    search_seed: int = 0  # TPE's seed: the same config proposes the same trials
    scheduler: Scheduler = Field(default_factory=Scheduler)


class Resources(Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    # 1 = a whole GPU per trial; a fraction lets small models share one (0.5 = two at once);
    # auto = each trial's share from its memory estimate, in eighths of the GPU (one GPU, --local)
    gpus_per_trial: Annotated[float, Field(ge=0)] | Literal["auto"] = 0.0
    # the memory of the GPU a trial gets; default: the driver's own GPU where it has one
    gpu_memory_gib: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, gt=0)

    @property
    def uses_gpus(self) -> bool:
        return self.gpus_per_trial == "auto" or self.gpus_per_trial > 0


class SweepConfig(Strict):
    kind: Literal["sweep"] = "sweep"
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
    tuning: Tuning | None = None  # each cell tuned at an equal budget before its seeds run

    @field_validator("methods", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


# -- a search: one model and method, a space over LoRA rank, alpha, learning rate, dropout ----

class SearchSpace(Strict):
    r: list[PositiveInt] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)  # a choice of LoRA ranks
    alpha_multiple: list[PositiveFloat] = Field(default_factory=lambda: [1.0, 2.0], min_length=1)  # alpha = r x this
    learning_rate: tuple[float, float] = (1e-5, 1e-3)  # log-uniform between
    dropout: tuple[float, float] = (0.0, 0.2)  # uniform between

    @model_validator(mode="after")
    def _bounds(self) -> SearchSpace:
        low, high = self.learning_rate
        if not 0 < low < high < 1:
            raise ValueError(f"learning_rate = {list(self.learning_rate)}: need 0 < low < high < 1")
        low, high = self.dropout
        if not 0 <= low <= high < 1:
            raise ValueError(f"dropout = {list(self.dropout)}: need 0 <= low <= high < 1")
        return self

    def describe(self) -> str:
        low, high = self.learning_rate
        return (f"r in {self.r}, alpha = r x {self.alpha_multiple}, learning_rate log-uniform "
                f"[{low:g}, {high:g}] ({math.log10(high / low):.1f} decades), dropout uniform {list(self.dropout)}")


# What a search can optimise, and which way: validation accuracy up, a cost down. A trial's final
# report carries each (sweeps/trainable.py); a trial ASHA stopped early has no cost and is pruned.
OBJECTIVES = {"val_accuracy": "max", "peak_memory_bytes": "min", "train_seconds": "min", "trainable_params": "min"}
Objective = Literal["val_accuracy", "peak_memory_bytes", "train_seconds", "trainable_params"]


class SearchConfig(Strict):
    kind: Literal["search"] = "search"
    name: SafeName = "search"
    model: str = "minilm-l6"
    method: str = "lora"  # a method that takes the space's parameters (r, alpha, dropout)
    placement: str | list[str] = "attention"
    seed: int = 42
    num_samples: int = Field(8, ge=1)
    search_seed: int = 0  # Optuna's TPE sampler seed: the same config proposes the same trials
    space: SearchSpace = Field(default_factory=SearchSpace)
    # Several objectives make it a multi-objective search (Optuna's TPE over the Pareto front);
    # ASHA still stops trials on validation accuracy, which every search optimises
    objectives: list[Objective] = Field(default_factory=lambda: ["val_accuracy"], min_length=1)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(1, ge=0)
    baselines: list[str] = Field(default_factory=list)  # on the same splits: the report compares the best with them

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        if "val_accuracy" not in value:
            raise ValueError(f"{value}: must include val_accuracy (what ASHA stops trials on, and what a cost "
                             "is traded against)")
        if len(set(value)) != len(value):
            raise ValueError(f"{value}: an objective listed twice")
        return value
