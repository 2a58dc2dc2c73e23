"""The container and cluster files, checked offline (no Docker engine or Kubernetes here):
hadolint on the Dockerfile; every manifest against the KubeRay CRD schemas or the core
Kubernetes schemas; entrypoints that name real scripts and configs that pass --dry-run;
one image tag everywhere; the single-GPU overlay's patches on the paths they name."""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
SCHEMAS = ROOT.parent / "shared" / "schemas" / "kuberay"
IMAGE_DIR = "/home/ray/sentisweep"  # where the Dockerfile puts the code
MANIFESTS = sorted(K8S.glob("*.yaml")) + sorted((K8S / "jobs").glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_objects() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in MANIFESTS for doc in documents(path)]


def image_tag() -> str:
    kustomization = yaml.safe_load((K8S / "Kustomization").read_text())
    (image,) = kustomization["images"]
    return f"{image['name']}:{image['newTag']}"


@pytest.mark.unit
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
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
def test_pinned_requirements_cover_and_satisfy_pyproject():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "docker" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            pins[requirement.name.lower()] = next(iter(requirement.specifier)).version
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = requirement.name.lower()
        if name == "torch":
            assert "torch==2.13.0" in (ROOT / "Dockerfile").read_text()
            continue
        assert name in pins, f"{name} is not pinned in docker/requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {requirement.specifier}"


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


def crd_validator(kind: str):
    import jsonschema

    if not SCHEMAS.is_dir():
        pytest.skip(f"{SCHEMAS} not here (the KubeRay CRDs ship in ../shared)")
    crd = yaml.safe_load((SCHEMAS / f"ray.io_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_closed(version["schema"]["openAPIV3Schema"]))


def schema_errors(obj: dict) -> list[str]:
    if obj["apiVersion"] == "ray.io/v1":
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(obj["kind"]).iter_errors(obj)]
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    except kubernetes_validate.ValidationError as err:
        return [str(err)]
    return []


@pytest.mark.unit
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_its_schema(path):
    for obj in documents(path):
        assert schema_errors(obj) == [], path


@pytest.mark.unit
def test_schema_check_catches_a_misspelt_field():
    _, cluster = next((p, o) for p, o in all_objects() if o["kind"] == "RayCluster")
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3  # should be maxReplicas
    assert any("maxReplica" in e for e in schema_errors(broken))


def pod_specs(obj: dict) -> list[dict]:
    cluster = obj["spec"].get("rayClusterSpec", obj["spec"])
    specs = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    if "submitterPodTemplate" in obj["spec"]:
        specs.append(obj["spec"]["submitterPodTemplate"]["spec"])
    return specs


@pytest.mark.unit
def test_security_resources_gpus_and_head_placement():
    for path, obj in all_objects():
        if obj["apiVersion"] != "ray.io/v1":
            continue
        cluster = obj["spec"].get("rayClusterSpec", obj["spec"])
        head = cluster["headGroupSpec"]
        assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["num-cpus"] == "0", path
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", path  # dashboard inside the cluster only
        assert cluster.get("authOptions", {}).get("mode") == "token", path
        for spec in pod_specs(obj):
            assert spec["securityContext"]["runAsNonRoot"] is True, path
            for container in spec["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False, path
                assert container["resources"]["requests"] and container["resources"]["limits"], path
        for group in cluster["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            resources = container["resources"]
            assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
            assert any(t["key"] == "nvidia.com/gpu" for t in group["template"]["spec"]["tolerations"])
            assert group["minReplicas"] <= group["maxReplicas"]
            env = {e["name"]: e for e in container["env"]}
            assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
        if obj["kind"] == "RayJob":
            spec = obj["spec"]
            assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
            assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 1
            assert "runtimeEnvYAML" not in spec  # nothing to upload: the code is in the image


@pytest.mark.unit
def test_one_image_tag_everywhere():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tag = image_tag()
    assert tag.endswith(f":{version}")
    for path, obj in all_objects():
        if obj["apiVersion"] == "ray.io/v1":
            for spec in pod_specs(obj):
                assert all(c["image"] == tag for c in spec["containers"]), path
    assert f"docker build -t {tag} ." in (ROOT / "Dockerfile").read_text()
    assert f"docker build -t {tag} ." in (K8S / "README.md").read_text()
    assert yaml.safe_load((K8S / "jobs" / "Kustomization").read_text())["images"][0]["newTag"] == tag.split(":")[-1]


def entrypoint_commands() -> list[tuple[str, list[str]]]:
    """Each RayJob's entrypoint as the commands it runs: itself, or the python lines of the
    script in the image it names (with its storage argument)."""
    commands = []
    for path, obj in all_objects():
        if obj["kind"] == "RayJob":
            command = shlex.split(obj["spec"]["entrypoint"].replace(IMAGE_DIR, str(ROOT)))
            if command[0] == "bash":
                script = Path(command[1]).read_text().replace('"$storage"', command[2])
                commands += [(path.name, ["python", str(ROOT / line.split()[1]), *line.split()[2:]])
                             for line in script.splitlines() if line.startswith("python ")]
            else:
                commands.append((path.name, command))
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
    jobs = [obj for _, obj in all_objects() if obj["kind"] == "RayJob"]
    assert len(jobs) == 3
    for job in jobs:
        entrypoint = job["spec"]["entrypoint"]
        words = kuberay_submitter_words(entrypoint)
        assert not set(words) & {"&&", "||", ";", "|", "&", ">", "<", ">>"}, entrypoint
        assert words[words.index("--") + 1:] == shlex.split(entrypoint)
    # the check can fail: the old embed-xgb entrypoint ran its second stage in the submitter
    assert "&&" in kuberay_submitter_words("python a.py && python b.py")


@pytest.mark.integration  # a dry run of each entrypoint in a subprocess
@pytest.mark.parametrize("name,command", entrypoint_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_entrypoint_script_exists_and_config_passes_dry_run(name, command, tmp_path):
    assert command[0] == "python" and Path(command[1]).is_file(), command
    config = Path(command[command.index("--config") + 1])
    assert config.is_file(), config
    args = [a for a in command[2:] if a != "--resume"]
    args[args.index("--storage") + 1] = str(tmp_path)
    done = subprocess.run([sys.executable, command[1], *args, "--dry-run"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _replace(obj: dict, path: str, value) -> None:
    *parents, last = [int(p) if p.isdigit() else p for p in path.strip("/").split("/")]
    for part in parents:
        obj = obj[part]
    assert last in obj if isinstance(obj, dict) else last < len(obj), f"patch path {path} does not exist"
    obj[last] = value


@pytest.mark.unit
def test_single_gpu_overlay_patches_existing_fields_and_stays_valid():
    overlay = yaml.safe_load((K8S / "overlays" / "single-gpu" / "kustomization.yaml").read_text())
    assert {"../..", "../../jobs"} == set(overlay["resources"])
    patched = 0
    for path, obj in all_objects():
        for patch in overlay["patches"]:
            target = patch["target"]
            if obj["kind"] != target["kind"] or target.get("name", obj["metadata"]["name"]) != obj["metadata"]["name"]:
                continue
            result = copy.deepcopy(obj)
            for op in yaml.safe_load(patch["patch"]):
                assert op["op"] == "replace"
                _replace(result, op["path"], op["value"])
            cluster = result["spec"].get("rayClusterSpec", result["spec"])
            assert cluster["workerGroupSpecs"][0]["maxReplicas"] == 1
            assert schema_errors(result) == [], path
            patched += 1
    assert patched == 4  # the interactive cluster and the three RayJobs
