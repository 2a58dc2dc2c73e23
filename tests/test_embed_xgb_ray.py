"""The embedding job's bad arguments, and the embedding + XGBoost driver on a real local Ray: rows
and resume. The embedding job's output (schema, alignment, refusal to overwrite) and the XGBoost
stage's 2 workers against one process run from a checkout's root: tests/test_user_path.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import tiny_trial, write_config

from analysis.__main__ import main as analysis_main
from sentisweep.config_load import parse_trial_config
from sentisweep.results import read_results
from sentisweep.trial.models import get_model_spec
from sentisweep.trial.run import run_trial

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "data" / "tiny_reviews"


def _run(script: str, *args, timeout=600):
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never join a cluster left running elsewhere
    return subprocess.run([sys.executable, str(ROOT / "ray_jobs" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=env)


def test_embed_job_bad_arguments_fail_before_ray(tmp_path):
    done = _run("embed.py", "--model", "tiny-qwen3", "--pooling", "cls", "--checkpoint", tmp_path / "none",
                "--out", tmp_path / "o", "--data", FIXTURE, "--rows-per-call", 8, "--batch-size", 16)
    assert done.returncode == 2
    assert "pooling = 'cls'" in done.stderr and "no such folder" in done.stderr
    assert "--rows-per-call = 8: must be at least --batch-size (16)" in done.stderr
    assert "Ray" not in done.stdout  # nothing started


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
    # the next command reports the study with the sweep its checkpoint came from, and runs as printed
    next_line = done.stdout.rstrip().splitlines()[-1]
    assert next_line == (f"next: python -m analysis report {tmp_path / 'embed-xgb-smoke'} {tmp_path / 'smoke'} "
                         "--out reports/embed-xgb-smoke")
    report = tmp_path / "report"
    assert analysis_main([*next_line.split()[4:-2], "--out", str(report)]) == 0
    table = json.loads((report / "summary.json").read_text())["table"]
    assert {row["variant"] for row in table} == {"lora", "embed+xgboost-pretrained", "embed+xgboost-finetuned-lora"}
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
    # other rows under the same name: refused, never the old embeddings and rows reported as these
    changed = write_config(tmp_path / "changed.yaml", config | {"models": [{"model": "tiny-bert"}],
                                                                "data": config["data"] | {"test_size": 16}},
                           f"python ray_jobs/embed_xgb.py --config {tmp_path / 'changed.yaml'}")
    refused = _run("embed_xgb.py", "--config", changed, "--storage", tmp_path)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "data.test_size = 16, but the embeddings in " in refused.stderr and "--overwrite" in refused.stderr
    # other settings than the rows and embeddings there were made with: refused, naming each (they
    # were kept, "row exists", and reported as this config's)
    pooling = "cls" if get_model_spec("tiny-bert").pooling == "mean" else "mean"
    other = write_config(tmp_path / "other.yaml", config | {"xgboost": {"rounds": 5}, "models": [
                             {"model": "tiny-bert", "pooling": pooling, "finetuned_from": "smoke"}]},
                         f"python ray_jobs/embed_xgb.py --config {tmp_path / 'other.yaml'}")
    refused = _run("embed_xgb.py", "--config", other, "--storage", tmp_path)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"pooling = '{pooling}', but the embeddings in " in refused.stderr
    assert "xgboost.rounds = 5, but its row tiny-bert__embed+xgboost-pretrained__s42 was fitted with 10" \
        in refused.stderr
    # its sweep gone: the dry run lists the fine-tuned run as waiting (it compared those embeddings
    # with no checkpoint and refused)
    (tmp_path / "smoke").rename(tmp_path / "smoke-gone")
    waiting = _run("embed_xgb.py", "--config", config_path, "--storage", tmp_path, "--dry-run")
    assert waiting.returncode == 0, waiting.stdout[-2000:] + waiting.stderr[-2000:]
    assert "tiny-bert finetuned: waits for its sweep (see above)" in waiting.stdout
    assert len(read_results(tmp_path / "embed-xgb-smoke" / "results.parquet")) == 2
