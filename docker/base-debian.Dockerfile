# A stand-in for rayproject/ray where no image registry is reachable (this project's build
# machines): Debian bookworm's Python 3.11 from a root filesystem made by debootstrap and
# imported as ROOTFS_IMAGE, plus what the Dockerfile expects of Ray's images: the user ray
# (uid 1000, group users = 100) and a Python environment that user owns, first on PATH.
# docker/build_and_smoke.sh builds it and passes it to the Dockerfile as BASE_IMAGE.
ARG ROOTFS_IMAGE=localhost/sentisweep-rootfs:bookworm
FROM ${ROOTFS_IMAGE}
RUN useradd --uid 1000 --gid 100 --create-home --shell /bin/bash ray \
    && python3 -m venv /home/ray/venv \
    && chown -R 1000:100 /home/ray/venv
# pip uses the system's CA bundle (the host's, copied in by build_and_smoke.sh), not its own
ENV PATH=/home/ray/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
USER 1000:100
WORKDIR /home/ray
