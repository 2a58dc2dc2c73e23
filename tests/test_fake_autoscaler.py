"""The guide's submit command against a real autoscaler (issue 38): Ray's fake multi-node
autoscaler (the `fake_multinode` provider Ray's own tests use), on a head of 0 CPUs with one CPU
worker type scaled to 0, as the cpu-only overlay starts. The smoke sweep must make the
autoscaler add the worker, wait for it, run, and leave the cluster to go back to 0 workers
after its idle timeout. The cluster is this test's own (free ports, its own temp folder, its
processes tagged and killed at the end: never `ray stop`)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from helpers import head_ports, kill_tagged

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
TAG = "SENTISWEEP_TEST_FAKE_AUTOSCALER"
IDLE_S = 15


def _config(gcs_address: str) -> dict:
    """What `ray up` would take, for the fake provider: worker nodes are raylets on this machine.
    Node updaters off and node ids as IPs, as Ray's fake-cluster example sets them."""
    return {
        "cluster_name": "sentisweep-test", "max_workers": 1, "idle_timeout_minutes": IDLE_S / 60,
        "upscaling_speed": 1, "head_node_type": "ray.head.default", "auth": {"ssh_user": "ray"}, "docker": {},
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1},
        },
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }


@pytest.fixture(scope="module")
def autoscaled_head():
    import ray._private.services

    tag = secrets.token_hex(4)
    temp = Path(tempfile.mkdtemp(prefix="fa", dir="/tmp"))  # short: Ray's socket paths have a length limit
    ports, metrics_ports = head_ports()
    gcs_address = f"{ray._private.services.get_node_ip_address()}:{ports['--port']}"
    (temp / "autoscaling.json").write_text(json.dumps(_config(gcs_address)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SENTISWEEP_CACHE_DIR")}
    env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", **metrics_ports, RAY_FAKE_CLUSTER="1",
               AUTOSCALER_UPDATE_INTERVAL_S="1", SENTISWEEP_CACHE_DIR=str(temp / "cache"), **{TAG: tag},
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # the job's `python`
    start = subprocess.run([RAY, "start", "--head", "--num-cpus", "0", "--temp-dir", str(temp / "ray"),
                            "--autoscaling-config", str(temp / "autoscaling.json"), "--disable-usage-stats",
                            *[str(x) for kv in ports.items() for x in kv]],
                           env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield env, gcs_address, f"http://127.0.0.1:{ports['--dashboard-port']}"
    finally:
        kill_tagged(TAG, tag)
        shutil.rmtree(temp, ignore_errors=True)


# A driver of its own that watches the nodes: how many workers are alive, each second, until none.
WATCH = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
started = time.monotonic()
while time.monotonic() - started < float(sys.argv[2]):
    workers = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if not workers:
        print(f"no worker after {time.monotonic() - started:.0f} s", flush=True)
        break
    time.sleep(1)
"""


def test_the_guides_submit_scales_up_runs_and_the_cluster_scales_back_down(autoscaled_head, tmp_path):
    env, gcs_address, dashboard = autoscaled_head
    # k8s/README.md, step 4, at smoke size: code and configs where the image has them (here the
    # checkout), results on the shared folder; no --working-dir, no flag to say the cluster grows
    job = subprocess.run([RAY, "job", "submit", "--address", dashboard, "--", "python",
                          str(ROOT / "sweeps" / "ablation.py"), "--config", str(ROOT / "sweeps/configs/smoke.yaml"),
                          "--storage", str(tmp_path / "results")],
                         env=env, capture_output=True, text=True, timeout=900)
    log = job.stdout + job.stderr
    assert job.returncode == 0, log[-5000:]
    assert "asked the autoscaler for 10 x {CPU: 1}" in log, log[:6000]  # the 10 trials that run
    assert "a node that can run a trial joined" in log
    # the smoke sweep's own checks (no other test runs it): every trial once, in Tune's folder by its id
    results = pd.read_parquet(tmp_path / "results" / "smoke" / "results.parquet")
    assert len(results) == 12 and results["trial_id"].is_unique
    assert results["status"].value_counts().to_dict() == {"ok": 10, "skipped": 2}
    ok = results[results["status"] == "ok"]
    assert ok["accuracy"].between(0, 1).all() and (ok["torch_threads"] == 1).all()
    assert (ok["attempts"] == 1).all()  # each trial started exactly once
    for trial_id in ok["trial_id"]:  # Tune's names and folders are our trial ids
        assert (tmp_path / "results" / "smoke" / "tune" / trial_id).is_dir() and f"│ {trial_id} " in log, trial_id
    assert re.search(r"\| tiny-qwen3 \| zero-shot \| [^|]+ \| 2 \|", log)  # the last screen's table, 2 seeds
    assert "next: python -m analysis report " in log
    # the request withdrawn, the trials done: the worker goes after its idle timeout
    watch = subprocess.run([sys.executable, "-c", WATCH, gcs_address, str(IDLE_S + 90)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert "no worker after" in watch.stdout, watch.stdout + watch.stderr[-3000:]
