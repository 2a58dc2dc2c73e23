"""Beyond one machine, simulated on this one (tests/cluster.py): a Ray head and two worker
nodes, each in its own network namespace where the machine allows it, each declaring one
GPU it does not have; results in S3 (moto's server), so no two nodes share a folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.cluster import SimulatedCluster
from tests.helpers import write_config

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "sweeps"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    sim = SimulatedCluster(tmp_path_factory.mktemp("cluster"))
    try:
        sim.start_s3(BUCKET)
        sim.start_head()
        sim.add_worker("w1", cpus=1, gpus=1)
        sim.add_worker("w2", cpus=1, gpus=1)
        print(f"simulated cluster: {sim.mode} (head {sim.head.ip}, workers "
              f"{sim.nodes['w1'].ip}, {sim.nodes['w2'].ip}; S3 at {sim.env['AWS_ENDPOINT_URL']})")
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def s3_env(cluster, monkeypatch):
    """This process reads the store as the nodes do: the same AWS variables."""
    for key, value in cluster.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return {k: v for k, v in cluster.env.items() if k.startswith("AWS_")}


def _sweep_config(tmp_path: Path, name: str) -> Path:
    return write_config(tmp_path / f"{name}.yaml", {
        "name": name, "models": ["tiny-bert"],
        "methods": ["full", {"name": "lora", "r": 4, "placement": "attention"}], "seeds": [1, 2],
        "data": {"source": str(ROOT / "tests" / "fixtures" / "tiny_reviews"),
                 "train_size": 64, "eval_size": 16, "test_size": 32},
        "training": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "max_length": 64,
                     "learning_rate": 1e-3, "logging_steps": 1},
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
    done = cluster.run_on_head([sys.executable, str(ROOT / "sweeps" / "ablation.py"),
                                "--config", str(_sweep_config(tmp_path, "spread")), "--storage", store])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = pd.read_parquet(f"{store}/spread/results.parquet")
    assert len(results) == 4 and (results["status"] == "ok").all(), results[["trial_id", "status", "error"]]
    # every trial's files are in the store, not on a node
    assert results["checkpoint_path"].str.startswith(f"{store}/spread/trials/").all()
    # spread over both worker nodes (one declared GPU each: two trials at a time), none on the head
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

