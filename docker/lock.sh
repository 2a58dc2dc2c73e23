#!/usr/bin/env bash
# Makes the image's lock files from docker/requirements.in: every transitive dependency,
# exact, with its hashes, for Linux x86_64 and Python 3.11 (the image's platform, whatever
# machine runs this). Needs uv (`pip install uv`). Run it after changing requirements.in.
#   requirements.lock      torch's CUDA 13.0 build from PyPI: the default, GPU image
#   requirements-cpu.lock  torch's CPU build: the CPU image (kind, minikube, this project's CI)
#   bash docker/lock.sh
# TORCH_CPU_WHEELS says where torch's CPU build is: PyTorch's CPU index by default; a folder
# of wheels where that is unreachable (these build machines: /opt/wheels).
set -euo pipefail
cd "$(dirname "$0")"
platform=(--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28)
uv pip compile requirements.in "${platform[@]}" --quiet -o requirements.lock
uv pip compile requirements.in "${platform[@]}" --quiet -o requirements-cpu.lock \
    --override torch-cpu.txt --find-links "${TORCH_CPU_WHEELS:-https://download.pytorch.org/whl/cpu/torch/}"
