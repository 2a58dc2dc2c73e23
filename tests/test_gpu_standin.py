"""The GPU check in a CPU stand-in of the lent GPU machine's environment (issue 37): that machine's
versions of the packages it has (benchmarks/gpu_machine.txt: transformers 5.17 ...), nothing it
lacks (no Ray, no datasets, no XGBoost, Optuna, MLflow or tensorboardX), and no editable install
of ours: the checkout on the path, as its command runs there. Run as `python -S` (no
site-packages, no .pth files) with this venv's packages seen through a folder of links that
leaves those out. What breaks there (a package, a version's API) breaks here first."""

from __future__ import annotations

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
    if not STANDIN.is_dir():
        not_installed(f"{STANDIN} (pip install --no-deps --target .venv/gpu-standin -r benchmarks/gpu_machine.txt)")
    view = site_without_what_the_gpu_machine_lacks(tmp_path / "site")
    path = os.pathsep.join(map(str, [STANDIN, ROOT / "benchmarks", ROOT, view]))
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {path.split(os.pathsep)!r}\n"
                          + RUNNER, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                          "--families", "deberta-v3,qwen3", "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    pins = [line.split("==") for line in (ROOT / "benchmarks" / "gpu_machine.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")]
    preflight = out.stdout.splitlines()[0]
    for name, version in pins:
        assert f"{name.replace('_', '-')} {version}" in preflight, (name, preflight)
    assert "PASS tiny matrix at auto" in out.stdout and "PASS deberta-v3 embedder 4bit" in out.stdout
