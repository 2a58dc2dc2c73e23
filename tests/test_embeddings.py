"""Embeddings and the XGBoost probe without Ray: pooling, checkpoints, bad input, the row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import separable, tiny_trial, write_split

from sentisweep.config import ConfigError, DataConfig, TrialConfig
from sentisweep.config_load import load_config, parse_trial_config
from sentisweep.layout import TRIAL_INFO_FILE
from sentisweep.probe.booster import XGBoostConfig, fit_single_process, load_splits, run_probe
from sentisweep.probe.embed_xgb_config import (
    best_checkpoint,
    data_differences,
    parse_embed_xgb_config,
    trial_differences,
)
from sentisweep.probe.embeddings import Embedder, EmbeddingError, pool, read_embeddings
from sentisweep.trial.run import run_trial

pytestmark = pytest.mark.unit
TEXTS = ["great", "a long and truly dreadful film that wasted two hours of everyone's evening", "fine movie"]


def test_pooling_by_hand():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # row 0: mean of positions 0 and 1 only: ([0,1] + [2,3]) / 2 = [1, 2]; row 1: [8, 9]
    assert pool(hidden, mask, "mean").tolist() == [[1.0, 2.0], [8.0, 9.0]]
    assert pool(hidden, mask, "cls").tolist() == [[0.0, 1.0], [6.0, 7.0]]
    assert pool(hidden, mask, "last").tolist() == [[2.0, 3.0], [10.0, 11.0]]  # last real token


@pytest.mark.parametrize("model,pooling", [("tiny-bert", "mean"), ("tiny-bert", "cls"), ("tiny-qwen3", "last"),
                                           ("tiny-distilbert", "mean")])
def test_embedding_unchanged_by_extra_padding(model, pooling, cache_dir):
    embedder = Embedder(model, pooling=pooling, max_length=64, cache_dir=str(cache_dir))
    together = embedder.embed(TEXTS)  # "great" is padded to the long text's length here
    alone = np.stack([embedder.embed([t])[0] for t in TEXTS])
    assert together.shape == (3, embedder.dim) and together.dtype == np.float32
    assert np.abs(together - alone).max() < 1e-4
    assert embedder.stats.positions > embedder.stats.real_tokens  # the batch did carry padding


def test_masked_mean_is_the_mean_of_real_token_states(cache_dir):
    embedder = Embedder("tiny-bert", pooling="mean", max_length=64, cache_dir=str(cache_dir))
    ids = embedder.tokenizer(TEXTS[1], return_tensors="pt")
    with torch.inference_mode():
        states = embedder.model(**ids).last_hidden_state[0]
    assert np.allclose(embedder.embed([TEXTS[1]])[0], states.mean(dim=0).numpy(), atol=1e-5)


def test_bad_pooling_and_checkpoint_name_field_value_and_allowed(cache_dir, tmp_path):
    with pytest.raises(EmbeddingError, match=r"pooling = 'cls': not for tiny-qwen3 \(a decoder\); allowed: mean, last"):
        Embedder("tiny-qwen3", pooling="cls", cache_dir=str(cache_dir))
    with pytest.raises(EmbeddingError, match="checkpoint = .*no such folder"):
        Embedder("tiny-bert", checkpoint=tmp_path / "missing", cache_dir=str(cache_dir))
    with pytest.raises(EmbeddingError, match="neither a peft adapter"):
        Embedder("tiny-bert", checkpoint=tmp_path, cache_dir=str(cache_dir))
    with pytest.raises(EmbeddingError, match="quantize = '8bit': needs a CUDA GPU"):
        Embedder("tiny-bert", quantize="8bit", cache_dir=str(cache_dir))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetuned_checkpoint_really_loads(method, data_dir, cache_dir, tmp_path):
    config = parse_trial_config(tiny_trial("tiny-bert", method, data_dir, cache_dir, tmp_path / "trial",
                                           learning_rate=5e-2, max_steps=6))
    result = run_trial(config)
    assert result.status == "ok", result.error
    info = json.loads((tmp_path / "trial" / "checkpoint" / TRIAL_INFO_FILE).read_text())
    assert info["model"] == "tiny-bert" and info["method"] == method and len(info["label_names"]) == 2
    pretrained = Embedder("tiny-bert", max_length=64, cache_dir=str(cache_dir)).embed(TEXTS)
    tuned = Embedder("tiny-bert", checkpoint=result.checkpoint_path, max_length=64, cache_dir=str(cache_dir))
    assert np.abs(tuned.embed(TEXTS) - pretrained).max() > 1e-3  # the adapter / weights were applied


@pytest.fixture
def embeddings_dir(tmp_path):
    for split, (n, seed) in {"train": (400, 1), "validation": (100, 2), "test": (200, 3)}.items():
        write_split(tmp_path / "emb", split, *separable(n, seed))
    return tmp_path / "emb"


def test_probe_row_is_a_trial_row(embeddings_dir, tmp_path):
    fit = lambda params, train, validation: fit_single_process(params, 50, 10, train, validation)  # noqa: E731
    result = run_probe(embeddings_dir, XGBoostConfig(rounds=50), tmp_path / "row", "probe", 42, fit, 0, 2)
    assert result.status == "ok", result.error
    assert result.method == "embed+xgboost" and result.trial_id == "tiny-bert__embed+xgboost-pretrained__s42"
    assert result.accuracy > 0.85 and result.test_rows == 200 and result.trainable_params > 0
    predictions = pd.read_parquet(result.predictions_path)
    assert list(predictions["row_id"]) == list(range(200))
    assert (tmp_path / "row" / "result.parquet").is_file()
    _, labels, matrix, meta = read_embeddings(embeddings_dir / "test.parquet")
    assert matrix.shape == (200, 8) and meta["pooling"] == "cls"


def test_probe_failure_is_a_row(embeddings_dir, tmp_path):
    def broken(params, train, validation):
        raise MemoryError("out of memory in the booster")

    result = run_probe(embeddings_dir, XGBoostConfig(), tmp_path / "row", "probe", 42, broken, 0, 2)
    assert result.status == "failed" and "out of memory" in result.error
    assert (tmp_path / "row" / "result.parquet").is_file()


def test_probe_bad_inputs(tmp_path, embeddings_dir):
    with pytest.raises(EmbeddingError, match="no train.parquet, validation.parquet, test.parquet"):
        load_splits(tmp_path / "nothing")
    write_split(embeddings_dir, "test", np.zeros((0, 8)), np.zeros(0, dtype=int))
    with pytest.raises(EmbeddingError, match="test.parquet: no rows"):
        load_splits(embeddings_dir)
    write_split(embeddings_dir, "test", *separable(10, 4), model="tiny-qwen3")
    with pytest.raises(EmbeddingError, match="different models"):
        load_splits(embeddings_dir)
    with pytest.raises(ValueError, match="max_depth"):
        XGBoostConfig(max_depth=0)


def test_embed_xgb_config_reports_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels:\n  - {model: tiny-qwen3, pooling: cls}\n  - {model: nope}\n"
                    "  - {model: tiny-bert, pretrained: false}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, "embed_xgb")
    text = str(err.value)
    assert "models[0].pooling = 'cls'" in text and "models[1].model" in text
    assert "models[2]: pretrained is false" in text


def test_a_study_asks_for_gpu_embedding_actors_and_the_job_gets_them(monkeypatch):
    """Issue 37: a study's settings could not ask for GPU actors, so on a cluster whose GPU group
    was at zero Qwen3-4B embedded on CPU. The shipped GPU study asks for one GPU each."""
    from pathlib import Path

    from ray_jobs import embed, embed_xgb

    config = load_config(Path(__file__).resolve().parents[1] / "sweeps/configs/embed_xgb_gpu.yaml", "embed_xgb")
    assert config.embedding.gpus_per_actor == 1
    jobs = []
    monkeypatch.setattr(embed, "run", jobs.append)
    embed_xgb.run_embedding(config, {"entry": config.models[0], "embeddings": "emb", "checkpoint": None,
                                     "source": "pretrained"})
    assert jobs[0].gpus_per_actor == 1 and jobs[0].concurrency == 4


def test_the_embedder_keeps_the_tokens_training_kept(cache_dir):
    # 12 tokens of TEXTS[1] kept: its first 10, or its last 10, framed by [CLS] ... [SEP]
    head, tail = (Embedder("tiny-bert", max_length=12, cache_dir=str(cache_dir), truncation=truncation)
                  for truncation in ("head", "tail"))
    last_ten = head.tokenizer.decode(head.tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"][-10:])
    assert np.allclose(tail.embed([TEXTS[1]]), head.embed([last_ten]), atol=1e-5)
    assert not np.allclose(tail.embed([TEXTS[1]]), head.embed([TEXTS[1]]), atol=1e-3)
    assert np.allclose(tail.embed([TEXTS[0]]), head.embed([TEXTS[0]]), atol=1e-6)  # short: nothing cut


def test_a_study_must_read_the_rows_and_tokens_of_the_trial_it_embeds():
    theirs = DataConfig(train_size=2000, eval_size=300, truncation="tail", cache_dir="/theirs").model_dump(mode="json")
    assert data_differences(DataConfig(train_size=2000, eval_size=300, truncation="tail",
                                       label_names=["neg", "pos"]), theirs, "t") == []  # where the cache is: free
    assert data_differences(DataConfig(train_size=2000, eval_size=500), theirs, "its trial m__full__s42") == [
        "data.eval_size = 500, but its trial m__full__s42 read 300",
        "data.truncation = 'head', but its trial m__full__s42 read 'tail'"]
    trial = pd.Series({"trial_id": "m__full__s42", "config_json": json.dumps(
        {"data": theirs, "training": {"max_length": 128}})})
    study = parse_embed_xgb_config({"name": "s", "models": [{"model": "tiny-bert"}], "embedding": {"max_length": 64},
                                    "data": {"train_size": 2000, "eval_size": 300, "truncation": "tail"}})
    assert trial_differences(study, trial) == ["embedding.max_length = 64, but its trial m__full__s42 trained at 128"]


def test_best_checkpoint_is_chosen_on_validation_not_test(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    results = pd.DataFrame({
        "trial_id": ["a", "b", "c"], "model": "m", "method": ["lora", "full", "full"], "status": ["ok", "ok", "failed"],
        "accuracy": [0.95, 0.80, None], "best_val_accuracy": [0.70, 0.85, 0.99],
        "checkpoint_path": [str(tmp_path / "a"), str(tmp_path / "b"), None]})
    best = best_checkpoint(results, "m", "sweep")
    assert (best["trial_id"], best["checkpoint_path"]) == ("b", str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="no ok trial of other"):
        best_checkpoint(results, "other", "sweep")


def test_a_study_waits_for_a_sweep_whose_driver_runs_now(tmp_path, capsys):
    """Its best so far need not be its best: a study of it would embed a checkpoint the sweep may beat."""
    import fcntl

    from ray_jobs import embed_xgb
    from sentisweep.results import TrialResult, write_results

    (tmp_path / "ckpt").mkdir()
    write_results([TrialResult(sweep="sweep", trial_id="t", model="tiny-bert", method="full", seed=1, status="ok",
                               best_val_accuracy=0.8, checkpoint_path=str(tmp_path / "ckpt"),
                               config_json=TrialConfig(model="tiny-bert", method="full").to_json())],
                  tmp_path / "sweep" / "results.parquet")
    study = parse_embed_xgb_config({"name": "s", "storage": str(tmp_path),
                                    "models": [{"model": "tiny-bert", "finetuned_from": "sweep"}]})
    with open(tmp_path / "sweep" / ".driver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the sweep's driver holds it while it runs
        with pytest.raises(ConfigError, match="sweep is running now .its driver holds .driver.lock.: its best so far"):
            embed_xgb.plan(study)
        assert [run["checkpoint"] for run in embed_xgb.plan(study, strict=False)] == [None, None]  # the dry run
        assert "not ready: models[0].finetuned_from = 'sweep'" in capsys.readouterr().out
    assert [run["source"] for run in embed_xgb.plan(study)] == ["pretrained", "finetuned"]  # the sweep ended


def test_a_store_with_a_sweep_table_and_loose_trial_rows_reads_each_row_once(tmp_path):
    from sentisweep.results import TrialResult, read_results, write_results

    rows = [TrialResult(sweep="s", trial_id=f"t{i}", model="m", method="full", seed=i) for i in range(3)]
    write_results(rows[:2], tmp_path / "sweep" / "results.parquet")  # the sweep's table ...
    for row in rows[:2]:  # ... and each of its trials' own rows
        write_results([row], tmp_path / "sweep" / "trials" / row.trial_id / "result.parquet")
    write_results([rows[2]], tmp_path / "probe" / "trials" / "t2" / "result.parquet")  # no table covers it
    assert sorted(read_results(tmp_path)["trial_id"]) == ["t0", "t1", "t2"]
