#!/usr/bin/env bash
# The image tag for the code checked out here: the project's version + the git commit, e.g.
# 0.1.0-05bb566. No two builds of different code share a tag, so `imagePullPolicy:
# IfNotPresent` cannot run stale code on one node. Uncommitted changes are refused: the tag
# would name code that is not the image's.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
# untracked files count: the Dockerfile's COPY bakes them in
if [ -n "$(git status --porcelain)" ] && [ -z "${ALLOW_DIRTY:-}" ]; then
    echo "image_tag.sh: uncommitted or untracked files; commit or remove them first (or ALLOW_DIRTY=1 for a local test)" >&2
    exit 2
fi
echo "$version-$(git rev-parse --short=7 HEAD)"
