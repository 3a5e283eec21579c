# syntax=docker/dockerfile:1
# One image for every atlaspipe role: a Celery worker for any stage, atlaspipe-submit,
# `atlaspipe serve`, Flower and `atlaspipe bench`. The role is chosen by the command.
#
#   docker build -t atlaspipe:0.1.0 .          (scripts/image-build.sh reads the version from pyproject)

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: install the package and its dependencies into a self-contained venv ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/atlaspipe
ENV PATH=/opt/atlaspipe/bin:$PATH
WORKDIR /src
# Only what setuptools needs (see .dockerignore); README.md is the pyproject `readme`.
COPY pyproject.toml README.md* ./
COPY celeryconfig.py ./
COPY atlaspipe ./atlaspipe
RUN pip install --upgrade pip setuptools wheel \
 && pip install . \
 && python -m compileall -q /opt/atlaspipe \
 && atlaspipe --help >/dev/null \
 && atlaspipe-submit --help >/dev/null \
 && celery --version

# ---- runtime: the venv only, no build tools, non-root ----
FROM ${PYTHON_IMAGE} AS runtime
ARG ATLASPIPE_VERSION=0.1.0
LABEL org.opencontainers.image.title="atlaspipe" \
      org.opencontainers.image.description="Distributed H->ZZ*->4l analysis of ATLAS Open Data on Celery and RabbitMQ" \
      org.opencontainers.image.version="${ATLASPIPE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes `runAsNonRoot` can verify it and volumes can be chowned.
RUN groupadd --system --gid 10001 atlaspipe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/atlaspipe --create-home \
            --shell /usr/sbin/nologin atlaspipe \
 && mkdir -p /data/outputs /data/cache /tmp/atlaspipe \
 && chown -R 10001:10001 /data /tmp/atlaspipe

COPY --from=build /opt/atlaspipe /opt/atlaspipe

ENV PATH=/opt/atlaspipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATLASPIPE_OUTPUT_DIR=/data/outputs \
    ATLASPIPE_CACHE_DIR=/data/cache \
    ATLASPIPE_METRICS_PORT=9808 \
    MPLCONFIGDIR=/tmp/atlaspipe/matplotlib \
    HOME=/home/atlaspipe

# Named volumes mounted here start with this ownership (Docker copies it on first mount).
VOLUME ["/data/outputs", "/data/cache"]
WORKDIR /home/atlaspipe
USER 10001:10001

# web report, Flower, worker Prometheus exporter
EXPOSE 8080 5555 9808

# No ENTRYPOINT: every role passes its full command (compose `command:` / k8s `args`).
CMD ["atlaspipe", "--help"]
