"""`ray start --head` + `ray job submit --working-dir .` on this machine, for real: the driver runs
in Ray's copy of the working directory, inside Ray's session folder. Results must land where the
user said (an absolute path there), nothing of ours inside Ray's folder, and a relative output
is refused at once instead of vanishing with the session (issue 35). The head is this test's
own: free ports, its own temp folder, and at the end only the processes carrying its tag are
killed (never `ray stop --force`, which stops every Ray on the machine)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import head_ports, kill_tagged, our_files, write_config

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
TAG = "SENTISWEEP_TEST_RAY_HEAD"


@pytest.fixture(scope="module")
def ray_head():
    tag = secrets.token_hex(4)
    temp = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # short: Ray's socket paths have a length limit
    ports, metrics_ports = head_ports()
    # Ray 2.60 turns token authentication on: `ray start` and `ray job submit` both need
    # RAY_AUTH_MODE=token (submission failed with InvalidAuthToken without it).
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SENTISWEEP_CACHE_DIR")}
    env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", **metrics_ports, **{TAG: tag},
               SENTISWEEP_CACHE_DIR=str(temp.parent / f"{temp.name}-cache"))
    start = subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--temp-dir", str(temp),
                            "--disable-usage-stats", *[str(x) for kv in ports.items() for x in kv]],
                           env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield env, f"http://127.0.0.1:{ports['--dashboard-port']}", temp
    finally:
        kill_tagged(TAG, tag)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(env["SENTISWEEP_CACHE_DIR"], ignore_errors=True)


def _submit(head, *argv: str) -> subprocess.CompletedProcess:
    env, address, _ = head
    return subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", ".", "--", "python", *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_tuned_sweep_under_ray_job_submit_lands_where_asked(ray_head, tmp_path):
    """Both of a tuned sweep's Tuners under the job: the tuning's and the seeds'. The tuned smoke
    config cut to one cell of 2 tuning trials and 2 seeds, seed 1 the chosen trial's own run: 3
    trials, not its 8 (tests/test_user_path.py runs it whole, as the README's command)."""
    config = yaml.safe_load((ROOT / "sweeps" / "configs" / "tuned_smoke.yaml").read_text())
    config.update(name="tuned-one", methods=["full"], tuning={**config["tuning"], "trials": 2})
    config["data"]["source"] = str(ROOT / config["data"]["source"])
    path = write_config(tmp_path / "tuned_one.yaml", config, "python sweeps/ablation.py --config tuned_one.yaml")
    job = _submit(ray_head, "sweeps/ablation.py", "--config", str(path), "--storage", str(tmp_path))
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    assert "succeeded" in job.stdout + job.stderr
    chosen = json.loads((tmp_path / "tuned-one" / "tuning" / "chosen.json").read_text())["cells"]
    assert len(chosen) == 1 and all(cell["values"] for cell in chosen.values()), chosen
    results = pd.read_parquet(tmp_path / "tuned-one" / "results.parquet")
    assert len(results) == 2 and (results["status"] == "ok").all()
    assert results["tuned_from"].notna().sum() == 1  # seed 2 ran in the seeds' own Tuner
    assert our_files(ray_head[2]) == []  # nothing of ours in Ray's session folder


def test_a_relative_storage_under_ray_job_submit_is_refused_before_anything_runs(ray_head):
    job = _submit(ray_head, "sweeps/search.py", "--config", "sweeps/configs/search_smoke.yaml")  # --storage results
    assert job.returncode != 0
    text = job.stdout + job.stderr
    assert "--storage = 'results': a relative path under `ray job submit`" in text, text[-3000:]
    assert "s3://" in text and our_files(ray_head[2]) == []
