"""What a sweep's trial process does before the trial: import the training stack without the
libraries the trial does not use (bitsandbytes unless the method quantizes; datasets and scipy).
Each case runs in a fresh interpreter, as a Ray trial does."""

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


def as_in_a_sweep(trial: dict) -> dict:
    """A sweep's driver selects the data splits (and tokenizes) before any trial starts: each
    trial then reads the splits from the cache and never imports scikit-learn (or scipy)."""
    from sentisweep.config import TrialConfig
    from sentisweep.data import load_task_data

    load_task_data(TrialConfig.model_validate(trial).data)
    return trial


def trial_code(method: str | dict, trial: dict, before: str = "") -> str:
    return f"""
import json, sys
{before}
from sweeps.common import import_training_stack
from sentisweep.config import TrialConfig
from sentisweep.train import run_trial
hidden = import_training_stack({(method if isinstance(method, str) else method["name"])!r})
result = run_trial(TrialConfig.model_validate({trial!r}))
imported = {{name: repr(sys.modules.get(name, "never imported"))[:40] for name in ("bitsandbytes", "datasets", "scipy")}}
import datasets, scipy.optimize  # back for code that imports them itself
print(json.dumps({{"hidden": hidden, "status": result.status, "error": result.error, **imported,
                  "versions": json.loads(result.versions)}}))
"""


@pytest.mark.parametrize("method", ["ia3", {"name": "lora", "r": 4, "placement": "attention"}])
def test_a_method_without_quantization_trains_without_bitsandbytes_datasets_or_scipy(method, data_dir, cache_dir,
                                                                                  tmp_path):
    seen = in_fresh_process(trial_code(method, as_in_a_sweep(tiny_trial("tiny-bert", method, data_dir, cache_dir, tmp_path))))
    assert seen["hidden"] == ["bitsandbytes", "datasets", "scipy"] and seen["status"] == "ok", seen["error"]
    assert seen["bitsandbytes"] == "None"  # blocked, never loaded
    assert seen["datasets"] == seen["scipy"] == "'never imported'"  # the Trainer did not import them
    assert all(seen["versions"][name] not in ("absent", None) for name in ("bitsandbytes", "datasets"))


def test_qlora_keeps_bitsandbytes(data_dir, cache_dir, tmp_path):
    method = {"name": "qlora", "r": 4}
    seen = in_fresh_process(trial_code(method, as_in_a_sweep(tiny_trial("tiny-bert", method, data_dir, cache_dir, tmp_path))))
    assert seen["hidden"] == ["datasets", "scipy"] and seen["status"] == "ok", seen["error"]
    assert seen["bitsandbytes"].startswith("<module 'bitsandbytes'")


def test_too_late_once_transformers_has_looked(data_dir, cache_dir, tmp_path):
    trial = tiny_trial("tiny-bert", "ia3", data_dir, cache_dir, tmp_path)
    seen = in_fresh_process(trial_code("ia3", trial, before="import transformers, peft"))
    assert not seen["hidden"] and seen["status"] == "ok", seen["error"]
