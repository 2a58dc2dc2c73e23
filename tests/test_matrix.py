"""Every tiny model family x every CPU-capable method trains a few steps for real."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest
from helpers import tiny_trial

from sentisweep.config_load import parse_trial_config
from sentisweep.results import SCHEMA, read_results
from sentisweep.trial.run import run_trial

pytestmark = pytest.mark.unit

TINY_MODELS = ["tiny-bert", "tiny-roberta", "tiny-distilbert", "tiny-deberta", "tiny-qwen3"]
# One row per method (a new method adds a row here): config, and whether only a subset trains.
METHOD_MATRIX = [
    ("full", False),
    ("head-only", True),
    ({"name": "lora", "r": 4, "placement": "attention"}, True),
    ({"name": "lora", "r": 4, "placement": "all-linear"}, True),  # DistilBERT's pre_classifier trap
    ({"name": "dora", "r": 4, "placement": "attention+ffn"}, True),
    ({"name": "qlora", "r": 4}, True),  # bitsandbytes 4-bit NF4 runs on these CPUs
    ("ia3", True),
]


def _method_id(method) -> str:
    return method if isinstance(method, str) else f"{method['name']}-{method.get('placement', 'default')}"


@pytest.mark.parametrize("method,partial", METHOD_MATRIX, ids=[_method_id(m) for m, _ in METHOD_MATRIX])
@pytest.mark.parametrize("model", TINY_MODELS)
def test_trains_and_measures(model, method, partial, data_dir, cache_dir, tmp_path):
    config = parse_trial_config(tiny_trial(model, method, data_dir, cache_dir, tmp_path / "trial"))
    result = run_trial(config)
    assert result.status == "ok", result.error
    assert 0.0 <= result.accuracy <= 1.0 and 0.0 <= result.f1 <= 1.0
    assert result.tn + result.fp + result.fn + result.tp == result.test_rows == 32
    assert result.eval_loss > 0 and result.roc_auc is not None
    assert 0 < result.trainable_params <= result.total_params
    assert (result.trainable_params < result.total_params) == partial
    assert result.train_samples_per_second > 0 and result.train_tokens > 0
    assert 0.0 <= result.padding_fraction < 1.0
    assert result.peak_memory_bytes > 0 and result.peak_memory_kind == "host_rss_peak"
    assert result.best_val_accuracy is not None
    assert result.adapter_bytes > 0
    assert list((tmp_path / "trial" / "checkpoint").glob("*.safetensors"))
    predictions = pd.read_parquet(result.predictions_path)
    assert len(predictions) == 32 and predictions["probability"].between(0.5, 1.0).all()
    history = pd.read_parquet(result.history_path)
    assert history["loss"].notna().sum() >= 1
    events = list((tmp_path / "trial" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"train/loss" in events[0].read_bytes()  # TensorBoard's record of the loss
    stored = read_results(tmp_path / "trial" / "result.parquet")
    assert stored.loc[0, "status"] == "ok" and list(stored.columns) == SCHEMA.names
    assert json.loads(stored.loc[0, "versions"])["torch"]


def test_zero_shot_on_decoder(data_dir, cache_dir, tmp_path):
    result = run_trial(parse_trial_config(tiny_trial("tiny-qwen3", "zero-shot", data_dir, cache_dir, tmp_path)))
    assert result.status == "ok", result.error
    assert result.trainable_params == 0 and result.train_seconds is None
    assert result.learning_rate is None  # it trains at no rate: the config's default is not its
    assert result.test_rows == 32 and 0 <= result.accuracy <= 1
    assert result.eval_samples_per_second > 0


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-deberta"])
def test_zero_shot_on_encoder_is_skipped_with_reason(model, data_dir, cache_dir, tmp_path):
    result = run_trial(parse_trial_config(tiny_trial(model, "zero-shot", data_dir, cache_dir, tmp_path)))
    assert result.status == "skipped"
    assert "needs a decoder model" in result.error and model in result.error
    assert read_results(tmp_path / "result.parquet").loc[0, "status"] == "skipped"


def test_same_seed_same_metrics(data_dir, cache_dir, tmp_path):
    runs = [run_trial(parse_trial_config(tiny_trial("tiny-bert", "lora", data_dir, cache_dir, tmp_path / str(i))))
            for i in range(2)]
    keys = ["accuracy", "f1", "roc_auc", "eval_loss", "best_val_accuracy", "tp", "fp"]
    assert [getattr(runs[0], k) for k in keys] == [getattr(runs[1], k) for k in keys]
    first, second = (pd.read_parquet(r.predictions_path) for r in runs)
    pd.testing.assert_frame_equal(first, second)


def _event_writers() -> list:
    return [t for t in threading.enumerate() if type(t).__name__ == "_EventLoggerThread"]  # tensorboardX's


def test_failure_is_recorded_not_raised(data_dir, cache_dir, tmp_path, monkeypatch):
    import torch

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("transformers.Trainer.train", out_of_memory)
    writers_before = _event_writers()
    result = run_trial(parse_trial_config(tiny_trial("tiny-bert", "full", data_dir, cache_dir, tmp_path)))
    assert result.status == "failed" and result.error_type == "OutOfMemoryError"
    assert "Tried to allocate" in result.error
    stored = read_results(tmp_path / "result.parquet")
    assert stored.loc[0, "status"] == "failed" and pd.isna(stored.loc[0, "accuracy"])
    # the TensorBoard writer is closed though training never ended: one left open keeps its thread
    assert _event_writers() == writers_before


def test_half_precision_on_cpu_is_skipped(data_dir, cache_dir, tmp_path):
    result = run_trial(parse_trial_config(
        tiny_trial("tiny-bert", "lora", data_dir, cache_dir, tmp_path, precision="bf16")))
    assert result.status == "skipped" and "half precision is for CUDA" in result.error


def test_refuses_to_overwrite_a_finished_trial(data_dir, cache_dir, tmp_path):
    config = parse_trial_config(tiny_trial("tiny-bert", "head-only", data_dir, cache_dir, tmp_path))
    first = run_trial(config)
    before = (tmp_path / "result.parquet").read_bytes()
    with pytest.raises(FileExistsError, match="already ran"):
        run_trial(config)
    assert (tmp_path / "result.parquet").read_bytes() == before and first.status == "ok"


def test_unknown_placement_module_fails_with_the_modules_it_has(data_dir, cache_dir, tmp_path):
    from sentisweep.config import ConfigError, TrialConfig

    raw = tiny_trial("tiny-bert", {"name": "lora", "placement": ["q_proj"]}, data_dir, cache_dir, tmp_path)
    with pytest.raises(ConfigError, match=r"\['q_proj'\] match no adapter-able linear layer; this model has: "
                                          r"dense, key, query, value"):
        parse_trial_config(raw)  # at config time, from the model's config: nothing loaded
    result = run_trial(TrialConfig.model_validate(raw))  # past the check, the trial itself says the same
    assert result.status == "failed"
    assert "match no adapter-able linear layer" in result.error and "query" in result.error


def test_tokenization_is_cached_across_trials(data_dir, cache_dir, tmp_path):
    from sentisweep.trial.tokenization import CACHE_STATS

    run_trial(parse_trial_config(tiny_trial("tiny-roberta", "head-only", data_dir, cache_dir, tmp_path / "a")))
    misses = CACHE_STATS["misses"]
    run_trial(parse_trial_config(tiny_trial("tiny-distilbert", "lora", data_dir, cache_dir, tmp_path / "b")))
    assert CACHE_STATS["misses"] == misses  # same tokenizer, max_length and rows: all hits


@pytest.mark.parametrize("method", ["full", "lora"])
def test_predictions_match_the_saved_checkpoint_row_by_row(method, data_dir, cache_dir, tmp_path):
    """Each stored probability belongs to its row: recompute them from the checkpoint, one row at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentisweep.trial.data import load_task_data

    config = parse_trial_config(tiny_trial("tiny-bert", method, data_dir, cache_dir, tmp_path, max_steps=6))
    result = run_trial(config)
    checkpoint = tmp_path / "checkpoint"
    if method == "lora":
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(checkpoint)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    test = load_task_data(config.data).splits["test"]
    predictions = pd.read_parquet(result.predictions_path).set_index("row_id")
    model.eval()
    with torch.no_grad():
        for row_id, text in zip(test["row_id"], test["text"], strict=True):
            logits = model(**tokenizer(text, truncation=True, max_length=64, return_tensors="pt")).logits
            expected = torch.softmax(logits, dim=-1)[0, 1].item()
            assert predictions.loc[row_id, "probability_positive"] == pytest.approx(expected, abs=1e-4), row_id


def test_overwrite_replaces_the_folder_whole(data_dir, cache_dir, tmp_path):
    """A full fine-tune overwritten by a LoRA trial leaves no full model beside the adapter."""
    full = run_trial(parse_trial_config(tiny_trial("tiny-bert", "full", data_dir, cache_dir, tmp_path / "t")))
    assert (tmp_path / "t" / "checkpoint" / "model.safetensors").is_file()
    lora = run_trial(parse_trial_config(tiny_trial("tiny-bert", "lora", data_dir, cache_dir, tmp_path / "t")),
                     overwrite=True)
    assert lora.status == "ok" and not (tmp_path / "t" / "checkpoint" / "model.safetensors").exists()
    assert (tmp_path / "t" / "checkpoint" / "adapter_model.safetensors").is_file()
    assert lora.adapter_bytes < full.adapter_bytes / 10
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # nothing set aside is left
