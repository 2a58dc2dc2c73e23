#!/usr/bin/env bash
# The DistilBERT vs Qwen3-4B study on a cluster: the sweep, then pretrained and fine-tuned
# embeddings -> XGBoost on its checkpoints. One script, so that a RayJob's entrypoint is one
# command: KubeRay pastes the entrypoint unquoted into its submitter's `bash -c`, and an `&&`
# there would run the second stage in the submitter pod (1 CPU, no GPU, no volume).
#   bash docker/embed_xgb_study.sh [STORAGE]    (default /mnt/shared/results; a retry resumes)
set -euo pipefail
cd "$(dirname "$0")/.."
storage="${1:-/mnt/shared/results}"
python sweeps/ablation.py --config sweeps/configs/distilbert_vs_qwen3.yaml --storage "$storage" --resume
python ray_jobs/embed_xgb.py --config sweeps/configs/embed_xgb_gpu.yaml --storage "$storage"
