"""`ray start --head` + `ray job submit --working-dir .` on this machine, for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
DASHBOARD_PORT = "8299"  # not the default 8265, so a developer's own cluster is left alone


@pytest.fixture
def ray_head(tmp_path):
    # Ray 2.60 turns token authentication on: `ray start` and `ray job submit` both need
    # RAY_AUTH_MODE=token (submission failed with InvalidAuthToken without it).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
    start = subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--dashboard-port", DASHBOARD_PORT,
                            "--port", "6399", "--disable-usage-stats"], env=env, capture_output=True, text=True,
                           timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_smoke_sweep_under_ray_job_submit(ray_head, tmp_path):
    job = subprocess.run(
        [RAY, "job", "submit", "--address", f"http://127.0.0.1:{DASHBOARD_PORT}", "--working-dir", ".", "--",
         "python", "sweeps/ablation.py", "--config", "sweeps/configs/smoke.yaml", "--storage", str(tmp_path)],
        cwd=ROOT, env=ray_head, capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    assert "succeeded" in job.stdout + job.stderr
    results = pd.read_parquet(tmp_path / "smoke" / "results.parquet")
    assert len(results) == 12 and results["trial_id"].is_unique
    assert results["status"].value_counts().to_dict() == {"ok": 10, "skipped": 2}
