#!/usr/bin/env bash
# Install the Debian packages the dev cluster needs (see devcluster/kubetune_dev/README.md):
#   util-linux  - unshare, for the per-pod mount namespace that holds the termination-message file
#   mount       - mount(8), used inside that namespace for the bind mount
#   openssl     - handy for inspecting the generated certificates (the cluster itself uses `cryptography`)
#   procps      - ps/pkill for humans debugging a cluster
# and for the real node (`kubetune dev up --node real`, devcluster/kubetune_dev/realnode.py):
#   runc                        - the OCI runtime containerd's shim runs (1.1.5; crun fails on hybrid cgroups)
#   containernetworking-plugins - CNI bridge, host-local, portmap, loopback in /usr/lib/cni (1.1.1)
#   iptables                    - kube-proxy (iptables mode) and CNI portmap (nf_tables backend)
#   iproute2                    - ip netns / veth / routes for the node's network namespace
#   busybox-static              - the real node's small test image (kubetune_dev/nodeimages.py)
# and for the project's images (`make images`, devcluster/kubetune_dev/images.py):
#   podman          - builds the Dockerfiles without a daemon (with runc) and pushes to the registry
#   debootstrap     - the Debian bookworm rootfs of the python base image (public registries are out of reach)
#   docker-registry - the CNCF distribution registry on loopback (`kubetune dev up`'s `registry`)
# Idempotent: packages already installed are skipped; `apt-get update` runs at most once, and only
# when something is missing.
#
# Not Prometheus: Debian's package (2.42) is built without Kubernetes service discovery, which the
# scrape contract needs; hack/build-binaries.sh builds Prometheus from the Go module proxy instead.
set -euo pipefail

PACKAGES=(util-linux mount openssl procps ca-certificates
  runc containernetworking-plugins iptables iproute2 busybox-static
  podman debootstrap docker-registry)

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
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
log "done"
