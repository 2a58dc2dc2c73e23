"""The image, built and run for real (docker/build_and_smoke.sh): a Debian root filesystem
from debootstrap as the base, the Dockerfile with the CPU lock, then the smoke sweep inside
the image as uid 1000 with a read-only root filesystem, to the end, and its report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers import not_installed

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = 3  # sentisweep/exit_codes.py: the script's "this engine cannot run containers here"


@pytest.mark.container
def test_image_builds_and_runs_the_smoke_sweep_as_uid_1000(tmp_path):
    missing = [tool for tool in ("podman", "debootstrap") if not shutil.which(tool)]
    if missing:
        not_installed(", ".join(missing))
    work = Path(os.environ.get("SENTISWEEP_CONTAINER_WORK", tmp_path))  # keeps the rootfs between runs
    done = subprocess.run(["bash", str(ROOT / "docker" / "build_and_smoke.sh"), str(work)],
                          capture_output=True, text=True, timeout=2400, env={**os.environ, "ALLOW_DIRTY": "1"})
    if done.returncode == SKIPPED:  # installed, but this machine gives containers no room to run
        pytest.skip("the container engine cannot run here: " + done.stderr.strip()[-1500:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "uid=1000" in done.stdout  # `id` in the container
    results = pd.read_parquet(work / "shared" / "results" / "smoke" / "results.parquet")
    # smoke.yaml: 2 models x 3 methods x 2 seeds, zero-shot on the encoder skipped (2)
    assert len(results) == 12
    assert sorted(results["status"].value_counts().items()) == [("ok", 10), ("skipped", 2)]
    # provenance from the image, which has no .git: the commit it was built from (docker/provenance.sh)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert results["git_commit"].str.fullmatch(rf"{head}(\+dirty)?").all(), results["git_commit"].unique()
    tag = subprocess.run(["bash", str(ROOT / "docker" / "image_tag.sh")], capture_output=True, text=True,
                         env={**os.environ, "ALLOW_DIRTY": "1"}).stdout.strip()
    labels = subprocess.run(["podman", "image", "inspect", "--format", "{{json .Labels}}",
                             f"ghcr.io/sentisweep/sentisweep:{tag}-cpu"], capture_output=True, text=True)
    assert head in json.loads(labels.stdout)["org.opencontainers.image.revision"], labels.stdout + labels.stderr
    assert (work / "shared" / "reports" / "smoke" / "report.html").stat().st_size > 10_000
