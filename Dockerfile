# syntax=docker/dockerfile:1
#
# fvc worker images, two targets built from one wheel:
#
#   docker build --target cpu -t REGISTRY/fvc:0.1.0 .       # python:3.11-slim, faiss-cpu
#   docker build --target gpu -t REGISTRY/fvc:0.1.0-gpu .   # CUDA 12 runtime, faiss-gpu-cu12
#
# The wheel is built exactly as tests/chart/test_chart_image.py builds and installs it in `make test`
# (pip wheel --no-deps -w dist .), so the code in the image is the code the tests proved, and its
# dependencies are uv.lock's pins, hash-checked: the versions `make test` ran with. Only the
# installed wheel and its dependencies reach the runtime stages: no sources, no tests.
# Both run as the non-root user 10001 with `fvc` as entrypoint; the Helm chart (helm/fvc) runs
# `fvc worker --config /etc/fvc/config.json` with a read-only root filesystem, /data and /tmp
# being emptyDirs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04

# ---- wheel: the fvc wheel from the package sources, and the locked requirements ----------
# uv (pinned with its hashes) exports uv.lock's pins, with their hashes, for each target; the
# runtime stages install exactly those with pip's hash checking, then the wheel without deps.
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY scripts/uv-requirements.txt ./scripts/
RUN pip install --no-cache-dir --require-hashes -r scripts/uv-requirements.txt
COPY pyproject.toml README.md uv.lock ./
COPY app ./app
COPY agents ./agents
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --no-deps -w dist .
RUN uv export --frozen --no-emit-project -o dist/requirements-cpu.txt \
    && uv export --frozen --no-emit-project --extra gpu --no-emit-package faiss-cpu \
        -o dist/requirements-gpu.txt

# ---- cpu: the wheel with faiss-cpu on python:3.11-slim ------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/fvc \
    PATH=/opt/fvc/bin:$PATH \
    FVC_DATA_DIR=/data
RUN groupadd --system --gid 10001 fvc \
    && useradd --system --uid 10001 --gid fvc --home-dir /home/fvc --create-home \
        --shell /usr/sbin/nologin fvc \
    && mkdir -p /data /etc/fvc \
    && chown fvc:fvc /data
RUN --mount=type=bind,from=wheel,source=/src/dist,target=/tmp/dist \
    python -m venv /opt/fvc \
    && pip install --no-cache-dir --require-hashes -r /tmp/dist/requirements-cpu.txt \
    && pip install --no-cache-dir --no-deps /tmp/dist/fvc-*.whl \
    && fvc --version
USER 10001:10001
WORKDIR /home/fvc
EXPOSE 6066
ENTRYPOINT ["fvc"]
CMD ["worker", "--config", "/etc/fvc/config.json"]

# ---- gpu: the same wheel with its [gpu] extra (faiss-gpu-cu12) on the CUDA 12 runtime -------
FROM ${CUDA_IMAGE} AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/fvc \
    PATH=/opt/fvc/bin:$PATH \
    FVC_DATA_DIR=/data \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# DL3008: Ubuntu drops superseded package versions from its archive, so an exact pin would
# break every rebuild after a security update; the base image tag fixes the release (22.04).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fvc \
    && useradd --system --uid 10001 --gid fvc --home-dir /home/fvc --create-home \
        --shell /usr/sbin/nologin fvc \
    && mkdir -p /data /etc/fvc \
    && chown fvc:fvc /data
# faiss-cpu (a base dependency) and faiss-gpu-cu12 (the gpu extra) both provide the `faiss`
# module: the gpu requirements are exported without faiss-cpu, and the wheel goes in without
# deps, so only the GPU build is there; the last check proves it is what imports.
RUN --mount=type=bind,from=wheel,source=/src/dist,target=/tmp/dist \
    python3.11 -m venv /opt/fvc \
    && pip install --no-cache-dir --require-hashes -r /tmp/dist/requirements-gpu.txt \
    && pip install --no-cache-dir --no-deps /tmp/dist/fvc-*.whl \
    && python -c "import faiss; assert hasattr(faiss, 'StandardGpuResources'), 'not the GPU build'" \
    && fvc --version
USER 10001:10001
WORKDIR /home/fvc
EXPOSE 6066
ENTRYPOINT ["fvc"]
CMD ["worker", "--config", "/etc/fvc/config.json"]
