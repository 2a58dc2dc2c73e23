"""The README's commands as a user types them: from the root of a checkout, with no --storage
and with a relative one. Every test elsewhere passes an absolute tmp_path, which never showed
that tuning trials wrote their rows inside Ray's session folder (issue 35): here the results must
land under the checkout, every tuning cell must have a choice, and nothing of ours may be
written under Ray's session folder (its own temp dir, RAY_TMPDIR, per test)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from helpers import our_files

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path):
    """A checkout's root as a user has it (the repository's sweeps/ and ray_jobs/, and data/ for the
    smoke configs' data), a Ray temp folder of its own (short: Ray's socket paths have a length limit),
    and the user's cache folder in tmp_path: the environment a user's shell would have."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("sweeps", "ray_jobs", "data"):
        (root / name).symlink_to(ROOT / name)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SENTISWEEP_CACHE_DIR")}
    env.update(RAY_TMPDIR=str(ray_tmp), XDG_CACHE_HOME=str(tmp_path / "user-cache"))
    yield root, env, ray_tmp
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _run(root: Path, env: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=900)


def test_the_tuned_sweep_without_storage_lands_in_results_and_every_cell_chooses(checkout):
    root, env, ray_tmp = checkout
    out = _run(root, env, "sweeps/ablation.py", "--config", "sweeps/configs/tuned_smoke.yaml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    chosen = json.loads((root / "results" / "tuned-smoke" / "tuning" / "chosen.json").read_text())["cells"]
    assert len(chosen) == 2 and all(cell["values"] and cell["ok"] >= 1 for cell in chosen.values()), chosen
    results = pd.read_parquet(root / "results" / "tuned-smoke" / "results.parquet")
    assert (results["status"] == "ok").all() and (results["tuning"] == "chosen").all()
    assert our_files(ray_tmp) == []
    assert (root.parent / "user-cache" / "sentisweep" / "tokenized").is_dir()  # the cache: the user's, not Ray's
    # the last screen: each cell's choice, the table, where the rows are, the next command
    tail = out.stdout[out.stdout.rindex("=" * 100):]
    assert tail.count(": chose learning_rate") == 2 and "trials: 4 ok, 0 failed" in tail
    assert "rows: results/tuned-smoke/results.parquet (4 rows)" in tail
    assert "next: python -m analysis report results/tuned-smoke --out reports/tuned-smoke" in tail
    assert "WARNING" not in tail and "unresolved search space" not in out.stdout + out.stderr
    assert "publisher trust" not in out.stdout + out.stderr
    # then what the README says to run next, on the same relative paths
    for argv in (["-m", "analysis", "report", "results/tuned-smoke", "--out", "reports/tuned-smoke"],
                 ["-m", "analysis", "compare", "results/tuned-smoke", "lora-attention", "full"],
                 ["-m", "sentisweep.predict", "--results", "results/tuned-smoke", "A wonderful film."],
                 ["-m", "sentisweep.export", "--results", "results/tuned-smoke", "--select", "best", "--out",
                  "exported/tuned-smoke-best"]):
        done = _run(root, env, *argv)
        assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-2000:])
    assert (root / "reports" / "tuned-smoke" / "report.html").is_file()
    assert (root / "exported" / "tuned-smoke-best" / "model.safetensors").is_file()


def test_the_search_with_a_relative_storage_lands_under_this_directory(checkout):
    root, env, ray_tmp = checkout
    out = _run(root, env, "sweeps/search.py", "--config", "sweeps/configs/search_smoke.yaml", "--storage", "mine")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = root / "mine" / "search-smoke"
    results = pd.read_parquet(folder / "results.parquet")
    assert (results["status"] == "ok").any() and (folder / "optuna.journal").is_file()
    assert (folder / "best_trial.yaml").is_file() and our_files(ray_tmp) == []
    assert "next: python -m analysis report mine/search-smoke --out reports/search-smoke" in out.stdout
    # the found trial alone, as best_trial.yaml's first line and the README say
    assert (folder / "best_trial.yaml").read_text().startswith(
        f"# python -m sentisweep.train --config {folder / 'best_trial.yaml'}")
    alone = _run(root, env, "-m", "sentisweep.train", "--config", "mine/search-smoke/best_trial.yaml",
                 "--out", "runs/best")
    assert alone.returncode == 0, alone.stdout[-2000:] + alone.stderr[-2000:]
    assert (root / "runs" / "best" / "result.parquet").is_file()


def test_the_embedding_and_xgboost_jobs_with_relative_folders_land_under_this_directory(checkout):
    root, env, ray_tmp = checkout
    embedded = _run(root, env, "ray_jobs/embed.py", "--smoke-test", "--out", "emb", "--concurrency", "1")
    assert embedded.returncode == 0, embedded.stdout[-2000:] + embedded.stderr[-2000:]
    assert sorted(p.name for p in (root / "emb").iterdir()) == ["test.parquet", "train.parquet", "validation.parquet"]
    boosted = _run(root, env, "ray_jobs/xgboost_stage.py", "--embeddings", "emb", "--workers", "2", "--rounds", "5",
                   "--storage", "out")
    assert boosted.returncode == 0, boosted.stdout[-2000:] + boosted.stderr[-2000:]
    assert (pd.read_parquet(root / "out" / "embed-xgb" / "results.parquet")["status"] == "ok").all()
    assert our_files(ray_tmp) == []

