#!/usr/bin/env bash
# The main job, end to end: a local cluster, the operator, an example TuningJob
# run to completion, and its result. Run through `make demo` (which installs
# everything first). Leaves the cluster running; `make demo-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBETUNE=.venv/bin/kubetune
EXAMPLE="${EXAMPLE:-examples/digits-bayesian.yaml}"
JOB="$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "$EXAMPLE")"
NAMESPACE="${NAMESPACE:-kubetune-demo}"

step() { printf '\n==> %s\n' "$*"; }

step "Starting the dev cluster (etcd, kube-apiserver, controller-manager, scheduler, node agent, Prometheus)"
$KUBETUNE dev up
eval "$($KUBETUNE dev env)"
kubectl get nodes -o wide

step "Installing the CRDs and starting the operator"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established crd/tuningjobs.kubetune.io crd/trials.kubetune.io --timeout=60s
mkdir -p "$KUBETUNE_DEV_HOME/logs"
if [[ -f "$KUBETUNE_DEV_HOME/operator.pid" ]] && kill -0 "$(cat "$KUBETUNE_DEV_HOME/operator.pid")" 2>/dev/null; then
  echo "operator already running (pid $(cat "$KUBETUNE_DEV_HOME/operator.pid"))"
else
  KUBETUNE_OPERATOR_METRICS_PORT=0 KUBETUNE_HEALTH_PORT=0 \
    setsid $KUBETUNE operator >"$KUBETUNE_DEV_HOME/logs/operator.log" 2>&1 &
  echo $! >"$KUBETUNE_DEV_HOME/operator.pid"
  echo "operator started (pid $!, log $KUBETUNE_DEV_HOME/logs/operator.log)"
fi

step "Running $EXAMPLE in namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" delete tuningjob "$JOB" --ignore-not-found --wait=true
kubectl -n "$NAMESPACE" apply -f "$EXAMPLE"
deadline=$(( $(date +%s) + 900 ))
while true; do
  phase="$(kubectl -n "$NAMESPACE" get tuningjob "$JOB" -o jsonpath='{.status.phase}')"
  kubectl -n "$NAMESPACE" get tuningjob "$JOB" --no-headers
  [[ "$phase" == "Succeeded" || "$phase" == "Failed" ]] && break
  (( $(date +%s) > deadline )) && { echo "timed out; operator log: $KUBETUNE_DEV_HOME/logs/operator.log"; exit 1; }
  sleep 5
done

step "Result"
kubectl -n "$NAMESPACE" get trials -l "kubetune.io/job=$JOB"
kubectl -n "$NAMESPACE" get tuningjob "$JOB" -o jsonpath='{.status.bestTrial}' | .venv/bin/python -m json.tool
if $KUBETUNE plot --help >/dev/null 2>&1; then
  $KUBETUNE plot "$JOB" -n "$NAMESPACE" -o "demo-$JOB.png" && echo "plot written to demo-$JOB.png"
fi
[[ "$phase" == "Succeeded" ]]
