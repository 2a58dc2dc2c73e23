# One image for the Ray head, every worker and the job submitter: Ray 2.60 on Python 3.11,
# torch 2.13.0, and sentisweep. `bash docker/release.sh` builds it, tags it with the
# version + git commit and sets that tag in k8s/components/image. By hand:
#   GPU:  docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" \
#           -t ghcr.io/sentisweep/sentisweep:"$(bash docker/image_tag.sh)" .
#   CPU:  the same, with --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-cpu \
#           --build-arg LOCK=docker/requirements-cpu.lock \
#           --build-arg PIP_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/ \
#           -t ghcr.io/sentisweep/sentisweep:"$(bash docker/image_tag.sh)-cpu" .
# No data, weights or secrets are baked in: datasets and models come from the Hugging Face
# Hub into HF_HOME, which the manifests mount from a volume; HF_TOKEN comes from a Secret.

# PyPI's torch 2.13.0 for Linux x86_64 is built for CUDA 13.0 (driver >= 580): the base
# carries the same CUDA and names it (a `-gpu` tag moves, and carried CUDA 12).
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311-cu130
FROM ${BASE_IMAGE}
# Every package, transitive ones too, exact and hash-checked (docker/lock.sh makes the locks).
ARG LOCK=docker/requirements.lock
# Where the CPU lock's torch+cpu comes from (PyTorch's CPU index, or a folder of wheels).
ARG PIP_FIND_LINKS

# The Ray images run as the non-root user "ray" (uid 1000, group users = gid 100); so does this one.
USER 1000:100
WORKDIR /home/ray/sentisweep
ENV HF_HOME=/mnt/cache/huggingface \
    SENTISWEEP_CACHE_DIR=/mnt/cache/sentisweep \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The caches' default place, made and owned by uid 1000: without a volume on it, the cache
# is still writable by the user the pods run as (only root may create folders in /mnt).
USER 0
RUN mkdir -p /mnt/cache/huggingface /mnt/cache/sentisweep && chown -R 1000:100 /mnt/cache
USER 1000:100

# Largest and least changing first: the locked packages, then the code.
COPY --chown=1000:100 ${LOCK} docker/requirements.lock
RUN pip install --no-cache-dir --require-hashes --no-deps -r docker/requirements.lock

# The commit the image is built from: result rows record it (the image has no .git).
# Declared here, after the packages, so that a new commit rebuilds only the code's layers.
ARG GIT_COMMIT=unknown
ENV SENTISWEEP_GIT_COMMIT=${GIT_COMMIT}
# KubeRay cannot upload a working directory, so the code lives here on every node,
# installed (editable) so that Ray workers import sweeps, ray_jobs and ray_session by name.
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 sentisweep sentisweep
COPY --chown=1000:100 ray_session ray_session
COPY --chown=1000:100 sweeps sweeps
COPY --chown=1000:100 ray_jobs ray_jobs
COPY --chown=1000:100 analysis analysis
COPY --chown=1000:100 benchmarks benchmarks
COPY --chown=1000:100 data/tiny_reviews data/tiny_reviews
COPY --chown=1000:100 docker/embed_xgb_study.sh docker/embed_xgb_study.sh
# Compiled now: the pods' root filesystem is read-only, so Python could not write .pyc later.
# `pip check`: the locked packages (installed --no-deps) and the base image's agree on every
# requirement, or the build stops here rather than a trial on a GPU node.
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && python -m pip check \
    && python -m compileall -q sentisweep ray_session sweeps ray_jobs analysis benchmarks

# A smoke check anyone can run on the built image (no GPU needed):
#   docker run --rm IMAGE python sweeps/ablation.py --config sweeps/configs/smoke.yaml --dry-run
CMD ["python", "sweeps/ablation.py", "--help"]
