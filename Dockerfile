# syntax=docker/dockerfile:1
# The operator image: `kubetune operator` and the rest of the `kubetune` CLI, as the Helm
# chart runs it (helm/kubetune: command ["kubetune", "operator"], numeric non-root user,
# read-only root filesystem). No dev cluster, no trainer, no torch. Build from the repository root:
#
#   docker build -t ghcr.io/kubetune/operator:0.1.0 .
#
# Dockerfile.dockerignore limits the context to the paths copied below. `make images`
# (hack/build-images.sh) builds it offline: a local Debian base through PYTHON_IMAGE and pip
# pointed at a mounted wheelhouse through PIP_NO_INDEX / PIP_FIND_LINKS.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kubetune
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/kubetune ./operator/kubetune
RUN /opt/kubetune/bin/pip install ".[operator]" \
    && /opt/kubetune/bin/kubetune --help >/dev/null \
    && /opt/kubetune/bin/python -c "import kubetune.handlers.main, kubetune.search" \
    && ! /opt/kubetune/bin/python -c "import kubetune_dev" 2>/dev/null \
    && ! /opt/kubetune/bin/python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubetune-operator" \
      org.opencontainers.image.description="Kubernetes-native hyperparameter tuning operator" \
      org.opencontainers.image.source="https://github.com/kubetune/kubetune" \
      org.opencontainers.image.licenses="Apache-2.0"
# USER: Kopf names the operator after getpass.getuser(), which fails for a UID without a passwd
# entry (65532 here, or any runAsUser a cluster assigns) unless this is set.
ENV PATH=/opt/kubetune/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    USER=kubetune
COPY --from=build /opt/kubetune /opt/kubetune
# 65532: the conventional "nonroot" UID/GID; numeric, so runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
# 9102: /metrics (KUBETUNE_OPERATOR_METRICS_PORT), 8081: /healthz (KUBETUNE_HEALTH_PORT)
EXPOSE 9102 8081
ENTRYPOINT ["kubetune"]
CMD ["operator"]
