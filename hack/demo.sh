#!/usr/bin/env bash
# The main job, end to end: a local cluster, the operator installed with the Helm
# chart, an example TuningJob run to completion, and its result. Run through
# `make demo` (which installs everything first). Leaves the cluster running;
# `make demo-down` uninstalls the chart and removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBETUNE=.venv/bin/kubetune
EXAMPLE="${EXAMPLE:-examples/digits-bayesian.yaml}"
JOB="$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "$EXAMPLE")"
NAMESPACE="${NAMESPACE:-kubetune-demo}"
RELEASE=kubetune
RELEASE_NAMESPACE=kubetune-system

step() { printf '\n==> %s\n' "$*"; }

step "Starting the dev cluster (etcd, kube-apiserver, controller-manager, scheduler, node agent, Prometheus)"
$KUBETUNE dev up
eval "$($KUBETUNE dev env)"
kubectl get nodes -o wide

step "Installing the operator with the Helm chart (release $RELEASE in namespace $RELEASE_NAMESPACE)"
# helm/kubetune/ci/dev-values.yaml: the node agent runs the chart's `kubetune operator` from .venv,
# under the chart's ServiceAccount (in-cluster credentials, the chart's RBAC).
helm upgrade --install "$RELEASE" helm/kubetune --namespace "$RELEASE_NAMESPACE" --create-namespace \
  -f helm/kubetune/ci/dev-values.yaml --set "operator.prometheusUrl=$KUBETUNE_PROMETHEUS_URL" --wait --timeout 5m
kubectl -n "$RELEASE_NAMESPACE" get deployment,pods -o wide

step "Running $EXAMPLE in namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" delete tuningjob "$JOB" --ignore-not-found --wait=true
kubectl -n "$NAMESPACE" apply -f "$EXAMPLE"
deadline=$(( $(date +%s) + 900 ))
while true; do
  phase="$(kubectl -n "$NAMESPACE" get tuningjob "$JOB" -o jsonpath='{.status.phase}')"
  kubectl -n "$NAMESPACE" get tuningjob "$JOB" --no-headers
  [[ "$phase" == "Succeeded" || "$phase" == "Failed" ]] && break
  (( $(date +%s) > deadline )) && { echo "timed out; operator log:"; kubectl -n "$RELEASE_NAMESPACE" logs "deployment/$RELEASE" --tail=40; exit 1; }
  sleep 5
done

step "Result"
kubectl -n "$NAMESPACE" get trials -l "kubetune.io/job=$JOB"
best="$(kubectl -n "$NAMESPACE" get tuningjob "$JOB" -o jsonpath='{.status.bestTrial}')"
if [[ -n "$best" ]]; then .venv/bin/python -m json.tool <<<"$best"; else
  kubectl -n "$NAMESPACE" get tuningjob "$JOB" -o jsonpath='{range .status.conditions[*]}{.type}: {.reason}: {.message}{"\n"}{end}'
fi
if $KUBETUNE plot --help >/dev/null 2>&1; then
  $KUBETUNE plot "$JOB" -n "$NAMESPACE" -o "demo-$JOB.png" && echo "plot written to demo-$JOB.png"
fi
[[ "$phase" == "Succeeded" ]]
