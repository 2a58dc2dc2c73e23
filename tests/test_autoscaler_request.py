"""A driver's request to the autoscaler is withdrawn once a node for its trials is up, and when it
exits on an error or Ctrl-C while waiting (issue 38: a request stays until replaced, so a kept one
held GPU workers up after the sweep). A local Ray has no autoscaler, but the request is the same
key in its GCS: read there, while waiting, once placed and at the driver's own exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import default_sigint

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]

DRIVER = """
import atexit, os, signal, sys, ray
from ray.experimental.internal_kv import _internal_kv_get
from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL as CHANNEL
from ray_session import autoscale
ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False)
# registered before the request's withdrawal, so it runs after it (atexit: last in, first out)
atexit.register(lambda: print("at exit:", _internal_kv_get(CHANNEL).decode(), flush=True))
looks = []
def nodes_now():  # the driver's view of the nodes; with "placed" a GPU node joins at its third look
    looks.append(1)
    if len(looks) == 2:
        print("while waiting:", _internal_kv_get(CHANNEL).decode(), flush=True)
        if sys.argv[1] == "ctrl-c":
            os.kill(os.getpid(), signal.SIGINT)
    return [{"CPU": 1.0, "GPU": 1.0}] if sys.argv[1] == "placed" and len(looks) >= 3 else [{"CPU": 1.0}]
autoscale.nodes_now = nodes_now
# a GPU trial on a cluster with none and no autoscaler: waited for as --wait-for-nodes asks
autoscale.make_room(1, 1, 2, wait_minutes=0.1 if sys.argv[1] == "timeout" else 5)
print("once placed:", _internal_kv_get(CHANNEL).decode(), flush=True)
"""


@pytest.mark.parametrize("how", ["placed", "timeout", "ctrl-c"])
def test_the_request_is_withdrawn_once_placed_and_at_exit(how):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", DRIVER, how], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env=env, preexec_fn=default_sigint)
    assert (out.returncode == 0) == (how == "placed"), out.stderr[-2000:]
    assert 'while waiting: [{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}]' in out.stdout, out.stdout
    assert "asked the autoscaler for 2 x {CPU: 1, GPU: 1}" in out.stdout
    assert ("once placed: []" in out.stdout) == (how == "placed"), out.stdout
    assert "at exit: []" in out.stdout, out.stdout + out.stderr[-2000:]
    if how == "timeout":
        assert "--wait-for-nodes = 0.1: no node that can run a trial" in out.stderr, out.stderr[-2000:]
