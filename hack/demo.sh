#!/usr/bin/env bash
# The main job, end to end: a local cluster, the operator installed with the Helm
# chart, an example TuningJob run to completion, and its result. Run through
# `make demo` (which installs everything first, images included). Leaves the cluster
# running; `make demo-down` uninstalls the chart and removes the cluster.
#
# NODE=real (the default): a real node (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS);
# the operator is the chart's container of the operator image, pulled by digest from the local
# registry, and every trial a container of the trainer image. NODE=agent: the node agent runs
# the same chart's `kubetune operator` and the trials as host processes (fast, no images).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBETUNE=.venv/bin/kubetune
EXAMPLE="${EXAMPLE:-examples/digits-bayesian.yaml}"
JOB="$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["metadata"]["name"])' "$EXAMPLE")"
NAMESPACE="${NAMESPACE:-kubetune-demo}"
RELEASE=kubetune
RELEASE_NAMESPACE=kubetune-system
NODE="${NODE:-real}"

step() { printf '\n==> %s\n' "$*"; }

step "Starting the dev cluster (registry, etcd, kube-apiserver, controller-manager, scheduler, $NODE node, Prometheus)"
$KUBETUNE dev up --node "$NODE"
eval "$($KUBETUNE dev env)"
kubectl get nodes -o wide

step "Installing the operator with the Helm chart (release $RELEASE in namespace $RELEASE_NAMESPACE)"
kubectl create namespace "$RELEASE_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label --overwrite namespace "$RELEASE_NAMESPACE" pod-security.kubernetes.io/enforce=restricted
if [[ "$NODE" == real ]]; then
  # The operator image of `make images`, pinned by digest in the cluster's registry.
  [[ -n "${KUBETUNE_OPERATOR_IMAGE:-}" ]] || { echo "no operator image: run make images"; exit 1; }
  echo "operator image: $KUBETUNE_OPERATOR_IMAGE"
  helm upgrade --install "$RELEASE" helm/kubetune --namespace "$RELEASE_NAMESPACE" \
    --set "image.registry=$KUBETUNE_REGISTRY" --set "image.digest=${KUBETUNE_OPERATOR_IMAGE##*@}" \
    --set "operator.prometheusUrl=$KUBETUNE_POD_PROMETHEUS_URL" --wait --timeout 10m
else
  # helm/kubetune/ci/dev-values.yaml: the node agent runs the chart's `kubetune operator` from .venv,
  # under the chart's ServiceAccount (in-cluster credentials, the chart's RBAC).
  helm upgrade --install "$RELEASE" helm/kubetune --namespace "$RELEASE_NAMESPACE" \
    -f helm/kubetune/ci/dev-values.yaml --set "operator.prometheusUrl=$KUBETUNE_PROMETHEUS_URL" --wait --timeout 5m
fi
kubectl -n "$RELEASE_NAMESPACE" get deployment,pods -o wide

step "Running $EXAMPLE in namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label --overwrite namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted
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
cat <<NEXT

Where to look next (after: eval "\$(.venv/bin/kubetune dev env)"):
  kubectl -n $NAMESPACE describe tuningjob $JOB          # conditions and one Event per transition
  kubectl -n $NAMESPACE get trials --sort-by=.spec.index
  kubectl -n $RELEASE_NAMESPACE logs deployment/$RELEASE   # one line per decision
  $KUBETUNE_PROMETHEUS_URL   # Prometheus: kubetune_trial_metric{kubetune_io_job="$JOB"}
  helm/kubetune/README.md    # the Grafana dashboard and alerts the chart ships
  make demo-down             # uninstall and stop the cluster
NEXT
[[ "$phase" == "Succeeded" ]]
