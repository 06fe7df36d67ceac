# syntax=docker/dockerfile:1
#
# fvc worker images, two targets built from one wheel:
#
#   docker build --target cpu -t REGISTRY/fvc:0.1.0 .       # python:3.11-slim, faiss-cpu
#   docker build --target gpu -t REGISTRY/fvc:0.1.0-gpu .   # CUDA 12 runtime, faiss-gpu-cu12
#
# The wheel is built exactly as tests/chart/test_chart_image.py builds and installs it in `make test`
# (pip wheel --no-deps -w dist .), so the code in the image is the code the tests proved. Only
# the installed wheel and its dependencies reach the runtime stages: no sources, no tests.
# Both run as the non-root user 10001 with `fvc` as entrypoint; the Helm chart (helm/fvc) runs
# `fvc worker --config /etc/fvc/config.json` with a read-only root filesystem, /data and /tmp
# being emptyDirs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04

# ---- wheel: build the fvc wheel from the package sources only ------------------------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --no-deps -w dist .

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
    && pip install --no-cache-dir /tmp/dist/fvc-*.whl \
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
# module: install the wheel with the extra, then remove faiss-cpu and reinstall the same
# faiss-gpu-cu12 so that its files are the ones left, and check the GPU build is what imports.
# DL3013: both installs are pinned: the wheel is a file, faiss-gpu-cu12 gets the exact version
# that the first install resolved.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheel,source=/src/dist,target=/tmp/dist \
    python3.11 -m venv /opt/fvc \
    && wheel="$(ls /tmp/dist/fvc-*.whl)" \
    && pip install --no-cache-dir "${wheel}[gpu]" \
    && faiss_gpu="faiss-gpu-cu12==$(pip show faiss-gpu-cu12 | sed -n 's/^Version: //p')" \
    && pip uninstall --yes faiss-cpu \
    && pip install --no-cache-dir --no-deps --force-reinstall "${faiss_gpu}" \
    && python -c "import faiss; assert hasattr(faiss, 'StandardGpuResources'), 'not the GPU build'" \
    && fvc --version
USER 10001:10001
WORKDIR /home/fvc
EXPOSE 6066
ENTRYPOINT ["fvc"]
CMD ["worker", "--config", "/etc/fvc/config.json"]
