#!/usr/bin/env bash
# Build the pinned control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, helm, prometheus) and the real node's (kubelet, kube-proxy, containerd,
# crictl, CoreDNS, pause) from the Go module proxy into a cache outside the work tree, keyed by
# version. A second run finds them there and returns at once. Build times: $CACHE/build-times.log.
#
# Why wrapper modules: k8s.io/kubernetes and go.etcd.io/etcd/server/v3 carry
# `replace` directives, so `go install pkg@version` refuses them
# (kubernetes/kubernetes#79384). A throwaway module that requires them and
# replaces each staging module by its published version builds them instead.
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
# Debian's prometheus package is built without Kubernetes service discovery, which the dev
# cluster's scrape contract needs (kubernetes_sd_configs), so Prometheus is built here too.
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v3.16.0}"
# The real node (devcluster/kubetune_dev/README.md): kubelet and kube-proxy come from the Kubernetes
# wrapper module above; containerd 2.x is the line Kubernetes 1.34 supports (Debian's 1.6 is not),
# runc and the CNI plugins are Debian's (hack/install-system-deps.sh).
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.9}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
# The CoreDNS release kubeadm 1.34 deploys.
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.1}"
# JobSet (sigs.k8s.io/jobset): the controller that runs JobSet trials (trialTemplate.workload) on the dev
# cluster, and its CRD, taken from the same module.
JOBSET_VERSION="${JOBSET_VERSION:-v0.10.1}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIN_GO_MINOR=24
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
BIN_DIR="$CACHE/bin"

log() { printf '[build-binaries] %s\n' "$*" >&2; }

require_go() {
  if ! command -v go >/dev/null 2>&1; then
    for candidate in /usr/local/go/bin /usr/lib/go/bin; do
      [[ -x "$candidate/go" ]] && export PATH="$candidate:$PATH" && break
    done
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "Go is missing. Install Go >= 1.$MIN_GO_MINOR (Debian: apt-get install golang-go, or the official tarball) and retry."
    exit 2
  fi
  local minor
  minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
  if (( minor < MIN_GO_MINOR )); then
    log "Go $(go env GOVERSION) is too old; fetching go1.$MIN_GO_MINOR toolchain through the module proxy (GOTOOLCHAIN)."
    export GOTOOLCHAIN="go1.$MIN_GO_MINOR.0"
  fi
}

# out_dir NAME VERSION -> directory where that binary lives.
out_dir() { printf '%s/%s-%s' "$BIN_DIR" "$1" "$2"; }

have() { [[ -x "$(out_dir "$1" "$2")/$1" ]]; }

# timed NAME VERSION CMD... : run one build step and record how long it took (a cold CI machine
# pays every step; $CACHE/build-times.log keeps the figures).
timed() {
  local name="$1" v="$2" started=$SECONDS; shift 2
  "$@"
  local took=$((SECONDS - started))
  log "$name $v: built in ${took}s"
  printf '%s %s %s %ss\n' "$(date -u +%FT%TZ)" "$name" "$v" "$took" >>"$CACHE/build-times.log"
}

# go_install_into DIR [go install args...] : `go install` into a scratch directory, then move the
# binaries into DIR, so an interrupted build never leaves a half-written binary that `have` trusts.
go_install_into() {
  local dir="$1"; shift
  local scratch="$dir.partial"
  rm -rf "$scratch"; mkdir -p "$scratch" "$dir"
  GOBIN="$scratch" CGO_ENABLED=0 go install -trimpath "$@"
  mv "$scratch"/* "$dir"/
  rmdir "$scratch"
}

# build_kubernetes_commands CMD... : build the given k8s.io/kubernetes/cmd/* binaries (the control
# plane, or the node's kubelet and kube-proxy) in a wrapper module of their own, unless all are cached.
build_kubernetes_commands() {
  local v="$KUBERNETES_VERSION" staging_v="v0${KUBERNETES_VERSION#v1}" set_name="$1"; shift
  local cmd missing=0
  for cmd in "$@"; do have "$cmd" "$v" || missing=1; done
  if (( ! missing )); then log "kubernetes $v ($set_name): cached"; return; fi
  local major minor work
  major="$(echo "$v" | sed -E 's/^v([0-9]+)\..*/\1/')"
  minor="$(echo "$v" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
  work="$CACHE/src/kubernetes-$set_name-$v"
  rm -rf "$work"; mkdir -p "$work"
  (
    cd "$work"
    go mod init "kubetune.local/kubernetes-$set_name-build" >/dev/null 2>&1
    local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
      cloud-provider cluster-bootstrap code-generator component-base component-helpers
      controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
      endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
      kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
      sample-apiserver sample-cli-plugin sample-controller)
    local m packages=()
    for m in "${staging[@]}"; do
      go mod edit -replace "k8s.io/$m=k8s.io/$m@$staging_v"
    done
    go mod edit -require "k8s.io/kubernetes@$v"
    for cmd in "$@"; do packages+=("k8s.io/kubernetes/cmd/$cmd@$v"); done
    log "kubernetes $v ($set_name): resolving modules"
    go get "${packages[@]}"
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    for cmd in "$@"; do
      have "$cmd" "$v" && continue
      log "kubernetes $v: building $cmd"
      local out; out="$(out_dir "$cmd" "$v")"; mkdir -p "$out"
      timed "$cmd" "$v" env CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go build -trimpath \
        -tags selinux,notest -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$out/$cmd.tmp" "$out/$cmd"
    done
  )
}

build_etcd() {
  local v="$ETCD_VERSION"
  if have etcd "$v"; then log "etcd $v: cached"; return; fi
  local work="$CACHE/src/etcd-$v"
  rm -rf "$work"; mkdir -p "$work"
  (
    cd "$work"
    go mod init kubetune.local/etcd-build >/dev/null 2>&1
    local m
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
      go mod edit -replace "go.etcd.io/etcd/$m=go.etcd.io/etcd/$m@$v"
    done
    log "etcd $v: resolving modules"
    go get "go.etcd.io/etcd/server/v3@$v"
    local out; out="$(out_dir etcd "$v")"; mkdir -p "$out"
    log "etcd $v: building"
    CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go build -trimpath \
      -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$out/etcd.tmp" "$out/etcd"
  )
}

build_helm() {
  local v="$HELM_VERSION"
  if have helm "$v"; then log "helm $v: cached"; return; fi
  local out; out="$(out_dir helm "$v")"; mkdir -p "$out"
  local minor; minor="$(echo "$KUBERNETES_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
  log "helm $v: building"
  CGO_ENABLED=0 GOBIN="$out" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$v \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" "helm.sh/helm/v3/cmd/helm@$v"
}

build_prometheus() {
  local v="$PROMETHEUS_VERSION"
  if have prometheus "$v"; then log "prometheus $v: cached"; return; fi
  # Prometheus 3.X.Y is published as Go module version v0.3XX.Y.
  local major minor patch module_v
  IFS=. read -r major minor patch <<<"${v#v}"
  module_v="v0.$(( major * 100 + minor )).$patch"
  local out; out="$(out_dir prometheus "$v")"; mkdir -p "$out"
  log "prometheus $v ($module_v): building (Kubernetes and file service discovery only)"
  # remove_all_sd + enable_kubernetes_sd: skip the cloud SDKs we never use (much faster build).
  # No builtinassets tag: the web UI is absent, the HTTP API (all we use) is not.
  CGO_ENABLED=0 GOBIN="$out" go install -trimpath -tags "remove_all_sd,enable_kubernetes_sd" -ldflags "-s -w \
    -X github.com/prometheus/common/version.Version=${v#v} \
    -X github.com/prometheus/common/version.Branch=release \
    -X github.com/prometheus/common/version.Revision=$module_v" \
    "github.com/prometheus/prometheus/cmd/prometheus@$module_v"
}

build_containerd() {
  local v="$CONTAINERD_VERSION" dir
  dir="$(out_dir containerd "$v")"
  if [[ -x "$dir/containerd" && -x "$dir/containerd-shim-runc-v2" && -x "$dir/ctr" ]]; then
    log "containerd $v: cached"; return
  fi
  log "containerd $v: building containerd, containerd-shim-runc-v2, ctr"
  # No cgo: btrfs is cgo-only and left out by itself; devmapper and zfs are not used either.
  # The shim's extra tag `no_grpc` is what upstream's Makefile builds it with.
  local pkg=github.com/containerd/containerd/v2 ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$v"
  timed containerd "$v" go_install_into "$dir" -tags "urfave_cli_no_docs no_btrfs no_devmapper no_zfs" \
    -ldflags "$ldflags" "$pkg/cmd/containerd@$v" "$pkg/cmd/ctr@$v"
  timed containerd-shim-runc-v2 "$v" go_install_into "$dir" -tags "urfave_cli_no_docs no_grpc" \
    -ldflags "$ldflags" "$pkg/cmd/containerd-shim-runc-v2@$v"
}

build_crictl() {
  local v="$CRICTL_VERSION"
  if have crictl "$v"; then log "crictl $v: cached"; return; fi
  log "crictl $v: building"
  timed crictl "$v" go_install_into "$(out_dir crictl "$v")" \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$v" "sigs.k8s.io/cri-tools/cmd/crictl@$v"
}

build_coredns() {
  local v="$COREDNS_VERSION"
  if have coredns "$v"; then log "coredns $v: cached"; return; fi
  local work="$CACHE/src/coredns-$v" out
  out="$(out_dir coredns "$v")"
  rm -rf "$work"; mkdir -p "$work" "$out"
  cp "$REPO_ROOT/devcluster/images/coredns/main.go" "$work/"
  (
    cd "$work"
    go mod init kubetune.local/coredns-build >/dev/null 2>&1
    log "coredns $v: resolving modules"
    go get "github.com/coredns/coredns@$v"
    go mod tidy
    log "coredns $v: building (the dev cluster's plugins only)"
    timed coredns "$v" env CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go build -trimpath \
      -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$v" -o "$out/coredns.tmp" .
    mv "$out/coredns.tmp" "$out/coredns"
  )
}

build_jobset() {
  local v="$JOBSET_VERSION" out
  out="$(out_dir jobset-controller "$v")"
  if [[ -x "$out/jobset-controller" && -f "$out/jobset.x-k8s.io_jobsets.yaml" ]]; then
    log "jobset $v: cached"; return
  fi
  local work="$CACHE/src/jobset-$v"
  rm -rf "$work"; mkdir -p "$work" "$out"
  (
    cd "$work"
    # A wrapper module: the controller's main package is the module root (sigs.k8s.io/jobset).
    go mod init kubetune.local/jobset-build >/dev/null 2>&1
    log "jobset $v: resolving modules"
    go get "sigs.k8s.io/jobset@$v"
    timed jobset-controller "$v" env CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/jobset/pkg/version.GitVersion=$v" -o "$out/jobset-controller.tmp" \
      sigs.k8s.io/jobset
    local module; module="$(go list -m -f '{{.Dir}}' "sigs.k8s.io/jobset")"
    install -m 0444 "$module/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" "$out/"
    mv "$out/jobset-controller.tmp" "$out/jobset-controller"
  )
}

# The pod sandbox's process, versioned by its source so an edit rebuilds it.
PAUSE_SOURCE="$REPO_ROOT/devcluster/images/pause"
PAUSE_VERSION="src-$(cat "$PAUSE_SOURCE/go.mod" "$PAUSE_SOURCE/main.go" | sha256sum | cut -c1-12)"

build_pause() {
  local src="$PAUSE_SOURCE" v="$PAUSE_VERSION"
  if have pause "$v"; then log "pause $v: cached"; return; fi
  local out; out="$(out_dir pause "$v")"; mkdir -p "$out"
  timed pause "$v" env CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go build -C "$src" -trimpath \
    -ldflags "-s -w" -o "$out/pause.tmp" .
  mv "$out/pause.tmp" "$out/pause"
}

main() {
  require_go
  mkdir -p "$BIN_DIR"
  build_etcd
  build_helm
  build_prometheus
  build_kubernetes_commands controlplane kube-apiserver kube-controller-manager kube-scheduler
  build_kubernetes_commands node kubelet kube-proxy
  build_containerd
  build_crictl
  build_coredns
  build_pause
  build_jobset
  # One stable directory of links, so callers need only KUBETUNE_CACHE.
  mkdir -p "$CACHE/current"
  ln -sfn "$(out_dir etcd "$ETCD_VERSION")/etcd" "$CACHE/current/etcd"
  ln -sfn "$(out_dir helm "$HELM_VERSION")/helm" "$CACHE/current/helm"
  ln -sfn "$(out_dir prometheus "$PROMETHEUS_VERSION")/prometheus" "$CACHE/current/prometheus"
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    ln -sfn "$(out_dir "$cmd" "$KUBERNETES_VERSION")/$cmd" "$CACHE/current/$cmd"
  done
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    ln -sfn "$(out_dir containerd "$CONTAINERD_VERSION")/$cmd" "$CACHE/current/$cmd"
  done
  ln -sfn "$(out_dir crictl "$CRICTL_VERSION")/crictl" "$CACHE/current/crictl"
  ln -sfn "$(out_dir coredns "$COREDNS_VERSION")/coredns" "$CACHE/current/coredns"
  ln -sfn "$(out_dir pause "$PAUSE_VERSION")/pause" "$CACHE/current/pause"
  ln -sfn "$(out_dir jobset-controller "$JOBSET_VERSION")/jobset-controller" "$CACHE/current/jobset-controller"
  ln -sfn "$(out_dir jobset-controller "$JOBSET_VERSION")/jobset.x-k8s.io_jobsets.yaml" \
    "$CACHE/current/jobset.x-k8s.io_jobsets.yaml"
  log "binaries ready in $CACHE/current"
}

main "$@"
