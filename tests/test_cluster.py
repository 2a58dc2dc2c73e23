"""Beyond one machine, simulated on this one (tests/cluster.py): a Ray head and two worker
nodes, each in its own network namespace where the machine allows it, each declaring one
GPU it does not have; results in S3 (moto's server), so no two nodes share a folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_config
from simcluster import SimulatedCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "sweeps"


def _started(folder: Path, workers: dict[str, int]):
    """S3, a head and worker nodes (name -> declared GPUs, 1 CPU each), stopped after."""
    sim = SimulatedCluster(folder)
    try:
        sim.start_s3(BUCKET)
        sim.start_head()
        for name, gpus in workers.items():
            sim.add_worker(name, cpus=1, gpus=gpus)
        print(f"simulated cluster: {sim.mode} (head {sim.head.ip}, workers "
              f"{', '.join(sim.nodes[n].ip for n in workers)}; S3 at {sim.env['AWS_ENDPOINT_URL']})")
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from _started(tmp_path_factory.mktemp("cluster"), {"w1": 1, "w2": 1})


def _read_store_as_the_nodes_do(cluster, monkeypatch) -> dict[str, str]:
    """This process gets the nodes' AWS variables, to read the store as they do."""
    aws = {k: v for k, v in cluster.env.items() if k.startswith("AWS_")}
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    return aws


@pytest.fixture
def s3_env(cluster, monkeypatch):
    return _read_store_as_the_nodes_do(cluster, monkeypatch)


def _sweep_config(tmp_path: Path, name: str, methods=("full", {"name": "lora", "r": 4, "placement": "attention"}),
                  seeds=(1, 2), **training) -> Path:
    return write_config(tmp_path / f"{name}.yaml", {
        "name": name, "models": ["tiny-bert"], "methods": list(methods), "seeds": list(seeds), "max_failures": 2,
        "data": {"source": str(ROOT / "data" / "tiny_reviews"),
                 "train_size": 64, "eval_size": 16, "test_size": 32},
        "training": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "max_length": 64,
                     "learning_rate": 1e-3, "logging_steps": 1, **training},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 1},
    }, f"python sweeps/ablation.py --config {tmp_path / name}.yaml --storage s3://{BUCKET}/results")


def _host(cluster, s3_env, argv: list[str]) -> subprocess.CompletedProcess:
    """A command on this machine outside the cluster (a user's laptop reading the store)."""
    import os

    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, **s3_env, "HF_HUB_OFFLINE": "1"})


def test_sweep_over_two_nodes_on_s3_then_report_predict_export(cluster, s3_env, tmp_path, record_property):
    record_property("cluster_mode", cluster.mode)
    store = f"s3://{BUCKET}/results"
    done = cluster.run_on_head([sys.executable, str(ROOT / "sweeps" / "ablation.py"), "--config",
                                str(_sweep_config(tmp_path, "spread", methods=["full"])), "--storage", store])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = pd.read_parquet(f"{store}/spread/results.parquet")
    assert len(results) == 2 and (results["status"] == "ok").all(), results[["trial_id", "status", "error"]]
    # every trial's files are in the store, not on a node
    assert results["checkpoint_path"].str.startswith(f"{store}/spread/trials/").all()
    # spread over both worker nodes (one declared GPU each: the two trials at once), none on the head
    hosts = {json.loads(h)[0].split("/")[-1] for h in results["attempt_hosts"]}  # "hostname/node ip"
    assert hosts == {cluster.nodes["w1"].ip, cluster.nodes["w2"].ip} or cluster.mode == "loopback", hosts

    report = _host(cluster, s3_env, ["-m", "analysis", "report", f"{store}/spread", "--out", str(tmp_path / "report")])
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000
    predicted = _host(cluster, s3_env, ["-m", "sentisweep.predict", "--results", f"{store}/spread", "a wonderful film"])
    assert predicted.returncode == 0 and "a wonderful film" in predicted.stdout, predicted.stderr[-2000:]
    exported = _host(cluster, s3_env, ["-m", "sentisweep.export", "--results", f"{store}/spread",
                                       "--out", str(tmp_path / "exported")])
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "exported" / "model.safetensors").is_file()



def test_embeddings_and_xgboost_on_s3_from_the_sweeps_checkpoint(cluster, s3_env, tmp_path):
    """After the sweep above: embeddings of its best checkpoint (downloaded from S3 by the
    embedding actor's node), XGBoost on them with Ray Train workers on both nodes reading the
    embeddings from S3; every file lands in the store."""
    store = f"s3://{BUCKET}/results"
    config = write_config(tmp_path / "exgb.yaml", {
        "name": "exgb", "models": [{"model": "tiny-bert", "finetuned_from": "spread", "pretrained": False}],
        "data": {"source": str(ROOT / "data" / "tiny_reviews"), "train_size": 64, "eval_size": 16,
                 "test_size": 32},
        "embedding": {"max_length": 64, "concurrency": 1}, "xgboost": {"rounds": 10}, "workers": 2,
    }, f"python ray_jobs/embed_xgb.py --config exgb.yaml --storage {store}")
    done = cluster.run_on_head([sys.executable, str(ROOT / "ray_jobs" / "embed_xgb.py"), "--config", str(config),
                                "--storage", store], cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = pd.read_parquet(f"{store}/exgb/results.parquet")
    assert len(results) == 1 and (results["status"] == "ok").all(), results[["trial_id", "status", "error"]]
    assert results["checkpoint_path"].str.startswith(f"{store}/exgb/trials/").all()  # the booster
    (source,) = {json.loads(p)["checkpoint"] for p in results["method_params"]}
    assert source.startswith(f"{store}/spread/trials/")  # the sweep's best checkpoint, in S3
    for split in ("train", "validation", "test"):
        assert pd.read_parquet(f"{store}/exgb/embeddings/tiny-bert-finetuned/{split}.parquet").shape[0] > 0


def _study_in_store(fs, journal: str, local: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    with fs.open_input_stream(journal) as stream:
        local.write_bytes(stream.read())
    study = optuna.load_study(study_name="search-smoke",
                              storage=optuna.storages.JournalStorage(JournalFileBackend(str(local))))
    finished = {t.number: (t.params, t.value) for t in study.trials if t.state.is_finished()}
    return study, finished


def test_search_on_s3_resumes_after_its_driver_is_killed(cluster, s3_env, tmp_path, record_property):
    """The study without a shared volume: its journal on the driver's disk, copied to S3 after
    each trial. The driver is SIGKILLed, its disk lost (a new driver pod), and --resume goes on
    with the same study from the store's copy."""
    import os
    import shutil
    import signal

    import pyarrow.fs as pafs

    record_property("cluster_mode", cluster.mode)
    store = f"s3://{BUCKET}/results"
    command = [sys.executable, str(ROOT / "sweeps" / "search.py"), "--config", "sweeps/configs/search_smoke.yaml",
               "--storage", store, "--num-samples", "4", "--max-concurrent", "1"]
    fs, _ = pafs.FileSystem.from_uri(store)
    journal = f"{BUCKET}/results/search-smoke/optuna.journal"
    driver = cluster.popen_on_head(command, tmp_path / "driver.log", cwd=ROOT)
    try:
        _wait_for(lambda: fs.get_file_info(journal).type == pafs.FileType.File
                  and len(_study_in_store(fs, journal, tmp_path / "seen.journal")[1]) >= 1,
                  "a finished trial in the study's copy", 400, driver)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    _, before = _study_in_store(fs, journal, tmp_path / "before.journal")
    shutil.rmtree(Path(cluster.head.env["TMPDIR"]) / "sentisweep-studies")  # the driver's disk is gone

    resumed = cluster.run_on_head([*command, "--resume"], cwd=ROOT)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "study restored from s3://" in resumed.stdout
    study, after = _study_in_store(fs, journal, tmp_path / "after.journal")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))  # no trial number twice
    assert all(after[n] == before[n] for n in before)  # the finished trials, as they were
    assert len(after) > len(before)
    results = pd.read_parquet(f"{store}/search-smoke/results.parquet")
    assert len(results) == 4 and results["trial_id"].is_unique
    best = fs.open_input_stream(f"{BUCKET}/results/search-smoke/best_trial.yaml").read().decode()
    assert best.startswith("# python -m sentisweep.train --config best_trial.yaml")


@pytest.fixture(scope="module")
def cpu_only_cluster(tmp_path_factory):
    """A head and one CPU worker: a cluster whose GPU node someone will add by hand."""
    yield from _started(tmp_path_factory.mktemp("growing"), {"c1": 0})


def test_gpu_node_that_joins_late_runs_the_waiting_trials(cpu_only_cluster, tmp_path, record_property, monkeypatch):
    cluster = cpu_only_cluster
    _read_store_as_the_nodes_do(cluster, monkeypatch)
    record_property("cluster_mode", cluster.mode)
    store = f"s3://{BUCKET}/results"
    config = _sweep_config(tmp_path, "late-gpu", methods=["full"])
    sweep = [sys.executable, str(ROOT / "sweeps" / "ablation.py"), "--config", str(config), "--storage", store]
    refused = cluster.run_on_head(sweep, timeout=300)  # no GPU node, no autoscaler: refused at once
    assert refused.returncode == 2 and "no autoscaler runs" in refused.stderr, refused.stderr[-2000:]
    assert "--wait-for-nodes MINUTES" in refused.stderr

    driver = cluster.popen_on_head([*sweep, "--wait-for-nodes", "10"], tmp_path / "driver.log")
    try:
        _wait_for(lambda: "asked the autoscaler" in (tmp_path / "driver.log").read_text(), "the request", 300, driver)
        time.sleep(3)  # the driver is waiting, not failing
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        late = cluster.add_worker("g1", cpus=1, gpus=1)
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    results = pd.read_parquet(f"{store}/late-gpu/results.parquet")
    assert len(results) == 2 and (results["status"] == "ok").all()
    if cluster.mode == "netns":
        assert {json.loads(h)[0].split("/")[-1] for h in results["attempt_hosts"]} == {late.ip}


def _wait_for(condition, what: str, timeout: float, driver=None):
    deadline = time.time() + timeout
    while not condition():
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {driver.returncode}) while waiting for {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def test_worker_node_killed_mid_trial_resumes_from_its_checkpoint(cluster, s3_env, tmp_path, record_property):
    """Preemption: the node running a resumable trial is SIGKILLed (raylet, object store,
    workers) after the trial saved a checkpoint to the store; Tune retries the trial on the
    other node, which resumes at that step. Runs last in this module: it takes a node away."""
    import pyarrow.fs as pafs

    record_property("cluster_mode", cluster.mode)
    store = f"s3://{BUCKET}/results"
    config = _sweep_config(tmp_path, "preempt", methods=["full"], seeds=[1], max_steps=400, eval_steps=40,
                           resumable=True, logging_steps=10)
    driver = cluster.popen_on_head([sys.executable, str(ROOT / "sweeps" / "ablation.py"), "--config", str(config),
                                    "--storage", store], tmp_path / "driver.log")
    fs, _ = pafs.FileSystem.from_uri(store)
    try:
        def files(prefix):
            return [f.path for f in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/results/preempt/{prefix}",
                                                                       recursive=True, allow_not_found=True))]

        # the second checkpoint: the first is then registered with Tune, not only uploaded
        _wait_for(lambda: any("/checkpoint_000001" in f for f in files("tune")), "checkpoints in the store", 300,
                  driver)
        (attempt_log,) = [f for f in files("attempts") if f.endswith(".jsonl")]
        with fs.open_input_stream(attempt_log) as stream:
            first_host = json.loads(stream.read().decode().splitlines()[0])["host"].split("/")[-1]
        (victim,) = [name for name, node in cluster.nodes.items() if node.ip == first_host and name != "h"] \
            if cluster.mode == "netns" else ["w1"]
        killed = cluster.kill_node(victim)
        assert killed > 0
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    log = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, log[-4000:]
    results = pd.read_parquet(f"{store}/preempt/results.parquet")
    assert len(results) == 1, results  # exactly one row for the trial
    row = results.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["attempts"] == 2
    hosts = [h.split("/")[-1] for h in json.loads(row["attempt_hosts"])]
    if cluster.mode == "netns":
        assert hosts[0] == first_host and hosts[1] != first_host, hosts  # the retry ran on the other node
    assert row["resumed_from_step"] >= 40, row["resumed_from_step"]  # from a checkpoint (every 40 steps), not 0
    history = pd.read_parquet(f"{row['output_dir']}/history.parquet")
    assert history["step"].max() == 400
