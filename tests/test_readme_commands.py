"""Every command in README.md and k8s/README.md is accounted for (issue 35): run by a named test
(with smoke-size substitutes where the real one takes an hour or a GPU), run by .ci/run, or
listed with the reason it cannot run here. A new command that is none of these fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "k8s/README.md")
NO_CLUSTER = "not here: needs a Kubernetes cluster with the KubeRay operator (the manifests are rendered and " \
             "schema-checked by tests/test_deploy.py)"
NO_REGISTRY = "not here: pushes to a container registry (none is reachable); the image is built and run by " \
              "tests/test_container.py::test_image_builds_and_runs_the_smoke_sweep_as_uid_1000"
GPU_CHECK_ON_CPU = ("tests/test_gpu_standin.py::"
                    "test_the_gpu_check_passes_with_the_gpu_machines_versions_and_nothing_it_lacks")
NO_GPU = f"not here: needs a CUDA GPU ({GPU_CHECK_ON_CPU} runs the same checks on CPU)"
USER_PATH = "tests/test_user_path.py::test_the_tuned_sweep_without_storage_lands_in_results_and_every_cell_chooses"
SEARCH_PATH = "tests/test_user_path.py::test_the_search_with_a_relative_storage_lands_under_this_directory"

# command (comments dropped, continuations joined, spaces collapsed) -> who runs it, or why nothing can
COMMANDS = {
    # README.md
    "python3 -m venv .venv && source .venv/bin/activate": "ci: .ci/run",
    "pip install torch==2.13.0": "ci: .ci/run",
    'pip install -e ".[offline,dev,demo]"': "ci: .ci/run",
    "python sweeps/ablation.py": USER_PATH + " (tuned_smoke.yaml for quick.yaml: the same path, 1 minute not 30)",
    "python -m pytest": "ci: .ci/run",
    "python -m pytest --all-tiers -n 2 --dist worksteal": "ci: .ci/run",
    "python -m analysis report results/quick --out reports/quick": USER_PATH,
    'python -m sentisweep.predict --results results/quick "A wonderful film."': USER_PATH,
    "python -m sentisweep.train --model minilm-l6 --method lora --data imdb --train-size 2000 --eval-size 500 "
    "--test-size 2000 --max-length 128 --epochs 1 --lr 5e-4 --out runs/minilm-lora":
        "tests/test_minilm_imdb.py::test_minilm_lora_learns_imdb",
    "python sweeps/ablation.py --config sweeps/configs/smoke.yaml --dry-run":
        "tests/test_sweep_config.py::test_dry_run_prints_the_matrix_and_starts_nothing",
    "python sweeps/ablation.py --resume":
        "tests/test_ablation_ray.py::test_interrupt_then_resume_runs_only_unfinished_trials",
    "python sweeps/search.py --config sweeps/configs/lora_search_quick.yaml":
        SEARCH_PATH + " (search_smoke.yaml for lora_search_quick.yaml)",
    "python sweeps/search.py --config sweeps/configs/cpu_vs_tfidf_search.yaml":
        SEARCH_PATH + " (search_smoke.yaml for cpu_vs_tfidf_search.yaml, 24-34 minutes)",
    "python -m analysis report results/cpu-vs-tfidf --out reports/cpu-vs-tfidf":
        "tests/test_search_ray.py::test_search_with_asha_saves_study_and_best_config",
    "python -m sentisweep.train --config results/cpu-vs-tfidf/best_trial.yaml --out runs/best": SEARCH_PATH,
    "python sweeps/ablation.py --config sweeps/configs/distilbert_vs_qwen3.yaml --dry-run --gpu-memory 24":
        "tests/test_sweep_config.py::test_a_trial_too_large_for_its_gpu_is_refused_before_ray",
    "python benchmarks/gpu_check.py": NO_GPU,
    "python benchmarks/gpu_check.py --real-shaped none": NO_GPU,
    "python benchmarks/gpu_check.py --device cpu": GPU_CHECK_ON_CPU,
    "RAY_AUTH_MODE=token ray start --head --num-cpus 2":
        "tests/test_job_submit.py::test_tuned_sweep_under_ray_job_submit_lands_where_asked",
    "RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python "
    "sweeps/ablation.py --config sweeps/configs/smoke.yaml --storage /shared/results":
        "tests/test_job_submit.py::test_tuned_sweep_under_ray_job_submit_lands_where_asked",
    "python ray_jobs/embed_xgb.py --config sweeps/configs/embed_xgb_quick.yaml":
        "tests/test_embed_xgb_ray.py::test_driver_pretrained_and_finetuned_rows_then_resume (embed_xgb_smoke.yaml)",
    "python ray_jobs/embed.py --model minilm-l6 --data ../shared/data/imdb --test-size 1000 --out results/emb/minilm":
        "tests/test_user_path.py::"
        "test_the_embedding_and_xgboost_jobs_with_relative_folders_land_under_this_directory (--smoke-test)",
    "python ray_jobs/xgboost_stage.py --embeddings results/emb/minilm --workers 2 --name embed-xgb":
        "tests/test_user_path.py::"
        "test_the_embedding_and_xgboost_jobs_with_relative_folders_land_under_this_directory",
    'python -m sentisweep.predict --results results/quick "A moving, beautifully shot film." '
    '"Two hours I will never get back."': "tests/test_predict.py::test_predict_cli_texts_and_batch_file",
    "python -m sentisweep.predict --results results/quick --input reviews.csv --output predictions.parquet":
        "tests/test_predict.py::test_predict_cli_texts_and_batch_file",
    "python -m sentisweep.export --results results/quick --select best --out exported/quick-best": USER_PATH,
    "python -m sentisweep.demo --results results/quick --top-k 3":
        "tests/test_predict.py::test_demo_in_a_headless_browser",
    "python -m analysis compare results/quick lora full": USER_PATH + " (lora-attention for lora)",
    # k8s/README.md
    "bash docker/release.sh ghcr.io/you/sentisweep": NO_REGISTRY,
    'git commit -m "deploy $(git rev-parse --short=7 HEAD)" k8s/components/image k8s/overlays/cpu-only':
        "tests/test_deploy.py::test_guide_commit_after_release_records_only_the_tags",
    "kubectl create secret docker-registry regcred --docker-server=ghcr.io --docker-username=... "
    "--docker-password=...": NO_CLUSTER,
    "kubectl patch serviceaccount sentisweep -p '{\"imagePullSecrets\": [{\"name\": \"regcred\"}]}'": NO_CLUSTER,
    "helm repo add kuberay https://ray-project.github.io/kuberay-helm/": NO_CLUSTER,
    "helm install kuberay-operator kuberay/kuberay-operator --version 1.7.0": NO_CLUSTER,
    "kubectl create secret generic hf-token --from-literal=token=hf_...": NO_CLUSTER,
    "python k8s/preflight.py k8s/overlays/cluster": "tests/test_preflight.py::test_a_ready_cluster_passes_every_check "
    "(a cluster described by kubectl's answers)",
    "kubectl apply -k k8s/storage": NO_CLUSTER,
    "kubectl apply -k k8s/storage-one-node": NO_CLUSTER,
    "kubectl apply -k k8s/overlays/cluster": NO_CLUSTER,
    "kubectl get raycluster sentisweep -w": NO_CLUSTER,
    "kubectl annotate serviceaccount sentisweep "
    "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/sentisweep": NO_CLUSTER,
    "kubectl apply -k k8s/overlays/ablation": NO_CLUSTER,
    "kubectl get rayjob sentisweep-peft-ablation -w": NO_CLUSTER,
    "kubectl logs -f -l job-name=sentisweep-peft-ablation": NO_CLUSTER,
    "kubectl port-forward svc/sentisweep-head-svc 8265:8265 &": NO_CLUSTER,
    "export RAY_AUTH_MODE=token": NO_CLUSTER,
    "export RAY_AUTH_TOKEN=$(kubectl get secret sentisweep -o jsonpath='{.data.auth_token}' | base64 -d)": NO_CLUSTER,
    "ray job submit --address http://127.0.0.1:8265 -- python /home/ray/sentisweep/sweeps/ablation.py --config "
    "/home/ray/sentisweep/sweeps/configs/imdb_peft_ablation.yaml --storage /mnt/shared/results":
        NO_CLUSTER + "; its config's dry run: "
                     "tests/test_deploy.py::test_entrypoint_script_exists_and_config_passes_dry_run; at smoke size "
                     "against Ray's fake autoscaler on a head of 0 CPUs: tests/test_fake_autoscaler.py::"
                     "test_the_guides_submit_scales_up_runs_and_the_cluster_scales_back_down",
    "ray job logs --address http://127.0.0.1:8265 -f <submission id>": NO_CLUSTER,
    "kubectl apply -k k8s/overlays/single-gpu": NO_CLUSTER,
    "kubectl apply -k k8s/overlays/cpu-only": NO_CLUSTER,
    "HEAD=$(kubectl get pod -l ray.io/cluster=sentisweep,ray.io/node-type=head -o name)": NO_CLUSTER,
    "kubectl exec $HEAD -- python -m analysis report /mnt/shared/results/imdb-peft-ablation "
    "--out /mnt/shared/reports/peft": NO_CLUSTER,
    "kubectl cp ${HEAD#pod/}:/mnt/shared/reports/peft ./report-peft": NO_CLUSTER,
    "kubectl cp ${HEAD#pod/}:/mnt/shared/results/imdb-peft-ablation/results.parquet ./results.parquet": NO_CLUSTER,
    "python -c \"import pandas as pd; t = pd.read_parquet('results.parquet'); print((t.groupby(['model', "
    "'method'])['peak_memory_bytes'].max() / 2**30).round(1))\"": NO_CLUSTER,
    "kubectl delete rayjob sentisweep-peft-ablation && kubectl apply -k k8s/overlays/ablation": NO_CLUSTER,
    "kubectl delete rayjob sentisweep-peft-ablation": NO_CLUSTER,
    "kubectl delete raycluster sentisweep": NO_CLUSTER,
    "kubectl delete -k k8s/overlays/cluster": NO_CLUSTER,
    "kubectl delete -k k8s/storage": NO_CLUSTER,
    "kubectl apply -k k8s/fetch": NO_CLUSTER,
    "kubectl wait --for=condition=Ready pod/sentisweep-fetch": NO_CLUSTER,
    "kubectl exec sentisweep-fetch -- python -m analysis report /mnt/shared/results/imdb-peft-ablation "
    "--out /mnt/shared/reports/peft": NO_CLUSTER,
    "kubectl cp sentisweep-fetch:/mnt/shared/reports/peft ./report-peft": NO_CLUSTER,
    "kubectl delete -k k8s/fetch": NO_CLUSTER,
    "CLUSTER=$(kubectl get rayjob sentisweep-peft-ablation -o jsonpath='{.status.rayClusterName}')": NO_CLUSTER,
    "kubectl port-forward svc/$CLUSTER-head-svc 8265:8265 &": NO_CLUSTER,
    "export RAY_AUTH_TOKEN=$(kubectl get secret $CLUSTER -o jsonpath='{.data.auth_token}' | base64 -d)": NO_CLUSTER,
    "ray job list --address http://127.0.0.1:8265": NO_CLUSTER,
    "kubectl logs -f -l ray.io/cluster=$CLUSTER,ray.io/node-type=head -c ray-head": NO_CLUSTER,
}


def documented_commands() -> dict[str, str]:
    """Every shell command in a fenced bash block of the docs -> the file it is in."""
    found = {}
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", (ROOT / doc).read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                command = re.sub(r"\s+#\s.*$", "", line).strip()  # a comment after the command, not ${X#y}
                if command and not command.startswith("#"):
                    found[" ".join(command.split())] = doc
    return found


def test_every_documented_command_is_run_by_a_test_or_says_why_not():
    missing = {command: doc for command, doc in documented_commands().items() if command not in COMMANDS}
    assert not missing, ("commands in the docs that no test runs and no reason excuses; add each to COMMANDS with "
                         "the test that runs it or why it cannot run here:\n" + "\n".join(missing))


def test_every_entry_is_still_documented_and_names_a_test_that_exists():
    documented = documented_commands()
    assert not set(COMMANDS) - set(documented), f"no longer in the docs: {set(COMMANDS) - set(documented)}"
    for command, who in COMMANDS.items():
        assert who.startswith(("tests/", "ci: .ci/run", "not here: ")), (command, who)
        if who.startswith("ci: "):  # .ci/run says the same, as `python -m pip install --quiet ...`
            ci = (ROOT / ".ci" / "run").read_text().replace("python -m pip", "pip").replace("--quiet ", "")
            assert command.split(" && ")[0] in ci, command
        for test in re.findall(r"tests/(\w+\.py)::(\w+)", who):
            assert f"def {test[1]}(" in (ROOT / "tests" / test[0]).read_text(), (command, test)


def test_ci_runs_the_newest_python_that_requires_python_admits():
    """A range we declare is a range we run: CI runs every tier on the floor (its own Python, 3.11)
    and the fast tier on the ceiling, `.ci/python_version` with the newest version admitted."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    ceiling = re.fullmatch(r">=3\.\d+,<3\.(\d+)", declared)
    assert ceiling, f"requires-python = {declared!r}: give it a ceiling that CI runs below"
    assert f"bash .ci/python_version 3.{int(ceiling[1]) - 1}\n" in (ROOT / ".ci" / "run").read_text()
