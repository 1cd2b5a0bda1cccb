#!/usr/bin/env bash
# `make images`: the operator image (Dockerfile) and the trainer image (trainer-image/Dockerfile),
# built offline with podman from locally made bases and pushed to the local registry
# (devcluster/kubetune_dev/images.py says how). Cached by content: with unchanged inputs a second
# run rebuilds and pushes nothing. Prints each image as <repository>@<digest>.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
.venv/bin/python -m kubetune_dev.images "$@"
echo "$(date -u +%FT%TZ) images $(( $(date +%s) - start ))s" >> "${KUBETUNE_CACHE:-$HOME/.cache/kubetune}/build-times.log"
