# kubetune developer entry points. `make demo` and `make test` each do all the
# setup they need on a fresh machine (system packages, pinned control-plane
# binaries built from the Go module proxy, the Python environment).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KUBETUNE_CACHE ?= $(HOME)/.cache/kubetune

.PHONY: setup system-deps binaries venv images test unit e2e demo demo-down crds check-crds lint typecheck bench bench-operator clean

setup: system-deps binaries venv images

system-deps:
	bash hack/install-system-deps.sh

binaries:
	bash hack/build-binaries.sh

# The operator and trainer images from their Dockerfiles, pushed to the local registry (cached by content).
images: system-deps venv
	bash hack/build-images.sh

venv: $(STAMP)

$(STAMP): pyproject.toml devcluster/pyproject.toml trainer-image/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e devcluster -e trainer-image
	touch $(STAMP)

# The one test command (README, CI): unit tests, then e2e on a real dev cluster.
test: setup
	$(PY) -m pytest tests

unit: venv
	$(PY) -m pytest tests -m "not e2e"

e2e: setup
	$(PY) -m pytest tests -m e2e

demo: setup
	bash hack/demo.sh

demo-down:
	-eval "$$($(VENV)/bin/kubetune dev env)" && helm uninstall kubetune --namespace kubetune-system --ignore-not-found --wait
	$(VENV)/bin/kubetune dev down

crds: venv
	$(VENV)/bin/kubetune crds

check-crds: venv
	$(VENV)/bin/kubetune crds --check

lint: venv
	$(VENV)/bin/ruff check operator devcluster trainer-image tests benchmarks helm
	$(VENV)/bin/mypy
	$(VENV)/bin/kubetune crds --check
	$(PY) -m kubetune.dashboard --check

bench: venv
	$(PY) benchmarks/search_benchmark.py

# Control-plane benchmarks on a private dev cluster (OPERATOR.md): turnover ~5 min, scale ~30 min.
bench-operator: setup
	$(PY) benchmarks/operator_benchmark.py turnover
	$(PY) benchmarks/operator_benchmark.py scale
	$(PY) benchmarks/operator_benchmark.py plan

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
