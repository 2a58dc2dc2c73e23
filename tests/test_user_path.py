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

import numpy as np
import pandas as pd
import pytest
from helpers import our_files, separable, write_split

from sentisweep.config import DataConfig
from sentisweep.probe.embeddings import read_embeddings
from sentisweep.results import read_results
from sentisweep.trial.data import load_task_data
from sentisweep.tuning import cell_key

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
    """The README's main command on the tuned smoke config: every cell tunes and chooses, its seeds
    run at the choice (the chosen trial's own run reused), then the commands the last screen names,
    and --resume keeps the choices."""
    root, env, ray_tmp = checkout
    out = _run(root, env, "sweeps/ablation.py", "--config", "sweeps/configs/tuned_smoke.yaml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = root / "results" / "tuned-smoke"
    chosen = json.loads((folder / "tuning" / "chosen.json").read_text())
    assert set(chosen["cells"]) == {"tiny-bert__full", "tiny-bert__lora-attention"}
    assert all(cell["values"] and cell["ok"] >= 1 for cell in chosen["cells"].values()), chosen
    tuning_rows = pd.read_parquet(folder / "tuning" / "results.parquet")
    assert len(tuning_rows) == 6 and set(tuning_rows["status"]) <= {"ok", "stopped"}
    assert (tuning_rows["train_steps"] <= 8).all()
    results = pd.read_parquet(folder / "results.parquet")
    assert len(results) == 4 and (results["status"] == "ok").all() and (results["tuning"] == "chosen").all()
    # seed 1 is the chosen tuning trial's own run, not run again; seed 2 ran at the choice
    reused = results.set_index("trial_id")["tuned_from"]
    for cell in chosen["cells"].values():
        assert reused[f"tiny-bert__{cell['variant']}__s1"] == cell["trial_id"]
        assert pd.isna(reused[f"tiny-bert__{cell['variant']}__s2"])
    for (model, variant), group in results.groupby(["model", "variant"]):
        values = chosen["cells"][cell_key(model, variant)]["values"]
        assert np.allclose(group["learning_rate"], values["learning_rate"])
        assert "r" not in values or (group["lora_r"] == values["r"]).all()
    # the sweep's folder read as a whole: its seeds' rows only, never the tuning trials beside them
    assert set(read_results(str(folder))["sweep"]) == {"tuned-smoke"} and len(read_results(str(folder))) == 4
    assert our_files(ray_tmp) == []
    assert (root.parent / "user-cache" / "sentisweep" / "tokenized").is_dir()  # the cache: the user's, not Ray's
    # the last screen: each cell's choice, the table, where the rows are, the next command
    tail = out.stdout[out.stdout.rindex("=" * 100):]
    assert tail.count(": chose learning_rate") == 2 and "4 trials: 4 ok, 0 failed" in tail
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
    assert (root / "reports" / "tuned-smoke" / "expected_max.png").is_file()
    markdown = (root / "reports" / "tuned-smoke" / "report.md").read_text()
    assert "## Equal-budget tuning" in markdown
    assert "Budget: each cell: 3 trials of at most the seeds' own steps" in markdown
    assert "Optuna TPE (seed 0, the first 2 at random)" in markdown  # 3 trials: TPE models the third
    assert "## Expected best validation accuracy vs trials" in markdown and "| n=3 " in markdown
    assert (root / "exported" / "tuned-smoke-best" / "model.safetensors").is_file()

    sessions = sorted((ray_tmp / "ray").glob("session_2*"))
    again = _run(root, env, "sweeps/ablation.py", "--config", "sweeps/configs/tuned_smoke.yaml", "--resume")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "tuning 0 cell(s)" in again.stdout  # the choices were kept, not searched again
    assert json.loads((folder / "tuning" / "chosen.json").read_text()) == chosen
    # every trial done: the matrix says so, and only the rows are gathered again, with no Ray
    assert "4 trials: 0 to run, 4 finished earlier, 0 skipped" in again.stdout
    assert sessions and sorted((ray_tmp / "ray").glob("session_2*")) == sessions
    assert pd.read_parquet(folder / "results.parquet").equals(results)


def test_the_search_with_a_relative_storage_lands_under_this_directory(checkout):
    root, env, ray_tmp = checkout
    out = _run(root, env, "sweeps/search.py", "--config", "sweeps/configs/search_smoke.yaml", "--storage", "mine")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = root / "mine" / "search-smoke"
    results = pd.read_parquet(folder / "results.parquet")
    assert (results["status"] == "ok").any() and (folder / "optuna.journal").is_file()
    assert (folder / "best_trial.yaml").is_file() and our_files(ray_tmp) == []
    assert "next: python -m analysis report mine/search-smoke --out reports/search-smoke" in out.stdout
    assert "Optuna study: mine/search-smoke/optuna.journal\n" in out.stdout  # as typed, as the lines around it
    # the found trial alone, as best_trial.yaml's first line and the README say
    assert (folder / "best_trial.yaml").read_text().startswith(
        f"# python -m sentisweep.train --config {folder / 'best_trial.yaml'}")
    alone = _run(root, env, "-m", "sentisweep.train", "--config", "mine/search-smoke/best_trial.yaml",
                 "--out", "runs/best")
    assert alone.returncode == 0, alone.stdout[-2000:] + alone.stderr[-2000:]
    assert (root / "runs" / "best" / "result.parquet").is_file()


def test_the_embedding_and_xgboost_jobs_with_relative_folders_land_under_this_directory(checkout):
    """The embedding job, then the XGBoost stage on 2 Ray Train workers, both with relative folders;
    the stage against the same boosting in one process (separable embeddings: a tiny model's 32 test
    rows could not tell a distributed fit from a broken one)."""
    import xgboost

    root, env, ray_tmp = checkout
    # 96 rows in blocks of 16, served longest first: written back in each split's own order.
    embedded = _run(root, env, "ray_jobs/embed.py", "--smoke-test", "--out", "emb", "--rows-per-call", "16",
                    "--batch-size", "8")
    assert embedded.returncode == 0, embedded.stdout[-2000:] + embedded.stderr[-2000:]
    assert "  96/96 texts embedded, " in embedded.stdout  # the last line always shows, however few came between
    assert embedded.stdout.rstrip().endswith(
        "next: python ray_jobs/xgboost_stage.py --embeddings emb   # XGBoost on them")
    assert sorted(p.name for p in (root / "emb").iterdir()) == ["test.parquet", "train.parquet", "validation.parquet"]
    # The rows the job embedded are the rows the core's splits hold, labels included.
    data = load_task_data(DataConfig(source=str(ROOT / "data" / "tiny_reviews"), train_size=48, eval_size=16,
                                     test_size=32))
    for split, rows in (("train", 48), ("validation", 16), ("test", 32)):
        row_ids, labels, matrix, meta = read_embeddings(root / "emb" / f"{split}.parquet")
        assert matrix.shape == (rows, 64) and matrix.dtype == np.float32 and np.isfinite(matrix).all()
        expected = data.splits[split].set_index("row_id")["label"]
        assert list(row_ids) == list(data.splits[split]["row_id"])
        assert (expected.loc[row_ids].to_numpy() == labels).all()
        assert meta["model"] == "tiny-bert" and meta["pooling"] == "cls" and meta["max_length"] == 64
        assert meta["checkpoint"] == "pretrained" and meta["split"] == split and meta["device"] == "CPU"
        assert f"{split}: {rows} x 64 in " in embedded.stdout and " s on CPU -> " in embedded.stdout
    before = (root / "emb" / "test.parquet").stat().st_mtime_ns
    again = _run(root, env, "ray_jobs/embed.py", "--smoke-test", "--out", "emb")
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    assert (root / "emb" / "test.parquet").stat().st_mtime_ns == before  # nothing already computed is touched
    sizes = {"train": (1200, 1), "validation": (300, 2), "test": (600, 3)}
    for split, (n, seed) in sizes.items():
        write_split(root / "separable", split, *separable(n, seed))
    boosted = _run(root, env, "ray_jobs/xgboost_stage.py", "--embeddings", "separable", "--storage", "out",
                   "--name", "probe", "--workers", "2", "--rounds", "60",
                   "--report-every", "20")  # reports during boosting too, not only at the end
    assert boosted.returncode == 0, boosted.stdout[-2000:] + boosted.stderr[-2000:]
    assert boosted.stdout.rstrip().endswith("next: python -m analysis report out/probe --out reports/probe")
    # a local Ray has no dashboard, so no State API for Ray Train's placement-group cleaner to ask
    assert "Failed to query Ray Train Controller" not in boosted.stdout + boosted.stderr
    assert our_files(ray_tmp) == []
    row = read_results(root / "out" / "probe" / "results.parquet").iloc[0]
    assert row["status"] == "ok" and row["method"] == "embed+xgboost"
    assert row["peak_memory_kind"] == "host_rss_peak_worker" and row["peak_memory_bytes"] > 0
    # The same data and settings in one process, with the scikit-learn interface.
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (separable(n, s) for n, s in sizes.values())
    single = xgboost.XGBClassifier(n_estimators=60, max_depth=6, learning_rate=0.1, subsample=0.8,
                                   colsample_bytree=0.8, early_stopping_rounds=20, random_state=42)
    single.fit(x_train, y_train, eval_set=[(x_valid, y_valid)], verbose=False)
    single_accuracy = float((single.predict(x_test) == y_test).mean())
    assert abs(row["accuracy"] - single_accuracy) <= 0.01, (row["accuracy"], single_accuracy)
