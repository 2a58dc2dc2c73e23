#!/usr/bin/env bash
# bash benchmarks/gpu_wheelhouse.sh [FOLDER]     (default .gpu-wheels/, ignored by git)
#
# The wheels the lent GPU machine lacks for benchmarks/gpu_check.py, for its Python (cp312,
# manylinux x86_64); ../.library/device/KINDS.md lists what it has: torch 2.11 + CUDA 13,
# transformers 5.17, peft, accelerate, pyarrow, pandas, scikit-learn, sentencepiece, and no
# package registry. Missing there: pydantic (its compiled core must be the cp312 build; with the
# typing-extensions it requires, as that machine's may be older) and bitsandbytes (QLoRA, the
# 4-bit embedder), without its dependencies (torch, numpy, packaging are there): its torch stays.
# The folder travels with the working tree (the device tool's `carry`, 64 MiB in all): this
# prints the total against that limit. On the machine:
#   pip install --no-index --no-deps --target /tmp/extra .gpu-wheels/*.whl
#   PYTHONPATH=/tmp/extra:$PWD python3 benchmarks/gpu_check.py
set -euo pipefail
out=${1:-.gpu-wheels}
mkdir -p "$out"
target=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python -m pip download --quiet "${target[@]}" -d "$out" "pydantic>=2.6"  # and its pinned core
python -m pip download --quiet "${target[@]}" --no-deps -d "$out" "bitsandbytes>=0.45"
wheels=$(du -cb "$out"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
echo "$(ls "$out"/*.whl | wc -l) wheels in $out: $((wheels / 1048576)) MiB; with the working tree" \
     "$(((wheels + tree) / 1048576)) of the 64 MiB the device tool carries"
test $((wheels + tree)) -lt $((64 * 1048576))
