# One image for the Ray head and every worker: Ray 2.60 on Python 3.11 with CUDA, plus sentisweep.
#   docker build -t ghcr.io/sentisweep/sentisweep:0.1.0 .
# The tag is the one k8s/Kustomization names (tests/test_deploy.py keeps them equal).
# No data, weights or secrets are baked in: datasets and models come from the Hugging Face
# Hub into HF_HOME, which the manifests mount from a volume; HF_TOKEN comes from a Secret.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# The Ray images run as the non-root user "ray" (uid 1000, group users = gid 100); so does this one.
USER 1000:100
WORKDIR /home/ray/sentisweep
# KubeRay cannot upload a working directory, so the code lives here on every node,
# installed (editable) so that Ray workers import sweeps, ray_jobs and ray_session by name.
ENV HF_HOME=/mnt/cache/huggingface \
    SENTISWEEP_CACHE_DIR=/mnt/cache/sentisweep \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Largest and least changing first. On Linux x86_64, PyPI's torch 2.13.0 is the CUDA build.
RUN pip install --no-cache-dir torch==2.13.0
COPY --chown=1000:100 docker/requirements.txt docker/requirements.txt
RUN pip install --no-cache-dir -r docker/requirements.txt

# The code last: editing it rebuilds only these small layers.
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 sentisweep sentisweep
COPY --chown=1000:100 ray_session ray_session
COPY --chown=1000:100 sweeps sweeps
COPY --chown=1000:100 ray_jobs ray_jobs
COPY --chown=1000:100 analysis analysis
COPY --chown=1000:100 benchmarks benchmarks
COPY --chown=1000:100 tests/fixtures tests/fixtures
COPY --chown=1000:100 docker/embed_xgb_study.sh docker/embed_xgb_study.sh
RUN pip install --no-cache-dir --no-deps -e .

# A smoke check anyone can run on the built image (no GPU needed):
#   docker run --rm ghcr.io/sentisweep/sentisweep:0.1.0 python sweeps/ablation.py --config sweeps/configs/smoke.yaml --dry-run
CMD ["python", "sweeps/ablation.py", "--help"]
