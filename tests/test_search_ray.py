"""The Optuna + ASHA search on a real local Ray, then resumed after an interrupt."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import default_sigint, not_installed

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
SEARCH = [sys.executable, str(ROOT / "sweeps" / "search.py")]


def _env():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return env


def test_search_with_asha_saves_study_and_best_config(tmp_path):
    # with two objectives (search_smoke's, plus peak memory down); the other tests run one
    out = subprocess.run([*SEARCH, "--config", "sweeps/configs/search_smoke_multi.yaml", "--storage", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=900, env=_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "objectives: val_accuracy (max), peak_memory_bytes (min)" in out.stdout
    assert "Failed to fetch metrics" not in out.stdout + out.stderr  # Tune's per-trial files are off, on purpose
    assert "plus baselines on the same splits: tfidf-logreg" in out.stdout
    root = tmp_path / "search-smoke-multi"
    every_row = pd.read_parquet(root / "results.parquet")
    baseline = every_row[every_row["model"] == "tfidf"]
    assert len(baseline) == 1 and baseline["status"].iloc[0] == "ok"
    assert baseline["test_rows"].iloc[0] == every_row["test_rows"].max() == 32  # the same test split
    results = every_row[every_row["model"] != "tfidf"]
    assert len(results) == 4 and results["trial_id"].is_unique
    assert set(results["status"]) <= {"ok", "stopped"} and (results["status"] == "ok").any()
    assert results["lora_r"].isin([2, 4, 8]).all()
    assert results["learning_rate"].between(1e-4, 1e-2).all()
    # Tune's config of a trial (what it prints as the trial starts and beside the best one) is the sampled point
    from ray.tune import ExperimentAnalysis

    configs = [trial.config for trial in ExperimentAnalysis(str(root / "tune")).trials]
    assert len(configs) == 4
    assert all(set(config) == {"r", "alpha_multiple", "learning_rate", "dropout"} for config in configs), configs
    # no per-trial logger files from Tune (the driver would upload them again at every save); the
    # trial's own TensorBoard events instead
    assert not list((root / "tune").glob("*/progress.csv")) and not list((root / "tune").glob("*/params.json"))
    assert len(list((root / "trials").glob("*/tensorboard/events.out.tfevents.*"))) >= (results["status"] == "ok").sum()
    # the study is Optuna's journal on the driver's disk, openable with optuna (and optuna-dashboard)
    study = _study(root / "optuna.journal", "search-smoke-multi")
    assert len(study.trials) == 4 and [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert finished and all(len(t.values) == 2 for t in finished)  # ASHA's stopped trials: pruned
    best = root / "best_trial.yaml"
    text = best.read_text()
    assert text.startswith("# python -m sentisweep.train --config")
    config = yaml.safe_load(text)
    assert config["model"] == "tiny-bert" and config["method"]["name"] == "lora"

    from sentisweep.config_load import load_config

    assert load_config(best, "trial").method.r in (2, 4, 8)  # ready to run as it is
    # the report over a search: its figures include the study's, embedded in the HTML page
    from analysis.__main__ import main as analysis

    for _ in range(2):  # run again, it replaces its own report: every file it writes is one it knows
        assert analysis(["report", str(root), "--out", str(tmp_path / "report"), "--within", "2"]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert re.search(r'<img src="data:image/png;base64,[^"]+" alt="Optuna: history \(search-smoke-multi\)"', page)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Search trade-offs: the Pareto front" in markdown and "hypervolume is" in markdown
    assert "The cheapest trial within 2 points of the best validation accuracy" in markdown
    assert "## Expected best validation accuracy vs trials" in markdown
    assert (tmp_path / "report" / "search_front_peak_memory_bytes.png").is_file()
    # the best trial against TF-IDF on the same test rows: the paired bootstrap interval
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert any("tfidf / logreg" in (row["A"], row["B"]) and row["rows"] == 32 for row in summary["significance"])
    versus = markdown.split("## Search: its best trial against the baselines")[1].split("##")[0]
    best_variant = yaml.safe_load(text)["variant"]
    assert f"tiny-bert / {best_variant}" in versus and "tfidf / logreg" in versus and "95% CI" in versus
    # the baseline is neither a point of the front nor a curve of its own
    curve = markdown.split("## Expected best validation accuracy vs trials")[1].split("##")[0]
    assert "tfidf" not in curve
    # two stores' curves: each heading names its store (two identical headings could not be told apart)
    shutil.copytree(root, tmp_path / "again")
    assert analysis(["report", str(root), str(tmp_path / "again"), "--out", str(tmp_path / "both")]) == 0
    headings = [line for line in (tmp_path / "both" / "report.md").read_text().splitlines()
                if line.startswith("## Expected best")]
    assert headings == [f"## Expected best validation accuracy vs trials: {store}"
                        for store in (root, tmp_path / "again")]


def _study(storage, name="search-smoke"):
    """The search's study from its journal file, or from a database URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if isinstance(storage, Path):
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(storage)))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module")
def postgres():
    from helpers import start_postgres

    started = start_postgres()
    if started is None:
        not_installed("PostgreSQL (Debian: apt-get install postgresql)")
    url, stop = started
    yield url
    stop()


def test_search_resumes_after_interrupt(tmp_path):
    root = tmp_path / "search-smoke"
    driver = subprocess.Popen([*SEARCH, "--config", "sweeps/configs/search_smoke.yaml", "--storage", str(tmp_path)],
                              cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while not list(root.glob("trials/*/result.parquet")) and time.monotonic() < deadline:
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, output[-3000:]  # 128 + SIGINT
    resumed = subprocess.run([*SEARCH, "--config", "sweeps/configs/search_smoke.yaml", "--storage", str(tmp_path),
                              "--resume"], capture_output=True, text=True, cwd=ROOT, timeout=900, env=_env())
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    results = pd.read_parquet(root / "results.parquet")
    assert len(results) == 4 and results["trial_id"].is_unique


# The journal (the default) is killed and resumed on the cluster, over S3, in tests/test_cluster.py.
@pytest.mark.parametrize("where", ["postgresql"])
def test_search_driver_killed_then_resumed_keeps_its_study(where, tmp_path, request):
    """SIGKILL (no chance to clean up) of the driver and its local Ray mid-search, then
    --resume: the same study goes on, its finished trials kept as they were (TPE's history),
    and no trial number of the study is used twice. The study in a PostgreSQL database
    (--study-storage); `where = "journal"` runs the same on the driver's journal."""
    import optuna

    root = tmp_path / "search-smoke"
    command = [*SEARCH, "--config", "sweeps/configs/search_smoke.yaml", "--storage", str(tmp_path),
               "--num-samples", "4", "--max-concurrent", "1"]  # one at a time: 2 finish, the kill, 2 more
    storage = root / "optuna.journal"
    if where == "postgresql":
        storage = request.getfixturevalue("postgres")
        command += ["--study-storage", storage]
    driver = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its own process group: the local Ray dies with it

    def finished():
        try:
            return [t for t in _study(storage).trials if t.state == optuna.trial.TrialState.COMPLETE]
        except (KeyError, FileNotFoundError):  # the study is not there yet
            return []

    deadline = time.monotonic() + 400
    while len(finished()) < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
    before = {t.number: (t.params, t.value) for t in finished()}
    assert len(before) >= 2 and driver.poll() is None
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, cwd=ROOT, timeout=900,
                             env=_env())
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    study = _study(storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))  # no trial number twice
    complete = {t.number: (t.params, t.value) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert all(complete[n] == before[n] for n in before)  # the history TPE samples from, as it was
    assert len(complete) > len(before)  # the search went on after the kill
    results = pd.read_parquet(root / "results.parquet")
    assert len(results) == 4 and results["trial_id"].is_unique
    assert (storage.split("@")[-1] if where == "postgresql" else str(storage)) in resumed.stdout
