"""What a sweep's trial process does before the trial: keep bitsandbytes out unless the
method quantizes. Each case runs in a fresh interpreter, as a Ray trial does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_trial

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def in_fresh_process(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def trial_code(method: str | dict, trial: dict, before: str = "") -> str:
    return f"""
import json, sys
{before}
from sweeps.common import keep_bitsandbytes_out
from sentisweep.config import TrialConfig
from sentisweep.train import run_trial
hidden = keep_bitsandbytes_out({(method if isinstance(method, str) else method["name"])!r})
result = run_trial(TrialConfig.model_validate({trial!r}))
print(json.dumps({{"hidden": hidden, "status": result.status, "error": result.error,
                  "bitsandbytes": repr(sys.modules.get("bitsandbytes", "never imported"))[:40],
                  "versions": json.loads(result.versions)}}))
"""


@pytest.mark.parametrize("method", ["ia3", {"name": "lora", "r": 4, "placement": "attention"}])
def test_a_method_without_quantization_trains_without_importing_bitsandbytes(method, data_dir, cache_dir,
                                                                             tmp_path):
    seen = in_fresh_process(trial_code(method, tiny_trial("tiny-bert", method, data_dir, cache_dir, tmp_path)))
    assert seen["hidden"] and seen["status"] == "ok", seen["error"]
    assert seen["bitsandbytes"] == "None"  # blocked, never loaded
    assert seen["versions"]["bitsandbytes"] not in ("absent", None)  # provenance still names it


def test_qlora_keeps_bitsandbytes(data_dir, cache_dir, tmp_path):
    method = {"name": "qlora", "r": 4}
    seen = in_fresh_process(trial_code(method, tiny_trial("tiny-bert", method, data_dir, cache_dir, tmp_path)))
    assert not seen["hidden"] and seen["status"] == "ok", seen["error"]
    assert seen["bitsandbytes"].startswith("<module 'bitsandbytes'")


def test_too_late_once_transformers_has_looked(data_dir, cache_dir, tmp_path):
    trial = tiny_trial("tiny-bert", "ia3", data_dir, cache_dir, tmp_path)
    seen = in_fresh_process(trial_code("ia3", trial, before="import transformers, peft"))
    assert not seen["hidden"] and seen["status"] == "ok", seen["error"]
