"""The GPU check in a CPU stand-in of the lent GPU machine's environment (issue 37): that machine's
versions of the packages it has (benchmarks/gpu_machine.txt: transformers 5.17 ...), nothing it
lacks (no Ray, no datasets, no XGBoost, Optuna, MLflow or tensorboardX), and no editable install
of ours: the checkout on the path, as its command runs there. Run as `python -S` (no
site-packages, no .pth files) with this venv's packages seen through a folder of links that
leaves those out. What breaks there (a package, a version's API) breaks here first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import not_installed

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / ".venv" / "gpu-standin"  # in the venv: an environment, not our code
ABSENT = ("ray", "datasets", "xgboost", "optuna", "mlflow", "tensorboardx", "sentisweep", "__editable__")
RUNNER = """
import runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def site_without_what_the_gpu_machine_lacks(view: Path) -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    view.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().replace("-", "_").startswith(ABSENT):
            (view / entry.name).symlink_to(entry)
    return view


def test_the_gpu_check_passes_with_the_gpu_machines_versions_and_nothing_it_lacks(tmp_path):
    """The one-command GPU check, on CPU, as the GPU machine would run it: every method on two
    Hub-shaped families (tests/test_hub_shaped.py trains every family with every method in-process),
    zero-shot, the embedder (Qwen3, DeBERTa-v3) unquantized and in 4 bits, predict from two trained
    checkpoints, then two real-shaped cases (registry tiny models here; tiny encoders learn too
    slowly in 18 steps for the loss verdict, a GPU runs real widths), each in its own process: a
    PASS line per criterion, the tables and verdicts in --out."""
    if not STANDIN.is_dir():
        not_installed(f"{STANDIN} (pip install --no-deps --target .venv/gpu-standin -r benchmarks/gpu_machine.txt)")
    view = site_without_what_the_gpu_machine_lacks(tmp_path / "site")
    path = os.pathsep.join(map(str, [STANDIN, ROOT / "benchmarks", ROOT, view]))
    work, report = tmp_path / "work", tmp_path / "c.md"
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {path.split(os.pathsep)!r}\n"
                          + RUNNER, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                          "--families", "deberta-v3,qwen3", "--work", str(work), "--out", str(report),
                          "--real-shaped", "tiny-qwen3:ia3,tiny-qwen3:lora:checkpointing", "--steps", "18"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    verdicts = [line for line in out.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert out.returncode == 0, "\n".join(verdicts) + out.stdout[-3000:] + out.stderr[-3000:]
    pins = [line.split("==") for line in (ROOT / "benchmarks" / "gpu_machine.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")]
    for name, version in pins:  # the preflight found the GPU machine's versions, not this venv's
        assert f"{name.replace('_', '-')} {version}" in verdicts[0], (name, verdicts[0])
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert any("| qwen3 " in row and "| zero-shot " in row and "| ok " in row for row in table)
    assert any("| deberta-v3 " in row and "| qlora " in row and "| ok " in row for row in table)
    assert [v.split(":")[0] for v in verdicts] == [
        "PASS preflight", "PASS tiny matrix at auto", "PASS qwen3 embedder unquantized", "PASS qwen3 embedder 4bit",
        "PASS deberta-v3 embedder unquantized", "PASS deberta-v3 embedder 4bit",
        "PASS predict", "PASS predict", "PASS peak memory kind",
        "PASS memory tiny-qwen3 ia3", "PASS loss tiny-qwen3 ia3",
        "PASS memory tiny-qwen3 lora +checkpointing", "PASS loss tiny-qwen3 lora +checkpointing"], verdicts
    assert "transformers " in verdicts[0] and "pydantic " in verdicts[0]
    assert "qwen3-qlora-auto" in verdicts[6]  # the QLoRA checkpoint, merged, is served
    assert report.read_text().strip().endswith(verdicts[-1])
    last = out.stdout.strip().splitlines()[-1]  # after the tables, what happened
    assert last == f"gpu check: 13 of 13 criteria passed; tables and verdicts in {report}"
    cases = [json.loads(path.read_text()) for path in sorted((work / "cases").glob("*.json"))]
    assert len({case["pid"] for case in cases}) == 2  # each case in its own process
    assert all(case["row"]["train_tokens_per_second"] > 0 and case["row"]["padding_fraction"] == 0 for case in cases)
