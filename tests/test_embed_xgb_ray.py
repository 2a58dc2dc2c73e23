"""The embedding job (Ray Data), the XGBoost stage (Ray Train) and their driver, on a real
local Ray: output schema and alignment, refusal to overwrite, 2 workers vs one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import separable, tiny_trial, write_config, write_split

from sentisweep.config import DataConfig
from sentisweep.config_load import parse_trial_config
from sentisweep.probe.embeddings import read_embeddings
from sentisweep.results import read_results
from sentisweep.trial.data import load_task_data
from sentisweep.trial.run import run_trial

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "data" / "tiny_reviews"


def _run(script: str, *args, timeout=600):
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never join a cluster left running elsewhere
    return subprocess.run([sys.executable, str(ROOT / "ray_jobs" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=env)


def test_embed_job_writes_aligned_splits_and_refuses_to_overwrite(tmp_path, cache_dir):
    out = tmp_path / "emb"
    # 96 rows in blocks of 16, served longest first: written back in each split's own order.
    done = _run("embed.py", "--smoke-test", "--out", out, "--cache-dir", cache_dir, "--rows-per-call", 16,
                "--batch-size", 8)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "texts embedded" in done.stdout
    # The rows the job embedded are the rows the core's splits hold, labels included.
    data = load_task_data(DataConfig(source=str(FIXTURE), train_size=48, eval_size=16, test_size=32))
    for split, rows in (("train", 48), ("validation", 16), ("test", 32)):
        row_ids, labels, matrix, meta = read_embeddings(out / f"{split}.parquet")
        assert matrix.shape == (rows, 64) and matrix.dtype == np.float32 and np.isfinite(matrix).all()
        expected = data.splits[split].set_index("row_id")["label"]
        assert list(row_ids) == list(data.splits[split]["row_id"])
        assert (expected.loc[row_ids].to_numpy() == labels).all()
        assert meta["model"] == "tiny-bert" and meta["pooling"] == "cls" and meta["max_length"] == 64
        assert meta["checkpoint"] == "pretrained" and meta["split"] == split
    before = (out / "test.parquet").stat().st_mtime_ns
    again = _run("embed.py", "--smoke-test", "--out", out, "--cache-dir", cache_dir)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    assert (out / "test.parquet").stat().st_mtime_ns == before  # nothing already computed is touched


def test_embed_job_bad_arguments_fail_before_ray(tmp_path):
    done = _run("embed.py", "--model", "tiny-qwen3", "--pooling", "cls", "--checkpoint", tmp_path / "none",
                "--out", tmp_path / "o", "--data", FIXTURE, "--rows-per-call", 8, "--batch-size", 16)
    assert done.returncode == 2
    assert "pooling = 'cls'" in done.stderr and "no such folder" in done.stderr
    assert "--rows-per-call = 8: must be at least --batch-size (16)" in done.stderr
    assert "Ray" not in done.stdout  # nothing started


def test_two_worker_xgboost_matches_single_process(tmp_path):
    import xgboost

    for split, (n, seed) in {"train": (1200, 1), "validation": (300, 2), "test": (600, 3)}.items():
        write_split(tmp_path / "emb", split, *separable(n, seed))
    done = _run("xgboost_stage.py", "--embeddings", tmp_path / "emb", "--storage", tmp_path / "store",
                "--name", "probe", "--workers", 2, "--rounds", 60,
                "--report-every", 20)  # reports during boosting too, not only at the end
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # a local Ray has no dashboard, so no State API for Ray Train's placement-group cleaner to ask
    assert "Failed to query Ray Train Controller" not in done.stdout + done.stderr
    row = read_results(tmp_path / "store" / "probe" / "results.parquet").iloc[0]
    assert row["status"] == "ok" and row["method"] == "embed+xgboost"
    assert row["peak_memory_kind"] == "host_rss_peak_worker" and row["peak_memory_bytes"] > 0
    # The same data and settings in one process, with the scikit-learn interface.
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (separable(n, s) for n, s in
                                                                 ((1200, 1), (300, 2), (600, 3)))
    single = xgboost.XGBClassifier(n_estimators=60, max_depth=6, learning_rate=0.1, subsample=0.8,
                                   colsample_bytree=0.8, early_stopping_rounds=20, random_state=42)
    single.fit(x_train, y_train, eval_set=[(x_valid, y_valid)], verbose=False)
    single_accuracy = float((single.predict(x_test) == y_test).mean())
    assert abs(row["accuracy"] - single_accuracy) <= 0.01, (row["accuracy"], single_accuracy)


def test_driver_pretrained_and_finetuned_rows_then_resume(tmp_path, cache_dir):
    # A finished "sweep" to take the fine-tuned checkpoint from: one tiny trial is enough.
    trial = tiny_trial("tiny-bert", "lora", FIXTURE, cache_dir, tmp_path / "smoke" / "trials" / "t1")
    trial["data"].update(train_size=64, eval_size=16, test_size=32)
    trial["trial_id"], trial["sweep"] = "tiny-bert__lora__s7", "smoke"
    assert run_trial(parse_trial_config(trial)).status == "ok"
    # The smoke config with single-process XGBoost: two Ray Train fits would add ~60 s of
    # start-up here, and the two-worker stage has its own test above.
    config = yaml.safe_load((ROOT / "sweeps" / "configs" / "embed_xgb_smoke.yaml").read_text()) | {"workers": 0}
    config_path = write_config(tmp_path / "embed_xgb_smoke.yaml", config,
                               f"python ray_jobs/embed_xgb.py --config {tmp_path / 'embed_xgb_smoke.yaml'}")
    done = _run("embed_xgb.py", "--config", config_path, "--storage", tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = read_results(tmp_path / "embed-xgb-smoke" / "results.parquet")
    assert sorted(rows["trial_id"]) == ["tiny-bert__embed+xgboost-finetuned-lora__s42",
                                        "tiny-bert__embed+xgboost-pretrained__s42"]
    assert (rows["status"] == "ok").all()
    # The same test rows as the trial: the analysis can compare them row by row.
    trial_rows = pd.read_parquet(tmp_path / "smoke" / "trials" / "t1" / "predictions.parquet")["row_id"]
    for path in rows["predictions_path"]:
        assert sorted(pd.read_parquet(path)["row_id"]) == sorted(trial_rows)
    again = _run("embed_xgb.py", "--config", config_path, "--storage", tmp_path)
    assert again.returncode == 0 and again.stdout.count("row exists, kept") == 2
    assert "Started a local Ray instance" not in again.stdout + again.stderr  # nothing to do: no Ray
