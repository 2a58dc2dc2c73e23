"""The container and cluster files, checked offline (no Kubernetes cluster here): hadolint on
the Dockerfile; the lock file against pyproject; every kustomization rendered by `kubectl
kustomize` and every rendered object validated (RayCluster/RayJob against the KubeRay CRD
schemas, core objects and every pod template with kubernetes-validate); what each rendered
pod must be (hardened, sized, labelled); each overlay's promise (one GPU, no GPU); every
RayJob entrypoint reaching `ray job submit` whole."""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from helpers import kuberay_crd, not_installed

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
IMAGE_DIR = "/home/ray/sentisweep"  # where the Dockerfile puts the code
IMAGE_NAME = "ghcr.io/sentisweep/sentisweep"
APP_LABEL = {"app.kubernetes.io/name": "sentisweep"}
# What the image writes at run time besides the volume: scratch and Ray's session folder under
# /tmp, Ray's auth token in ~/.ray. The container test runs the smoke sweep with only these
# (and /dev/shm) writable, as the pods' read-only root filesystem leaves them.
WRITABLE_PATHS = ("/tmp", "/home/ray/.ray")


def _kind(path: Path) -> str:
    return yaml.safe_load(path.read_text())["kind"]


KUSTOMIZATIONS = sorted(p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml")
                        if _kind(p) == "Kustomization" and p.parent.name != "base")
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]
JOB_OVERLAYS = ["overlays/ablation", "overlays/search", "overlays/embed-xgb"]


# --- rendering ------------------------------------------------------------------------------

def kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    not_installed("kubectl (the manifests are rendered with `kubectl kustomize`)")


@functools.cache
def _render(directory: str) -> tuple:
    done = subprocess.run([kubectl(), "kustomize", directory], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {directory}:\n{done.stderr}"
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def rendered(overlay: str) -> list[dict]:
    """The objects `kubectl apply -k k8s/<overlay>` would create (copies: tests may edit them)."""
    return copy.deepcopy(list(_render(str(K8S / overlay))))


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def ray_cluster_spec(obj: dict) -> dict:
    return obj["spec"].get("rayClusterSpec", obj["spec"])


def pod_templates(obj: dict) -> list[dict]:
    """Every pod template of a RayCluster or RayJob: head, worker groups, job submitter."""
    cluster = ray_cluster_spec(obj)
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    if "submitterPodTemplate" in obj["spec"]:
        templates.append(obj["spec"]["submitterPodTemplate"])
    return templates


def all_ray_objects() -> list[tuple[str, dict]]:
    return [(overlay, obj) for overlay in OVERLAYS for obj in rendered(overlay) if obj["apiVersion"] == "ray.io/v1"]


def quantity_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity)).groups()
    return float(number) * units.get(unit, 1)


def cpus(quantity: str) -> float:
    quantity = str(quantity)
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- the Dockerfile and its lock -------------------------------------------------------------

@pytest.mark.unit
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    for dockerfile in (ROOT / "Dockerfile", ROOT / "docker" / "base-debian.Dockerfile"):
        done = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.unit
def test_dockerfile_runs_as_non_root_and_bakes_in_no_data():
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for pattern in ("results", ".sentisweep_cache", "*.parquet", "*.safetensors", ".venv", ".git"):
        assert pattern in ignored
    assert "HF_HOME=/mnt/" in text  # the Hugging Face cache on a mountable path
    assert not re.search(r"(?i)(token|secret|password)\s*=", text)


@pytest.mark.unit
def test_base_image_names_the_cuda_version_torch_was_built_for():
    """PyPI's torch 2.13.0 for Linux x86_64 is built for CUDA 13.0: the base must carry the same
    CUDA (a `-gpu` tag moves, and carried CUDA 12)."""
    text = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)", text, flags=re.M)
    assert re.fullmatch(r"rayproject/ray:2\.60\.0-py311-cu130", base), base
    lock = (ROOT / "docker" / "requirements.lock").read_text()
    assert re.search(r"^torch==2\.13\.0 ", lock, flags=re.M)
    assert re.search(r"^nvidia-cuda-runtime==13\.|^nvidia-cuda-runtime-cu13==", lock, flags=re.M)


def lock_pins(path: Path) -> dict[str, str]:
    """name -> version of a lock file made by `uv pip compile --generate-hashes`, checking that
    every pin has its hashes."""
    pins = {}
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        line = entry.strip()
        if not line or line.startswith(("#", "--")):
            continue
        name, version = re.match(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line).groups()
        assert "--hash=sha256:" in entry, f"{path.name}: {name} has no hash"
        pins[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return pins


@pytest.mark.unit
@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-cpu.lock"])
def test_lock_file_pins_every_dependency_with_hashes_and_satisfies_pyproject(lock):
    from packaging.requirements import Requirement

    pins = lock_pins(ROOT / "docker" / lock)
    assert len(pins) > 80, "a lock holds the transitive dependencies too"  # ray alone brings dozens
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"] + ["ray==2.60.0"]:
        requirement = Requirement(dependency)
        name = requirement.name.lower()
        assert name in pins, f"{name} is not in docker/{lock}"
        version = pins[name].split("+")[0]
        assert requirement.specifier.contains(version), f"{name}=={pins[name]} outside {requirement.specifier}"
    direct = [Requirement(line).name.lower() for line in (ROOT / "docker" / "requirements.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert set(direct) <= set(pins)
    assert ("nvidia-cublas" in pins or "nvidia-cublas-cu13" in pins) == (lock == "requirements.lock")


# --- every kustomization renders and validates ---------------------------------------------

def _closed(schema):
    """A JSON-Schema copy of a CRD schema, as the API server reads it: int-or-string
    fields take either, and objects with `properties` accept no other keys (the server
    would prune them: a misspelt field is silently lost, so here it is an error)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(kind: str):
    import jsonschema

    crd = kuberay_crd(f"{kind.lower()}s")
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_closed(version["schema"]["openAPIV3Schema"]))


def core_errors(obj: dict) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    except kubernetes_validate.ValidationError as err:
        return [str(err)]
    return []


def schema_errors(obj: dict) -> list[str]:
    if obj["apiVersion"] != "ray.io/v1":
        return core_errors(obj)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in crd_validator(obj["kind"]).iter_errors(obj)]
    # The CRDs embed the pod template; the core schema knows it more strictly.
    for template in pod_templates(obj):
        errors += core_errors({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                               "template": template})
    return errors


@pytest.mark.unit
@pytest.mark.parametrize("overlay", KUSTOMIZATIONS)
def test_kustomization_renders_and_every_object_validates(overlay):
    objects = rendered(overlay)
    assert objects
    for obj in objects:
        assert schema_errors(obj) == [], f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.unit
def test_overlays_are_the_documented_ones():
    names = ("cluster", "ablation", "search", "embed-xgb", "single-gpu", "cpu-only")
    assert set(OVERLAYS) == {f"overlays/{n}" for n in names}
    guide = (K8S / "README.md").read_text()
    for overlay in OVERLAYS:
        assert f"kubectl apply -k k8s/{overlay}" in guide, overlay


@pytest.mark.unit
def test_schema_check_catches_a_misspelt_field():
    (cluster,) = of_kind(rendered("overlays/cluster"), "RayCluster")
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3  # should be maxReplicas
    assert any("maxReplica" in e for e in schema_errors(broken))
    broken = copy.deepcopy(cluster)
    head_container = broken["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head_container["securityContext"]["readOnlyRootFileSystem"] = True
    assert schema_errors(broken)


# --- what every rendered pod must be --------------------------------------------------------

def image_tag() -> str:
    component = yaml.safe_load((K8S / "components" / "image" / "kustomization.yaml").read_text())
    (image,) = component["images"]
    return image["newTag"]


@pytest.mark.unit
def test_image_tag_is_version_and_commit_and_every_pod_runs_it():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tag = image_tag()
    # released: version + commit; else the placeholder that says what to run
    assert re.fullmatch(rf"{re.escape(version)}-[0-9a-f]{{7,40}}|unreleased-run-docker-release-sh", tag), tag
    for overlay, obj in all_ray_objects():
        expected = f"{IMAGE_NAME}:{tag}-cpu" if overlay == "overlays/cpu-only" else f"{IMAGE_NAME}:{tag}"
        for template in pod_templates(obj):
            for container in template["spec"]["containers"]:
                assert container["image"] == expected, overlay
                assert container["imagePullPolicy"] == "IfNotPresent", overlay


FAKE_ENGINE = """#!/usr/bin/env bash
echo "$@" >> "$ENGINE_LOG"
if [ "$1" = build ]; then (cd "${@: -1}" && find . ! -type d | LC_ALL=C sort) > "$ENGINE_LOG.$#"; fi
"""


@pytest.mark.unit
def test_release_builds_both_images_from_the_commit_pushes_them_and_sets_the_tags(tmp_path):
    """docker/release.sh with a stand-in engine that logs its calls and the build context's files, in a
    fresh clone of this commit: both builds get exactly the committed files (git archive) and the
    provenance flags, both tags are pushed and written into k8s/, and the commit hint is printed."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (tmp_path / "engine").write_text(FAKE_ENGINE)
    (tmp_path / "engine").chmod(0o755)
    log = tmp_path / "engine.log"
    done = subprocess.run(["bash", "docker/release.sh", "registry.example/you/sentisweep"], cwd=clone,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ENGINE": str(tmp_path / "engine"), "ENGINE_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    version = tomllib.loads((clone / "pyproject.toml").read_text())["project"]["version"]
    tag = f"{version}-{head[:7]}"
    calls = log.read_text().splitlines()
    builds = [c for c in calls if c.startswith("build ")]
    assert len(builds) == 2 and all(f"GIT_COMMIT={head} " in b and "--platform linux/amd64" in b for b in builds)
    assert f"org.opencontainers.image.revision={head} " in builds[0]
    assert [c for c in calls if c.startswith("push ")] == [f"push registry.example/you/sentisweep:{tag}",
                                                           f"push registry.example/you/sentisweep:{tag}-cpu"]
    committed = sorted(f"./{f}" for f in subprocess.run(["git", "ls-files"], cwd=clone, capture_output=True,
                                                          text=True).stdout.split())
    contexts = list(tmp_path.glob("engine.log.*"))  # each build's context, by its number of arguments
    assert len(contexts) == 2 and all(p.read_text().split() == committed for p in contexts)
    image = (clone / "k8s/components/image/kustomization.yaml").read_text()
    assert "newName: registry.example/you/sentisweep" in image and f"newTag: {tag}\n" in image
    assert f"newTag: {tag}-cpu" in (clone / "k8s/overlays/cpu-only/kustomization.yaml").read_text()
    assert 'git commit -m "deploy $(git rev-parse --short=7 HEAD)" k8s/components/image' in done.stdout


@pytest.mark.unit
def test_guide_commit_after_release_records_only_the_tags(tmp_path):
    """The guide's commit command, run as typed in a checkout where release.sh has just set the
    tags (its sed, on copies) beside another uncommitted change, which must stay out."""
    guide = (K8S / "README.md").read_text()
    (command,) = [line for line in guide.splitlines() if line.startswith('git commit -m "deploy')]
    release = (ROOT / "docker" / "release.sh").read_text()
    assert command in release  # the script's own hint is the same command
    for path in ("k8s/components/image/kustomization.yaml", "k8s/overlays/cpu-only/kustomization.yaml",
                 "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    for step in (["init", "-q"], ["add", "."], ["commit", "-qm", "start"]):
        subprocess.run(git + step, check=True)
    set_image = re.search(r"set_image\(\) \{.*?\n(.*?)\n\}", release, re.S).group(1)
    script = (f"name=ghcr.io/you/sentisweep\nset_image() {{\n{set_image}\n}}\n"
              "set_image k8s/components/image/kustomization.yaml 0.1.0-abcdef1\n"
              "set_image k8s/overlays/cpu-only/kustomization.yaml 0.1.0-abcdef1-cpu\n"
              "echo more >> README.md\n" + command.replace("git commit", "git -c user.name=t -c user.email=t@t commit"))
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    changed = subprocess.run(git + ["show", "--name-only", "--format=%s", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.split()
    head = subprocess.run(git + ["rev-parse", "--short=7", "HEAD~1"], capture_output=True, text=True).stdout.strip()
    assert changed == ["deploy", head, "k8s/components/image/kustomization.yaml",
                       "k8s/overlays/cpu-only/kustomization.yaml"]
    assert "newTag: 0.1.0-abcdef1-cpu" in (tmp_path / "k8s/overlays/cpu-only/kustomization.yaml").read_text()
    assert subprocess.run(git + ["status", "--porcelain"], capture_output=True, text=True).stdout.split() == [
        "M", "README.md"]


@pytest.mark.unit
def test_every_pod_is_hardened_labelled_and_sized():
    (policy,) = of_kind(rendered("overlays/cluster"), "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == APP_LABEL
    for overlay, obj in all_ray_objects():
        for template in pod_templates(obj):
            where = f"{overlay} {obj['kind']}"
            assert template["metadata"]["labels"] == APP_LABEL, where  # or the NetworkPolicy misses it
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, where
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert spec["serviceAccountName"] == "sentisweep", where  # credentials, pull secrets
            mounts_of = {v["name"]: v for v in spec.get("volumes", [])}
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["capabilities"]["drop"] == ["ALL"], where
                assert context["readOnlyRootFilesystem"] is True, where
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                for path in WRITABLE_PATHS:  # what the image writes at run time
                    assert path in mounts and "emptyDir" in mounts_of[mounts[path]], (where, path)
                resources = container["resources"]
                assert resources["requests"] == resources["limits"], where  # Ray is sized from the limits
                assert all(p["containerPort"] != 10001 for p in container.get("ports", [])), where
                env = {e["name"]: e for e in container.get("env", [])}
                gpus = int(resources["limits"].get("nvidia.com/gpu", 0))
                # a container that wants no GPU must not see the node's GPUs
                assert (env.get("NVIDIA_VISIBLE_DEVICES", {}).get("value") == "void") == (gpus == 0), where
                if container["name"] == "ray-job-submitter":
                    continue
                assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token",
                                                                         "optional": True}
                assert mounts["/tmp/ray"] == "ray-logs", where  # the name KubeRay shares with the autoscaler
                # Ray's object store takes 30% of memory; the shm volume must hold it and fit in memory
                shm = quantity_bytes(mounts_of[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"])
                memory = quantity_bytes(resources["limits"]["memory"])
                assert 0.3 * memory <= shm < memory, where


@pytest.mark.unit
def test_container_test_writes_only_where_the_pods_can():
    script = (ROOT / "docker" / "build_and_smoke.sh").read_text()
    assert "--read-only" in script and "--user 1000:100" in script
    assert sorted(re.findall(r"--tmpfs (\S+?):", script)) == sorted(WRITABLE_PATHS)


@pytest.mark.unit
def test_heads_schedule_nothing_and_stay_inside_the_cluster():
    for overlay, obj in all_ray_objects():
        cluster = ray_cluster_spec(obj)
        head = cluster["headGroupSpec"]
        assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["num-cpus"] == "0", overlay
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", overlay  # dashboard inside the cluster only
        assert cluster["authOptions"] == {"mode": "token"}, overlay
        # Only an autoscaled head gets a Kubernetes API token (the ServiceAccount gives none).
        automount = head["template"]["spec"].get("automountServiceAccountToken", False)
        assert automount == bool(cluster.get("enableInTreeAutoscaling")), overlay
    (account,) = of_kind(rendered("overlays/cluster"), "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


@pytest.mark.unit
@pytest.mark.parametrize("overlay", JOB_OVERLAYS)
def test_rayjob_frees_its_gpus_first_and_fails_when_it_cannot_start(overlay):
    (job,) = of_kind(rendered(overlay), "RayJob")
    spec = job["spec"]
    # KubeRay refuses deletionRules beside shutdownAfterJobFinishes or a global TTL.
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
    rules = spec["deletionStrategy"]["deletionRules"]
    conditions = {tuple(sorted((k, v) for k, v in r["condition"].items() if k != "ttlSeconds")) for r in rules}
    assert len(conditions) == 3  # succeeded, failed, never ran
    for condition in conditions:
        ttl = {r["policy"]: r["condition"]["ttlSeconds"] for r in rules
               if tuple(sorted((k, v) for k, v in r["condition"].items() if k != "ttlSeconds")) == condition}
        assert ttl["DeleteWorkers"] == 0 and ttl["DeleteCluster"] > 0, condition  # GPUs at once, head for logs
        assert "DeleteSelf" not in ttl  # the RayJob's status stays
    assert spec["preRunningDeadlineSeconds"] > 0 and spec["activeDeadlineSeconds"] > spec["preRunningDeadlineSeconds"]
    assert "--resume" in spec["entrypoint"] + _script_text(spec["entrypoint"])  # a re-applied RayJob continues
    assert "runtimeEnvYAML" not in spec  # nothing to upload: the code is in the image


def _script_text(entrypoint: str) -> str:
    words = shlex.split(entrypoint)
    return Path(words[1].replace(IMAGE_DIR, str(ROOT))).read_text() if words[0] == "bash" else ""


def _without_autoscaling(cluster: dict) -> dict:
    cluster = copy.deepcopy(cluster)
    for key in ("enableInTreeAutoscaling", "autoscalerOptions"):
        cluster.pop(key, None)
    cluster["headGroupSpec"]["template"]["spec"].pop("automountServiceAccountToken", None)
    for group in cluster["workerGroupSpecs"]:
        for key in ("replicas", "minReplicas", "maxReplicas"):
            group.pop(key)
    return cluster


@pytest.mark.unit
def test_job_clusters_are_the_interactive_cluster_without_autoscaling():
    """The pods are written twice (k8s/overlays/cluster/raycluster.yaml and the job-cluster
    component, for RayCluster's and RayJob's different nesting): they must not drift."""
    (interactive,) = of_kind(rendered("overlays/cluster"), "RayCluster")
    for overlay in JOB_OVERLAYS:
        (job,) = of_kind(rendered(overlay), "RayJob")
        assert _without_autoscaling(job["spec"]["rayClusterSpec"]) == _without_autoscaling(interactive["spec"]), overlay


def total_memory_and_gpus(cluster: dict) -> tuple[float, int]:
    """The most the cluster can hold at once: the head, the autoscaler and every worker group
    at its maximum."""
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    memory = quantity_bytes(head["memory"])
    autoscaler_limits = cluster.get("autoscalerOptions", {}).get("resources", {}).get("limits", {})
    memory += quantity_bytes(autoscaler_limits.get("memory", 0))
    gpus = 0
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        memory += group["maxReplicas"] * quantity_bytes(limits["memory"])
        gpus += group["maxReplicas"] * int(limits.get("nvidia.com/gpu", 0))
    return memory, gpus


SPOT_LABELS = {"cloud.google.com/gke-spot", "cloud.google.com/gke-preemptible", "eks.amazonaws.com/capacityType",
               "karpenter.sh/capacity-type", "kubernetes.azure.com/scalesetpriority"}


def avoided_node_labels(template: dict) -> set[str]:
    """The node labels a pod template refuses (required NotIn), in every one of its node terms."""
    terms = (template["spec"].get("affinity", {}).get("nodeAffinity", {})
             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
    sets = [{e["key"] for e in term.get("matchExpressions", []) if e["operator"] == "NotIn"} for term in terms]
    return set.intersection(*sets) if sets else set()


@pytest.mark.unit
def test_heads_and_submitters_stay_off_spot_nodes_and_no_drain_evicts_a_head():
    for overlay, obj in all_ray_objects():
        cluster = ray_cluster_spec(obj)
        assert avoided_node_labels(cluster["headGroupSpec"]["template"]) == SPOT_LABELS, overlay
        if obj["kind"] == "RayJob":
            assert avoided_node_labels(obj["spec"]["submitterPodTemplate"]) == SPOT_LABELS, overlay
        for group in cluster["workerGroupSpecs"]:  # trials on a lost node are retried: spot is fine
            assert not avoided_node_labels(group["template"]), overlay
    for overlay in OVERLAYS:
        (budget,) = of_kind(rendered(overlay), "PodDisruptionBudget")
        assert budget["spec"] == {"maxUnavailable": 0, "selector": {"matchLabels": {**APP_LABEL,
                                                                                   "ray.io/node-type": "head"}}}


@pytest.mark.unit
@pytest.mark.parametrize("overlay", JOB_OVERLAYS)
def test_rayjob_is_not_retried_whole_and_outlives_a_lost_submitter(overlay):
    (job,) = of_kind(rendered(overlay), "RayJob")
    assert job["spec"]["backoffLimit"] == 0  # a retry is a new cluster of 4 GPU workers; bad input repeats
    assert job["spec"]["submitterConfig"]["backoffLimit"] >= 10


@pytest.mark.unit
def test_network_policy_admits_prometheus_on_the_metrics_port_only():
    (policy,) = of_kind(rendered("overlays/cluster"), "NetworkPolicy")
    scrape = [rule for rule in policy["spec"]["ingress"]
              if any(p.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "prometheus"}
                     for p in rule["from"])]
    assert [rule["ports"] for rule in scrape] == [[{"port": 8080, "protocol": "TCP"}]]


@pytest.mark.unit
def test_single_gpu_overlay_starts_only_what_one_gpu_and_a_workstation_hold():
    objects = rendered("overlays/single-gpu")
    assert not of_kind(objects, "RayJob")  # each RayJob brings 4 GPU workers of its own
    (cluster,) = of_kind(objects, "RayCluster")
    memory, gpus = total_memory_and_gpus(cluster["spec"])
    assert gpus == 1
    assert memory <= 32 * 2**30, memory / 2**30
    (claim,) = of_kind(rendered("storage-one-node"), "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # one node: what local-path offers
    # and it changed what it meant to: the cluster overlay holds 4 GPUs
    (full,) = of_kind(rendered("overlays/cluster"), "RayCluster")
    assert total_memory_and_gpus(full["spec"])[1] == 4


@pytest.mark.unit
def test_cpu_only_overlay_asks_for_no_gpu_and_fits_a_laptop():
    objects = rendered("overlays/cpu-only")
    (cluster,) = of_kind(objects, "RayCluster")
    assert "nvidia.com/gpu" not in yaml.safe_dump(objects)  # no request, no toleration
    memory, gpus = total_memory_and_gpus(cluster["spec"])
    assert gpus == 0 and memory <= 12 * 2**30, memory / 2**30
    head_container = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    requested = cpus(head_container["resources"]["limits"]["cpu"])
    requested += cpus(cluster["spec"]["autoscalerOptions"]["resources"]["limits"]["cpu"])
    requested += sum(g["maxReplicas"] * cpus(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
                     for g in cluster["spec"]["workerGroupSpecs"])
    assert requested <= 4


@pytest.mark.unit
@pytest.mark.parametrize("overlay, cpus_per_trial, gpus_per_trial, grows", [
    ("overlays/cluster", 8, 1, "gpu"),
    ("overlays/single-gpu", 6, 1, "gpu"),
    ("overlays/single-gpu", 8, 1, None),  # its one worker has 6 CPUs
    ("overlays/cpu-only", 1, 0, "cpu"),  # smoke.yaml: CPU-only demand waits too
    ("overlays/cpu-only", 1, 1, None),
])
def test_a_driver_on_an_autoscaled_overlay_reads_what_it_can_grow_to(overlay, cpus_per_trial, gpus_per_trial,
                                                                       grows, monkeypatch, tmp_path, capsys):
    """The sweep's driver on the head of an overlay's cluster, which starts with no worker: it reads
    the RayCluster from the API server (as the autoscaler beside it does, through Ray's own
    converter) and waits for the node types that fit a trial, or refuses at once if none can."""
    import ray._private.state
    from ray.autoscaler._private.kuberay.node_provider import KubernetesHttpApiClient

    from ray_session import autoscale
    from sentisweep.exit_codes import BadInput

    (ray_cluster,) = of_kind(rendered(overlay), "RayCluster")
    ray_cluster["metadata"]["namespace"] = "team-a"
    (tmp_path / "token").write_text("a token")
    (tmp_path / "namespace").write_text("team-a\n")
    monkeypatch.setattr(autoscale, "SERVICE_ACCOUNT", tmp_path)  # what the head pod has mounted
    monkeypatch.setenv("RAY_CLUSTER_NAME", ray_cluster["metadata"]["name"])  # KubeRay sets it in Ray's containers
    fetched = []

    def api_server(client, path):
        fetched.append((client._namespace, path))
        return ray_cluster

    monkeypatch.setattr(KubernetesHttpApiClient, "get", api_server)
    monkeypatch.setattr(ray._private.state.state, "get_cluster_config", lambda: None)  # Ray 2.60's OSS autoscaler
    monkeypatch.setattr(autoscale, "nodes_now", lambda: [{"CPU": 0.0, "memory": 2.0**33}])  # the head alone
    monkeypatch.setattr(autoscale, "autoscaler_report", lambda: {})
    asked, waited = [], []
    monkeypatch.setattr("ray.autoscaler.sdk.request_resources", lambda bundles: asked.append(bundles))
    monkeypatch.setattr("ray.is_initialized", lambda: True)  # connected to the cluster, as the driver is
    monkeypatch.setattr(autoscale, "_wait_for_node", lambda bundle, minutes: waited.append(minutes))
    if grows:
        autoscale.make_room(cpus_per_trial, gpus_per_trial, 3, None)
        bundle = {"CPU": cpus_per_trial, **({"GPU": gpus_per_trial} if gpus_per_trial else {})}
        assert asked == [[bundle] * 3, []]  # asked, then withdrawn once a node was up
        assert waited == [autoscale.DEFAULT_WAIT_MINUTES]
        assert f"(node types that fit: {grows})" in capsys.readouterr().out
    else:
        with pytest.raises(BadInput, match="none its autoscaler can add does") as refused:
            autoscale.make_room(cpus_per_trial, gpus_per_trial, 3, None)
        assert "at most 1" in str(refused.value) and asked == [] and waited == []
    assert fetched == [("team-a", f"rayclusters/{ray_cluster['metadata']['name']}")]


# the node shapes the node-pool components are for: (selector label, value), allocatable CPUs and GiB
NODE_POOLS = {"gke-l4": (("cloud.google.com/gke-accelerator", "nvidia-l4"), 7.9, 26),
              "eks-g5": (("node.kubernetes.io/instance-type", "g5.2xlarge"), 7.9, 30)}


@pytest.mark.unit
@pytest.mark.parametrize("pool", sorted(NODE_POOLS))
@pytest.mark.parametrize("overlay", ["overlays/cluster", "overlays/ablation"])  # a RayCluster, a RayJob
def test_node_pool_component_puts_workers_on_its_gpu_nodes_and_they_fit(pool, overlay, tmp_path):
    """An overlay with a node-pool component, as the guide has a user write it: the workers go to
    that pool's GPU nodes, fit one per node beside its DaemonSets (a core and 2 GiB left), and
    every object still validates."""
    guide = (K8S / "README.md").read_text()
    (snippet,) = re.findall(r"```yaml\n(# k8s/my-gpus/kustomization.yaml[^\n]*\n.*?)```", guide, flags=re.S)
    mine = tmp_path / "my-gpus"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(
        snippet.replace("../overlays/ablation", os.path.relpath(K8S / overlay, mine))
        .replace("../components/gke-l4", os.path.relpath(K8S / "components" / pool, mine)))
    objects = list(_render(str(mine)))
    (label, value), allocatable_cpus, allocatable_gib = NODE_POOLS[pool]
    (cluster,) = [ray_cluster_spec(o) for o in objects if o["apiVersion"] == "ray.io/v1"]
    for group in cluster["workerGroupSpecs"]:
        spec = group["template"]["spec"]
        assert spec["nodeSelector"] == {label: value}
        limits = spec["containers"][0]["resources"]["limits"]
        assert cpus(limits["cpu"]) <= allocatable_cpus - 1 and limits["nvidia.com/gpu"] == "1"
        assert quantity_bytes(limits["memory"]) <= (allocatable_gib - 2) * 2**30
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
        assert quantity_bytes(shm) >= 0.3 * quantity_bytes(limits["memory"])  # Ray's object store
    assert "nodeSelector" not in cluster["headGroupSpec"]["template"]["spec"]  # the head needs no GPU node
    for obj in objects:
        assert schema_errors(obj) == [], f"{pool} {overlay}: {obj['kind']}"


@pytest.mark.unit
def test_fetch_pod_reaches_the_results_and_nothing_else():
    """After a RayJob no pod is left to copy from: the fetch pod mounts the results volume, runs
    the released image, and holds no token, no GPU and no Ray label (the NetworkPolicy's)."""
    (pod,) = rendered("fetch")
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == f"{IMAGE_NAME}:{image_tag()}"
    assert [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v] == [
        "sentisweep-shared"]
    assert spec["automountServiceAccountToken"] is False and "nvidia.com/gpu" not in str(container["resources"])
    assert pod["metadata"]["labels"] != APP_LABEL and spec["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["readOnlyRootFilesystem"] and spec["activeDeadlineSeconds"] > 0


@pytest.mark.unit
def test_storage_class_patch_in_the_guide_renders(tmp_path):
    """The guide's overlay for naming a storage class, rendered as a user would write it."""
    guide = (K8S / "README.md").read_text()
    (snippet,) = re.findall(r"```yaml\n(# k8s/my-storage/kustomization.yaml[^\n]*\n.*?)```", guide, flags=re.S)
    overlay = tmp_path / "my-storage"
    overlay.mkdir()
    relative = os.path.relpath(K8S / "storage", overlay)
    (overlay / "kustomization.yaml").write_text(snippet.replace("../storage", relative))
    (claim,) = of_kind(list(_render(str(overlay))), "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "efs-sc"


@pytest.mark.unit
def test_no_overlay_holds_the_results_volume_and_every_claim_is_the_storage_one():
    """`kubectl delete -k` of any overlay must leave the results: the volume is k8s/storage's
    alone (or storage-one-node's), and every pod mounts that claim."""
    claims = {c["metadata"]["name"] for k in ("storage", "storage-one-node")
              for c in of_kind(rendered(k), "PersistentVolumeClaim")}
    assert claims == {"sentisweep-shared"}
    for overlay in OVERLAYS:
        objects = rendered(overlay)
        assert not of_kind(objects, "PersistentVolumeClaim"), overlay
        mounted = {v["persistentVolumeClaim"]["claimName"] for obj in objects if obj["apiVersion"] == "ray.io/v1"
                   for t in pod_templates(obj)
                   for v in t["spec"].get("volumes", []) if "persistentVolumeClaim" in v}
        assert mounted == claims, overlay
    guide = (K8S / "README.md").read_text()
    teardown = guide.split("## Teardown", 1)[1].split("\n## ", 1)[0]
    assert "kubectl delete -k k8s/storage" in teardown and "kubectl apply -k k8s/storage" in guide


# --- RayJob entrypoints ---------------------------------------------------------------------

def rayjobs() -> list[tuple[str, dict]]:
    return [(overlay, job) for overlay in JOB_OVERLAYS for job in of_kind(rendered(overlay), "RayJob")]


def _entrypoint_commands() -> list[tuple[str, list[str]]]:
    """Each RayJob's entrypoint as the commands it runs: itself, or the python lines of the
    script in the image it names (with its storage argument). Read from the job files, not
    rendered: parametrization happens at collection, before kubectl can be checked."""
    commands = []
    for overlay in JOB_OVERLAYS:
        job = yaml.safe_load((K8S / overlay / "rayjob.yaml").read_text())
        command = shlex.split(job["spec"]["entrypoint"].replace(IMAGE_DIR, str(ROOT)))
        if command[0] == "bash":
            script = Path(command[1]).read_text().replace('"$storage"', command[2])
            commands += [(overlay, ["python", str(ROOT / line.split()[1]), *line.split()[2:]])
                         for line in script.splitlines() if line.startswith("python ")]
        else:
            commands.append((overlay, command))
    return commands


def kuberay_submitter_words(entrypoint: str) -> list[str]:
    """The words bash makes of the submitter's command as KubeRay composes it: the entrypoint
    pasted unquoted after `ray job submit ... --` (ray-operator's GetK8sJobCommand)."""
    command = f"ray job submit --address http://head-svc:8265 --no-wait --submission-id job-1 -- {entrypoint}"
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


@pytest.mark.unit
def test_every_entrypoint_reaches_ray_job_submit_whole():
    """Nothing of an entrypoint may run in the submitter pod: no shell operator splits it, and
    every word of it reaches `ray job submit` as that command's arguments, quoting intact."""
    jobs = rayjobs()
    assert len(jobs) == 3
    for _, job in jobs:
        entrypoint = job["spec"]["entrypoint"]
        words = kuberay_submitter_words(entrypoint)
        assert not set(words) & {"&&", "||", ";", "|", "&", ">", "<", ">>"}, entrypoint
        assert words[words.index("--") + 1:] == shlex.split(entrypoint)
    # the check can fail: the old embed-xgb entrypoint ran its second stage in the submitter
    assert "&&" in kuberay_submitter_words("python a.py && python b.py")


@pytest.mark.integration  # a dry run of each entrypoint in a subprocess
@pytest.mark.parametrize("name,command", _entrypoint_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_entrypoint_script_exists_and_config_passes_dry_run(name, command, tmp_path):
    assert command[0] == "python" and Path(command[1]).is_file(), command
    config = Path(command[command.index("--config") + 1])
    assert config.is_file(), config
    args = [a for a in command[2:] if a != "--resume"]
    args[args.index("--storage") + 1] = str(tmp_path)
    done = subprocess.run([sys.executable, command[1], *args, "--dry-run"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
