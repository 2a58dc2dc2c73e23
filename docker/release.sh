#!/usr/bin/env bash
# Builds and pushes both images of the commit checked out here, and sets their name and tag
# in the manifests, so that what is deployed names exactly the code in the image:
#   bash docker/release.sh [IMAGE_NAME]      (default ghcr.io/sentisweep/sentisweep)
#   git commit -m "deploy $(git rev-parse --short=7 HEAD)" k8s/components/image k8s/overlays/cpu-only
# ENGINE=docker (default) or podman. Tags: VERSION-SHA (CUDA 13.0) and VERSION-SHA-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-ghcr.io/sentisweep/sentisweep}"
engine="${ENGINE:-docker}"
tag=$(bash docker/image_tag.sh)  # refuses uncommitted changes

mapfile -t flags < <(bash docker/provenance.sh)  # the commit in every row, OCI labels
# the nodes are x86_64 (the locks hold x86_64 wheels): said, not taken from the build machine
flags+=(--platform linux/amd64)
# the build context is the commit itself (git archive): nothing untracked or ignored reaches the image
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
git archive HEAD | tar -x -C "$context"
"$engine" build "${flags[@]}" -t "$name:$tag" "$context"
"$engine" build "${flags[@]}" --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-cpu \
    --build-arg LOCK=docker/requirements-cpu.lock \
    --build-arg PIP_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/ -t "$name:$tag-cpu" "$context"
"$engine" push "$name:$tag"
"$engine" push "$name:$tag-cpu"

set_image() {  # FILE TAG: the one images entry of a kustomization file
    sed -i -E -e "s|^(\s*newName:).*|\1 $name|" -e "s|^(\s*newTag:).*|\1 $2|" "$1"
}
set_image k8s/components/image/kustomization.yaml "$tag"
set_image k8s/overlays/cpu-only/kustomization.yaml "$tag-cpu"
echo "k8s/ now deploys $name:$tag (cpu-only: $tag-cpu); commit that with:"
echo "  git commit -m \"deploy \$(git rev-parse --short=7 HEAD)\" k8s/components/image k8s/overlays/cpu-only"
