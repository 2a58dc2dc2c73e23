"""A driver's request to the autoscaler is withdrawn when it exits (issue 38: a request stays until
replaced, so a kept one held GPU workers up after the sweep). A local Ray has no autoscaler, but
the request is the same key in its GCS: read there, at the driver's own exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]

DRIVER = """
import atexit, sys, ray
from ray.experimental.internal_kv import _internal_kv_get
from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL as CHANNEL
from ray_session.connect import ask_autoscaler
ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False)
# registered before the request's withdrawal, so it runs after it (atexit: last in, first out)
atexit.register(lambda: print("at exit:", _internal_kv_get(CHANNEL).decode(), flush=True))
ask_autoscaler(1, 1, 2)  # a GPU trial on a cluster with none: asked for 2 GPU nodes
print("while running:", _internal_kv_get(CHANNEL).decode(), flush=True)
if sys.argv[1] == "error":
    raise RuntimeError("a trial's error")
if sys.argv[1] == "ctrl-c":
    raise KeyboardInterrupt
"""


@pytest.mark.parametrize("how", ["ok", "error", "ctrl-c"])
def test_the_request_is_withdrawn_when_the_driver_exits(how):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", DRIVER, how], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env=env)
    assert out.returncode == (0 if how == "ok" else 1), out.stderr[-2000:]
    assert 'while running: [{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}]' in out.stdout, out.stdout
    assert "asked the autoscaler for 2 x {'CPU': 1, 'GPU': 1}" in out.stdout
    assert "at exit: []" in out.stdout, out.stdout + out.stderr[-2000:]
