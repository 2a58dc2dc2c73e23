#!/usr/bin/env bash
# The build flags that say which code an image holds, one per line, for release.sh and
# build_and_smoke.sh: the commit (every result row's git_commit; the image has no .git) and the
# OCI labels `docker inspect` shows. "+dirty" when the checkout differs from the commit, untracked
# files included: the Dockerfile's COPY bakes those in too.
set -euo pipefail
cd "$(dirname "$0")/.."
commit="$(git rev-parse HEAD)$([ -z "$(git status --porcelain)" ] || echo +dirty)"
tag=$(ALLOW_DIRTY=1 bash docker/image_tag.sh)  # VERSION-SHA: the one reader of the version
version=${tag%-*}
printf '%s\n' --build-arg "GIT_COMMIT=$commit" \
    --label "org.opencontainers.image.revision=$commit" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.title=sentisweep" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
