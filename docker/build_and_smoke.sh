#!/usr/bin/env bash
# Builds the image and runs the smoke sweep inside it, where no image registry is reachable
# (this project's build machines; tests/test_container.py runs it):
#  1. a Debian bookworm root filesystem made by debootstrap, imported as an image;
#  2. docker/base-debian.Dockerfile on it: a stand-in for rayproject/ray (user ray, uid 1000);
#  3. the Dockerfile on that base, with the CPU lock and torch's CPU wheel from TORCH_CPU_WHEELS;
#  4. in the image, as uid 1000 with a read-only root filesystem (as the pods run it):
#     the smoke sweep to the end, its results on a mounted folder, then their report.
#   bash docker/build_and_smoke.sh [WORK_DIR]      (default /var/tmp/sentisweep-container)
# The engine is podman (Debian's package). WORK_DIR keeps the root filesystem between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/var/tmp/sentisweep-container}"
wheels="${TORCH_CPU_WHEELS:-/opt/wheels}"
tag="$(bash docker/image_tag.sh)-cpu"
image="ghcr.io/sentisweep/sentisweep:$tag"
mkdir -p "$work"

# What this engine needs on this kind of machine: runc (crun refuses a host whose cgroups are
# v1 + v2 "hybrid"), and resource limits no higher than the host's own (podman's defaults
# are higher, and raising them needs a capability the sandbox does not give).
engine=(podman)
if command -v runc >/dev/null; then engine+=(--runtime runc); fi
limits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=8192:8192)

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "1/4 root filesystem: debootstrap bookworm"
if ! "${engine[@]}" image exists localhost/sentisweep-rootfs:bookworm; then
    if [ ! -x "$work/rootfs/usr/bin/python3" ]; then
        rm -rf "$work/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$work/rootfs" http://deb.debian.org/debian
    fi
    # The host's CA bundle: behind a TLS-inspecting proxy (these machines) it holds the
    # proxy's CA, without which pip in the image cannot reach PyPI.
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$work/rootfs" -c . | "${engine[@]}" import - localhost/sentisweep-rootfs:bookworm
fi

# Can this engine run a container here at all? If not, say so with its own error (exit 3:
# sentisweep/exit_codes.py SKIPPED), apart from a failure of the build itself.
if ! probe=$("${engine[@]}" run --rm "${limits[@]}" --network host localhost/sentisweep-rootfs:bookworm true 2>&1); then
    echo "the container engine cannot run a container on this machine: $probe" >&2
    exit 3
fi

step "2/4 base image: user ray (uid 1000), a Python 3.11 environment it owns"
"${engine[@]}" build "${limits[@]}" --network host -f docker/base-debian.Dockerfile \
    -t localhost/sentisweep-base:bookworm-py311 .

step "3/4 the image: $image"
mapfile -t provenance < <(bash docker/provenance.sh)  # the commit in every row, OCI labels (as release.sh)
"${engine[@]}" build "${limits[@]}" --network host \
    --build-arg BASE_IMAGE=localhost/sentisweep-base:bookworm-py311 \
    --build-arg LOCK=docker/requirements-cpu.lock --build-arg PIP_FIND_LINKS=/wheels "${provenance[@]}" \
    --volume "$wheels:/wheels:ro" -t "$image" .

step "4/4 the smoke sweep in the image: uid 1000, read-only root filesystem"
# Writable: only what the pods mount writable (k8s/: /tmp, /home/ray/.ray, /dev/shm, the volume).
shared="$work/shared"
rm -rf "$shared" && mkdir -p "$shared" && chown 1000:100 "$shared"
run=("${engine[@]}" run --rm "${limits[@]}" --network host --user 1000:100 --read-only
     --tmpfs /tmp:rw,mode=1777 --tmpfs /home/ray/.ray:rw,mode=1777 --shm-size 8g --volume "$shared:/mnt/shared:rw"
     --env HF_HOME=/mnt/shared/cache/huggingface --env SENTISWEEP_CACHE_DIR=/mnt/shared/cache/sentisweep
     --env XDG_CACHE_HOME=/tmp/cache --env MPLCONFIGDIR=/tmp/matplotlib --env HF_HUB_OFFLINE=1
     --env NVIDIA_VISIBLE_DEVICES=void)
"${run[@]}" "$image" id
"${run[@]}" "$image" python sweeps/ablation.py --config sweeps/configs/smoke.yaml --storage /mnt/shared/results
"${run[@]}" "$image" python -m analysis report /mnt/shared/results/smoke --out /mnt/shared/reports/smoke
ls -l "$shared/results/smoke/results.parquet" "$shared/reports/smoke/report.html"
echo "smoke sweep in $image: done"
