#!/usr/bin/env bash
# Build the pinned control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, helm, prometheus) from the Go module proxy into a cache outside the
# work tree, keyed by version. A second run finds them there and returns at once.
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

build_kubernetes() {
  local v="$KUBERNETES_VERSION" staging_v="v0${KUBERNETES_VERSION#v1}"
  if have kube-apiserver "$v" && have kube-controller-manager "$v" && have kube-scheduler "$v"; then
    log "kubernetes $v: cached"; return
  fi
  local major minor work
  major="$(echo "$v" | sed -E 's/^v([0-9]+)\..*/\1/')"
  minor="$(echo "$v" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
  work="$CACHE/src/kubernetes-$v"
  rm -rf "$work"; mkdir -p "$work"
  (
    cd "$work"
    go mod init kubetune.local/kubernetes-build >/dev/null 2>&1
    local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
      cloud-provider cluster-bootstrap code-generator component-base component-helpers
      controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
      endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
      kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
      sample-apiserver sample-cli-plugin sample-controller)
    local m
    for m in "${staging[@]}"; do
      go mod edit -replace "k8s.io/$m=k8s.io/$m@$staging_v"
    done
    go mod edit -require "k8s.io/kubernetes@$v"
    log "kubernetes $v: resolving modules"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$v" "k8s.io/kubernetes/cmd/kube-controller-manager@$v" \
      "k8s.io/kubernetes/cmd/kube-scheduler@$v"
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    local cmd
    for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
      log "kubernetes $v: building $cmd"
      local out; out="$(out_dir "$cmd" "$v")"; mkdir -p "$out"
      CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" go build -trimpath -tags selinux,notest \
        -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
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

main() {
  require_go
  mkdir -p "$BIN_DIR"
  build_etcd
  build_helm
  build_prometheus
  build_kubernetes
  # One stable directory of links, so callers need only KUBETUNE_CACHE.
  mkdir -p "$CACHE/current"
  ln -sfn "$(out_dir etcd "$ETCD_VERSION")/etcd" "$CACHE/current/etcd"
  ln -sfn "$(out_dir helm "$HELM_VERSION")/helm" "$CACHE/current/helm"
  ln -sfn "$(out_dir prometheus "$PROMETHEUS_VERSION")/prometheus" "$CACHE/current/prometheus"
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    ln -sfn "$(out_dir "$cmd" "$KUBERNETES_VERSION")/$cmd" "$CACHE/current/$cmd"
  done
  log "binaries ready in $CACHE/current"
}

main "$@"
