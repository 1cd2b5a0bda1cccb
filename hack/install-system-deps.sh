#!/usr/bin/env bash
# Install the Debian packages the dev cluster needs (see operator/kubetune/dev/README.md):
#   prometheus  - run by `kubetune dev up` with its own config (the systemd unit is not used)
#   util-linux  - unshare, for the per-pod mount namespace that holds the termination-message file
#   mount       - mount(8), used inside that namespace for the bind mount
#   openssl     - handy for inspecting the generated certificates (the cluster itself uses `cryptography`)
#   procps      - ps/pkill for humans debugging a cluster
# Idempotent: packages already installed are skipped; `apt-get update` runs at most once, and only
# when something is missing.
set -euo pipefail

PACKAGES=(prometheus util-linux mount openssl procps ca-certificates)

log() { printf '[install-system-deps] %s\n' "$*" >&2; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if (( ${#missing[@]} == 0 )); then
  log "all present: ${PACKAGES[*]}"
  exit 0
fi

SUDO=()
if (( EUID != 0 )); then
  command -v sudo >/dev/null 2>&1 || { log "need root (or sudo) to install: ${missing[*]}"; exit 2; }
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
log "installing: ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
# --no-install-recommends: prometheus recommends node-exporter etc., which we do not run.
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

# The Debian package enables and starts prometheus.service where systemd runs; the dev cluster runs its
# own instance on a free port, so a stray system one would only waste memory (and port 9090).
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
log "done"
