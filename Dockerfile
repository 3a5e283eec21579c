# One image for every atlaspipe role: a Celery worker for any stage, atlaspipe-submit,
# `atlaspipe serve`, Flower and `atlaspipe bench`. The role is chosen by the command.
#
#   scripts/image-build.sh        (BuildKit; tags atlaspipe:<version from pyproject.toml>)
#
# Reproducible: the dependencies are exactly requirements.lock (pip-compile --generate-hashes, every
# file hash-checked); they and the code are separate layers, so a code change rebuilds only the
# small code layer. The runtime image has no pip.
#
# Base image: PYTHON_IMAGE must be a Debian-based image with python3 and its venv module. Where no
# registry is reachable, scripts/compose-e2e.sh builds one from Debian packages and passes it here.
# Package index settings (a private index, a TLS-intercepting proxy's CA) are passed as BuildKit
# secrets `pip.conf` and `pip-ca` for the install steps only; they never land in a layer.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- venv: the locked dependencies in /opt/atlaspipe ----
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/atlaspipe
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip.conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip.conf; fi \
 && if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && /opt/atlaspipe/bin/pip install --no-deps --require-hashes --only-binary=:all: \
        -r /tmp/requirements.lock

# ---- code: only the files atlaspipe itself installs, under /opt/code/opt/atlaspipe ----
FROM venv AS code
WORKDIR /src
# Only what setuptools needs (see .dockerignore); README.md is the pyproject `readme`.
COPY pyproject.toml README.md celeryconfig.py ./
COPY atlaspipe ./atlaspipe
RUN /opt/atlaspipe/bin/pip install --no-deps --no-build-isolation --no-compile --root /opt/code . \
 && /opt/atlaspipe/bin/python -m compileall -q -s /opt/code -p / /opt/code/opt/atlaspipe

# ---- deps: the venv without pip and setuptools (nothing can be installed at runtime) ----
FROM venv AS deps
RUN /opt/atlaspipe/bin/pip uninstall -q -y pip setuptools \
 && rm -f /opt/atlaspipe/bin/Activate.ps1

# ---- runtime: base + dependency layer + code layer, non-root ----
FROM ${PYTHON_IMAGE} AS runtime
ARG ATLASPIPE_VERSION=0.1.0
LABEL org.opencontainers.image.title="atlaspipe" \
      org.opencontainers.image.description="Distributed H->ZZ*->4l analysis of ATLAS Open Data on Celery and RabbitMQ" \
      org.opencontainers.image.version="${ATLASPIPE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# No pip at runtime: drop the base image's own (official python images ship one; Debian's
# python3-venv ships its wheel). A fixed numeric uid/gid so Kubernetes `runAsNonRoot` can verify it.
RUN rm -rf /usr/local/bin/pip* /usr/local/lib/python3*/site-packages/pip \
           /usr/local/lib/python3*/site-packages/pip-* /usr/share/python-wheels/pip-* \
 && groupadd --system --gid 10001 atlaspipe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/atlaspipe --create-home \
            --shell /usr/sbin/nologin atlaspipe \
 && mkdir -p /data/outputs /data/cache \
 && chown -R 10001:10001 /data

COPY --from=deps /opt/atlaspipe /opt/atlaspipe
COPY --from=code /opt/code/opt/atlaspipe/ /opt/atlaspipe/

ENV PATH=/opt/atlaspipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATLASPIPE_OUTPUT_DIR=/data/outputs \
    ATLASPIPE_CACHE_DIR=/data/cache \
    ATLASPIPE_METRICS_PORT=9808 \
    ATLASPIPE_PROBE_DIR=/tmp/atlaspipe-probe \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/atlaspipe

# Fails the build if a console script or the Celery app does not load, or if pip survived.
RUN atlaspipe --help >/dev/null \
 && atlaspipe-submit --help >/dev/null \
 && celery -A atlaspipe report >/dev/null \
 && celery flower --help >/dev/null \
 && ! python3 -m pip --version 2>/dev/null

# Named volumes mounted here start with this ownership (Docker copies it on first mount).
VOLUME ["/data/outputs", "/data/cache"]
WORKDIR /home/atlaspipe
USER 10001:10001

# web report, Flower, worker Prometheus exporter
EXPOSE 8080 5555 9808

# No ENTRYPOINT: every role passes its full command (compose `command:` / Kubernetes `command`).
CMD ["atlaspipe", "--help"]
