"""Before the first `kubectl apply -k`: can this Kubernetes cluster run what an overlay describes?

    python k8s/preflight.py k8s/overlays/ablation            # the results volume of k8s/storage
    python k8s/preflight.py k8s/overlays/single-gpu --storage k8s/storage-one-node

Reads the cluster with the `kubectl` on PATH (its current context) and checks:
- KubeRay's CRDs have the fields the manifests use (KubeRay 1.6 or later; older operators
  refuse them with "unknown field", or drop them silently with --validate=false);
- the results volume: a claim already bound, or a default storage class whose provisioner
  offers what the claim asks (ReadWriteMany: NFS, CephFS, EFS, Filestore, Azure Files);
- GPUs: nodes with allocatable `nvidia.com/gpu` where the overlay's workers ask for one (none
  now only warns: an autoscaled node pool may start at zero);
- the image: not the placeholder tag, which `docker/release.sh` replaces.
Prints one line per check; exits 1 when one fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import yaml

# KubeRay's CRD fields the manifests use, by the path of their schema properties
NEEDED_FIELDS = {
    "rayjobs.ray.io": [("spec", "preRunningDeadlineSeconds"), ("spec", "submitterConfig"),
                       ("spec", "deletionStrategy", "deletionRules", "[]", "condition", "jobDeploymentStatus")],
    "rayclusters.ray.io": [("spec", "authOptions")],
}
# CSI and in-tree provisioners that offer ReadWriteMany volumes
RWX_PROVISIONERS = ("nfs", "cephfs", "efs.csi.aws.com", "filestore.csi.storage.gke.io", "file.csi.azure.com",
                    "kubernetes.io/azure-file", "glusterfs", "csi.trident.netapp.io")
PLACEHOLDER_TAG = "unreleased-run-docker-release-sh"


def kubectl(*args: str) -> dict | list | None:
    """`kubectl ARGS -o json` parsed, or None where there is no such object. Any other failure
    (no cluster reachable, no context set, no right to read) ends the preflight with kubectl's
    own last line: read as "not installed", it sent users to install what they had."""
    done = subprocess.run(["kubectl", *args, "-o", "json"], capture_output=True, text=True)
    if done.returncode == 0:
        return json.loads(done.stdout)
    if "(NotFound)" in done.stderr:
        return None
    said = (done.stderr.strip().splitlines() or ["no message"])[-1]
    raise SystemExit(f"preflight: cannot read the cluster: `kubectl {' '.join(args)}` said: {said}\n"
                     "point kubectl at the cluster (kubectl config current-context; use-context NAME) "
                     "with the right to read CRDs, storage classes, volume claims and nodes")


def rendered(kustomization: str) -> list[dict]:
    done = subprocess.run(["kubectl", "kustomize", kustomization], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"preflight: kubectl kustomize {kustomization}: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def crd_fields() -> list[tuple[bool, str]]:
    found = []
    for crd, paths in NEEDED_FIELDS.items():
        obj = kubectl("get", "crd", crd)
        if obj is None:
            found.append((False, f"CRD {crd}: not installed; install KubeRay 1.6 or later (k8s/README.md, step 2)"))
            continue
        (version,) = [v for v in obj["spec"]["versions"] if v["name"] == "v1"] or [{}]
        root = version.get("schema", {}).get("openAPIV3Schema", {})
        for path in paths:
            schema = root
            for name in path:  # "[]": an array's items
                schema = schema.get("items", {}) if name == "[]" else schema.get("properties", {}).get(name) or {}
            ok = bool(schema)
            found.append((ok, f"CRD {crd} has {'.'.join(path).replace('.[]', '[]')}" + ("" if ok else
                          ": no; this operator is older than KubeRay 1.6, upgrade it (k8s/README.md, step 2)")))
    return found


def storage(claims: list[dict]) -> list[tuple[bool, str]]:
    found = []
    classes = (kubectl("get", "storageclass") or {}).get("items", [])
    default = [c for c in classes if c["metadata"].get("annotations", {}).get(
        "storageclass.kubernetes.io/is-default-class") == "true"]
    for claim in claims:
        name, modes = claim["metadata"]["name"], claim["spec"]["accessModes"]
        bound = kubectl("get", "pvc", name)
        if bound and bound.get("status", {}).get("phase") == "Bound":
            found.append((True, f"volume {name}: bound ({', '.join(bound['status'].get('accessModes', []))})"))
            continue
        wanted = claim["spec"].get("storageClassName")
        chosen = [c for c in classes if c["metadata"]["name"] == wanted] if wanted else default
        if not chosen:
            found.append((False, f"volume {name}: storage class {wanted or '(default)'} not found; name one "
                                 "(k8s/README.md, 'Storage class')"))
            continue
        provisioner = chosen[0]["provisioner"]
        ok = "ReadWriteMany" not in modes or any(p in provisioner for p in RWX_PROVISIONERS)
        found.append((ok, f"volume {name}: {'/'.join(modes)} from {chosen[0]['metadata']['name']} ({provisioner})"
                          + ("" if ok else "; that provisioner is not known to offer ReadWriteMany: name a class "
                                           "that does, or use k8s/storage-one-node on one node")))
    return found


def gpus(objects: list[dict]) -> list[tuple[bool, str]]:
    # a container that asks for a GPU (a toleration of the GPU taint alone asks for none)
    if not any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for o in objects for c in _containers(o)):
        return []
    nodes = (kubectl("get", "nodes") or {}).get("items", [])
    total = sum(int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", 0)) for n in nodes)
    if total:
        return [(True, f"GPUs: {total} allocatable nvidia.com/gpu now")]
    print("warning: no node has allocatable nvidia.com/gpu now: fine if a GPU node pool scales up from zero; "
          "otherwise install the NVIDIA device plugin or GPU operator")
    return []


def image(objects: list[dict]) -> list[tuple[bool, str]]:
    placeholders = sorted({c["image"] for o in objects for c in _containers(o) if PLACEHOLDER_TAG in c["image"]})
    if placeholders:
        return [(False, f"image {placeholders[0]}: the placeholder; run `bash docker/release.sh REGISTRY/NAME` first "
                        "(k8s/README.md, step 1)")]
    return [(True, "image: a released tag")]


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    cluster = spec.get("rayClusterSpec", spec)
    templates = [cluster.get("headGroupSpec", {}).get("template", {})]
    templates += [g["template"] for g in cluster.get("workerGroupSpecs", [])]
    templates.append(spec.get("submitterPodTemplate", {}))
    return [c for t in templates for c in t.get("spec", {}).get("containers", [])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overlay", help="the overlay to apply, e.g. k8s/overlays/ablation")
    p.add_argument("--storage", default="k8s/storage", help="the results volume's kustomization (default k8s/storage)")
    args = p.parse_args(argv)
    objects = rendered(args.overlay)
    claims = [o for o in rendered(args.storage) if o["kind"] == "PersistentVolumeClaim"]
    results = crd_fields() + storage(claims) + gpus(objects) + image(objects)
    for ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {line}")
    failed = sum(not ok for ok, _ in results)
    print(f"preflight: {failed} check(s) failed" if failed else f"preflight: ready for kubectl apply -k {args.overlay}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
