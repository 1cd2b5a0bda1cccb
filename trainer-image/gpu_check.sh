#!/usr/bin/env bash
# GPU check for the reference trainer (about 1-3 minutes on one CUDA GPU).
#
# Runs `python -m kubetune_trainer` with device=cuda and amp on digits (mlp, cnn) and a larger
# synthetic problem (float16 and bfloat16), prints a markdown table of samples/s and final
# accuracy, and fails unless every run completed on CUDA (gpu_memory_bytes > 0 is reported only
# for CUDA runs) and reached its accuracy floor.
#
# Usage: bash trainer-image/gpu_check.sh   (inside the trainer image, or a checkout with torch,
#        scikit-learn and prometheus-client installed; PYTHON overrides the interpreter)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYTHON="${PYTHON:-python}"
# A checkout works without installing the package; an installed one takes precedence.
if ! "$PYTHON" -c "import kubetune_trainer, kubetune.report" 2>/dev/null; then
  export PYTHONPATH="$REPO/operator:$REPO/trainer-image${PYTHONPATH:+:$PYTHONPATH}"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export KUBETUNE_METRICS_PORT=0

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs CUDA: torch.cuda.is_available() is False"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

FAILED=0
ROWS=()
# name | floor for final val_accuracy | trainer arguments
run() {
  local name="$1" floor="$2"
  shift 2
  local message="$WORK/$name.json" started ended
  started=$(date +%s)
  if ! KUBETUNE_TERMINATION_MESSAGE_PATH="$message" "$PYTHON" -m kubetune_trainer \
      --device cuda --amp "$@" >"$WORK/$name.log" 2>&1; then
    echo "FAIL $name: trainer exited non-zero; last log lines:" >&2
    tail -n 20 "$WORK/$name.log" >&2
    FAILED=1
    return
  fi
  ended=$(date +%s)
  local row
  if ! row=$("$PYTHON" - "$message" "$floor" "$name" "$((ended - started))" <<'PY'
import json, sys
path, floor, name, seconds = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
doc = json.load(open(path))
metrics = doc["metrics"]
problems = []
if doc["status"] != "completed":
    problems.append(f"status {doc['status']}: {doc['reason']}")
if not (metrics.get("gpu_memory_bytes") or 0) > 0:
    problems.append("no gpu_memory_bytes: the run did not use CUDA")
if (metrics.get("val_accuracy") or 0) < floor:
    problems.append(f"val_accuracy {metrics.get('val_accuracy')} < {floor}")
if problems:
    print(f"FAIL {name}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"| {name} | {doc['step']} | {metrics['samples_per_second']:,.0f} | {metrics['val_accuracy']:.4f} "
      f"| {metrics['gpu_memory_bytes'] / 2**20:.1f} | {seconds} |")
PY
  ); then
    FAILED=1
    return
  fi
  ROWS+=("$row")
}

run digits-mlp-fp16 0.95 --dataset digits --model mlp --epochs 20
run digits-cnn-fp16 0.95 --dataset digits --model cnn --epochs 15 --lr 0.003
run digits-cnn-bf16 0.95 --dataset digits --model cnn --epochs 15 --lr 0.003 --amp-dtype bfloat16
run synthetic-mlp-fp16 0.80 --dataset synthetic --n-samples 200000 --n-features 256 --n-classes 10 \
  --hidden-layers 3 --hidden-units 1024 --batch-size 1024 --epochs 5
run synthetic-mlp-bf16 0.80 --dataset synthetic --n-samples 200000 --n-features 256 --n-classes 10 \
  --hidden-layers 3 --hidden-units 1024 --batch-size 1024 --epochs 5 --amp-dtype bfloat16

echo
echo "| run | epochs | samples/s (last epoch) | final val_accuracy | peak GPU MiB | wall s |"
echo "| --- | --- | --- | --- | --- | --- |"
for row in "${ROWS[@]+"${ROWS[@]}"}"; do echo "$row"; done
if [[ $FAILED -ne 0 ]]; then
  echo "gpu_check: FAILED" >&2
  exit 1
fi
echo "gpu_check: OK (all runs completed on CUDA)"
