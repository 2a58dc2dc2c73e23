"""k8s/preflight.py against clusters described by what their `kubectl get ... -o json` returns: a
`kubectl` on PATH that answers from files and passes `kubectl kustomize` to the real one."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import kuberay_crd, not_installed

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit

FAKE_KUBECTL = """#!/usr/bin/env python3
import os, sys
args = sys.argv[1:]
if args[0] == "kustomize":
    os.execv(os.environ["REAL_KUBECTL"], ["kubectl", *args])
if not os.path.isdir(os.environ["FAKE_CLUSTER"]):  # what kubectl says with no context set
    sys.exit("The connection to the server localhost:8080 was refused - did you specify the right host or port?")
answer = os.path.join(os.environ["FAKE_CLUSTER"], "_".join(a for a in args if a not in ("-o", "json")) + ".json")
if not os.path.exists(answer):
    sys.exit('Error from server (NotFound): ' + " ".join(args))
print(open(answer).read())
"""


def crd(kind: str, drop: str | None = None) -> dict:
    obj = kuberay_crd(kind)  # shared: only a changed one is copied
    if drop:
        obj = copy.deepcopy(obj)
        for version in obj["spec"]["versions"]:
            version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"].pop(drop, None)
    return obj


def cluster(folder: Path, provisioner: str, gpus: int, old_operator: bool = False) -> Path:
    """A fake cluster's answers: KubeRay's CRDs, one default storage class, one node."""
    folder.mkdir()
    answers = {
        "get_crd_rayjobs.ray.io": crd("rayjobs", "preRunningDeadlineSeconds" if old_operator else None),
        "get_crd_rayclusters.ray.io": crd("rayclusters"),
        "get_storageclass": {"items": [{"metadata": {"name": "standard", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": provisioner}]},
        "get_nodes": {"items": [{"status": {"allocatable": {"cpu": "16", **(
            {"nvidia.com/gpu": str(gpus)} if gpus else {})}}}]},
    }
    for name, answer in answers.items():
        (folder / f"{name}.json").write_text(json.dumps(answer))
    return folder


def preflight(tmp_path: Path, cluster_folder: Path, *args: str, k8s: Path = ROOT / "k8s"):
    real_kubectl = shutil.which("kubectl") or not_installed("kubectl (`kubectl kustomize` renders the overlays)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CLUSTER": str(cluster_folder),
           "REAL_KUBECTL": real_kubectl}
    return subprocess.run([sys.executable, str(ROOT / "k8s" / "preflight.py"), *args], cwd=k8s.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def released_checkout(tmp_path: Path) -> Path:
    """A copy of k8s/ as release.sh leaves it: a real tag in place of the placeholder."""
    copied = tmp_path / "checkout" / "k8s"
    shutil.copytree(ROOT / "k8s", copied)
    for path in (copied / "components/image/kustomization.yaml", copied / "overlays/cpu-only/kustomization.yaml"):
        path.write_text(path.read_text().replace("unreleased-run-docker-release-sh", "0.1.0-abcdef1"))
    return copied


def test_a_ready_cluster_passes_every_check(tmp_path):
    k8s = released_checkout(tmp_path)
    done = preflight(tmp_path, cluster(tmp_path / "eks", "efs.csi.aws.com", gpus=4), "k8s/overlays/ablation",
                     k8s=k8s)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and "GPUs: 4 allocatable" in done.stdout
    assert done.stdout.strip().endswith("ready for kubectl apply -k k8s/overlays/ablation")


def test_each_problem_is_named_with_what_to_do(tmp_path):
    """An old operator, a default class without ReadWriteMany, no GPU yet, the placeholder tag."""
    done = preflight(tmp_path, cluster(tmp_path / "kind", "rancher.io/local-path", gpus=0, old_operator=True),
                     "k8s/overlays/ablation")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 3, done.stdout
    assert "rayjobs.ray.io has spec.preRunningDeadlineSeconds: no" in failed[0] and "KubeRay 1.6" in failed[0]
    assert "rayjobs.ray.io has spec.deletionStrategy.deletionRules[].condition.jobDeploymentStatus" in done.stdout
    assert "ReadWriteMany from standard (rancher.io/local-path)" in failed[1] and "storage-one-node" in failed[1]
    assert "unreleased-run-docker-release-sh" in failed[2] and "docker/release.sh" in failed[2]
    assert "warning: no node has allocatable nvidia.com/gpu" in done.stdout  # a pool may scale from zero
    assert "3 check(s) failed" in done.stdout


def test_one_node_storage_and_a_cpu_overlay_ask_for_no_rwx_and_no_gpu(tmp_path):
    k8s = released_checkout(tmp_path)
    done = preflight(tmp_path, cluster(tmp_path / "laptop", "rancher.io/local-path", gpus=0),
                     "k8s/overlays/cpu-only", "--storage", "k8s/storage-one-node", k8s=k8s)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ReadWriteOnce from standard" in done.stdout and "GPU" not in done.stdout


def test_no_cluster_reachable_is_said_so_not_read_as_missing_operators(tmp_path):
    """kubectl with no context set: it once read as 'CRD not installed' and 'storage class not found'."""
    done = preflight(tmp_path, tmp_path / "no-cluster", "k8s/overlays/ablation")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot read the cluster" in done.stderr and "localhost:8080 was refused" in done.stderr
    assert "use-context" in done.stderr and "FAIL" not in done.stdout
