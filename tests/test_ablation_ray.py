"""The smoke sweep on a real local Ray: results table, refusal to overwrite, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def _ablation(*args, timeout=900):
    env = {**os.environ, "RAY_ADDRESS": ""}  # never join a cluster left running elsewhere
    env.pop("RAY_ADDRESS")
    return subprocess.run([sys.executable, str(ROOT / "sweeps" / "ablation.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    out = _ablation("--config", "sweeps/configs/smoke.yaml", "--storage", str(storage))
    return storage, out


def test_smoke_sweep_writes_every_trial_once(smoke_sweep):
    storage, out = smoke_sweep
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = pd.read_parquet(storage / "smoke" / "results.parquet")
    assert len(results) == 12 and results["trial_id"].is_unique
    assert results["status"].value_counts().to_dict() == {"ok": 10, "skipped": 2}
    ok = results[results["status"] == "ok"]
    assert ok["accuracy"].between(0, 1).all() and (ok["torch_threads"] == 1).all()
    assert (storage / "smoke" / "tune").is_dir()
    assert "| tiny-qwen3 | zero-shot | 2 |" in out.stdout  # the summary table


def test_rerun_refuses_to_overwrite(smoke_sweep):
    storage, _ = smoke_sweep
    before = (storage / "smoke" / "results.parquet").read_bytes()
    out = _ablation("--config", "sweeps/configs/smoke.yaml", "--storage", str(storage))
    assert out.returncode == 2 and "this sweep finished" in out.stderr
    assert (storage / "smoke" / "results.parquet").read_bytes() == before
