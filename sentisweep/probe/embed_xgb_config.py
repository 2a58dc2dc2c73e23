"""The embeddings + XGBoost study as one config: for each model, pretrained embeddings ->
XGBoost, and embeddings after fine-tuning (the best trial of a sweep) -> XGBoost.
`ray_jobs/embed_xgb.py` runs it; this module validates it and picks the checkpoints."""

from __future__ import annotations

import json
from typing import Any, Literal

import pandas as pd
from pydantic import Field, ValidationError

from sentisweep.config import DEFAULT_MAX_LENGTH, ConfigError, DataConfig, SafeName, Strict, format_pydantic
from sentisweep.probe.booster import METHOD, XGBoostConfig
from sentisweep.probe.embeddings import DEFAULT_BATCH_SIZE, FAMILY_POOLINGS, QUANTIZATIONS
from sentisweep.results import best_by_validation
from sentisweep.storage import exists


class ProbeModel(Strict):
    model: str
    pooling: str | None = None  # default: the registry's
    quantize: str | None = None  # 4bit / 8bit for large decoders
    pretrained: bool = True  # embed the pretrained model
    # A sweep name under the same storage (or a results folder / file): the model's best ok
    # trial there, by validation accuracy, gives the fine-tuned checkpoint.
    finetuned_from: str | None = None


class EmbeddingSettings(Strict):
    max_length: int = Field(DEFAULT_MAX_LENGTH, ge=2)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, gt=0)
    concurrency: int = Field(2, gt=0, description="embedding actors")
    cpus_per_actor: float = Field(0.5, gt=0)
    # GPUs of each actor: default 1 where the cluster has a GPU now, else CPU actors (said aloud).
    # Set it where an autoscaler adds the GPU nodes: the job then waits for them.
    gpus_per_actor: float | None = Field(None, ge=0)


class EmbedXgbConfig(Strict):
    kind: Literal["embed_xgb"] = "embed_xgb"
    name: SafeName
    description: str = ""
    storage: str = "results"
    seed: int = 42
    workers: int = Field(2, ge=0, description="Ray Train XGBoost workers; 0 = single process")
    data: DataConfig = DataConfig()
    embedding: EmbeddingSettings = EmbeddingSettings()
    xgboost: XGBoostConfig = XGBoostConfig()
    models: list[ProbeModel] = Field(min_length=1)


def parse_embed_xgb_config(raw: dict[str, Any], source: str | None = None) -> EmbedXgbConfig:
    """Validate the whole study before anything runs; every problem at once."""
    from sentisweep.trial.models import UnknownNameError, get_model_spec

    try:
        config = EmbedXgbConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_pydantic(err), source) from None
    problems = []
    for i, entry in enumerate(config.models):
        try:
            spec = get_model_spec(entry.model)
        except (UnknownNameError, OSError) as err:
            problems.append(f"models[{i}].model: {err}")
            continue
        allowed = FAMILY_POOLINGS[spec.family]
        if entry.pooling is not None and entry.pooling not in allowed:
            problems.append(f"models[{i}].pooling = {entry.pooling!r}: not for {entry.model} (a {spec.family}); "
                            f"allowed: {', '.join(allowed)}")
        if entry.quantize is not None and entry.quantize not in QUANTIZATIONS:
            problems.append(f"models[{i}].quantize = {entry.quantize!r}: allowed: {', '.join(QUANTIZATIONS)} or null")
        if not entry.pretrained and not entry.finetuned_from:
            problems.append(f"models[{i}]: pretrained is false and finetuned_from is empty: nothing to embed")
    if problems:
        raise ConfigError(problems, source)
    return config


def best_checkpoint(results: pd.DataFrame, model: str, where: str) -> pd.Series:
    """The row of `model`'s best ok trial with a checkpoint (`trial_id`, `checkpoint_path`,
    `config_json`), chosen by validation accuracy: choosing by test accuracy would leak the
    test set into the choice."""
    candidates = results[(results["status"] == "ok") & (results["model"] == model)
                         & (results["method"] != METHOD) & results["checkpoint_path"].notna()]
    candidates = candidates[candidates["checkpoint_path"].map(exists).astype(bool)]  # a folder, or in s3://
    best = best_by_validation(candidates)
    if best is None:
        raise ConfigError([f"no ok trial of {model} with a checkpoint folder and a validation accuracy in {where} "
                           f"(trials of it there: {int((results['model'] == model).sum())})"])
    return best


def data_differences(data: DataConfig, theirs: dict[str, Any], whose: str) -> list[str]:
    """Each data field where the study differs from what it builds on: the trial whose checkpoint
    it embeds, or embeddings made before. The analysis compares the study with its sweep row by
    row, and a checkpoint learned from its own rows and tokens (the quick sweep keeps the last 128:
    embedding the first would undo that), so all must read the same. Only where the cache is and
    what the classes are called may differ."""
    ours = data.model_dump(mode="json", exclude={"cache_dir", "label_names"})
    return [f"data.{key} = {value!r}, but {whose} read {theirs.get(key)!r}"
            for key, value in ours.items() if theirs.get(key, DataConfig.model_fields[key].default) != value]


def trial_differences(config: EmbedXgbConfig, trial: pd.Series) -> list[str]:
    """Where the study would not read what the trial whose checkpoint it embeds was trained and
    tested on: its data, and the tokens of a text kept (max_length)."""
    trained, whose = json.loads(trial["config_json"]), f"its trial {trial['trial_id']}"
    found = data_differences(config.data, trained["data"], whose)
    if config.embedding.max_length != trained["training"]["max_length"]:
        found.append(f"embedding.max_length = {config.embedding.max_length}, but {whose} trained at "
                     f"{trained['training']['max_length']}")
    return found


def embedding_differences(config: EmbedXgbConfig, entry: ProbeModel, checkpoint: str, meta: dict,
                          whose: str) -> list[str]:
    """Where embeddings already there were made otherwise than this run would make them: another
    checkpoint (the sweep's best trial changed, or `finetuned_from` did), pooling or max_length.
    Reused, they would be reported as this run's (only their data block was compared before)."""
    from sentisweep.trial.models import get_model_spec

    wanted = {"checkpoint": checkpoint, "max_length": config.embedding.max_length,
              "pooling": entry.pooling or get_model_spec(entry.model).pooling}
    return [f"{field} = {value!r}, but {whose} were made with {meta.get(field)!r}"
            for field, value in wanted.items() if meta.get(field) != value]


def row_differences(config: EmbedXgbConfig, row: pd.Series) -> list[str]:
    """Where a study's row already there was fitted otherwise than this config says: its seed,
    workers or an XGBoost setting. Kept, it would be reported as this config's result."""
    fitted = json.loads(row["method_params"])
    wanted = {"seed": config.seed, "workers": config.workers,
              **{f"xgboost.{key}": value for key, value in config.xgboost.model_dump().items()}}
    have = {"seed": int(row["seed"]), **{key: fitted.get(key.removeprefix("xgboost.")) for key in wanted
                                        if key != "seed"}}
    return [f"{key} = {value!r}, but its row {row['trial_id']} was fitted with {have[key]!r}"
            for key, value in wanted.items() if have[key] != value]
