# Taskfan: `make run` shows the pipeline working, `make test` proves it. Both install what they need.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCORERS ?= 1
WORKFLOWS ?= 1

.PHONY: help deps venv runtime up down run status test unit e2e bench bench-quick soak soak-long lint schemas clean images \
	k8s-deps k8s-up k8s-down k8s-test bench-deps

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@PYTHON='$(PYTHON)' VENV='$(VENV)' bash deploy/install-venv.sh

venv: $(VENV)/.installed ## the Python virtualenv with Taskfan and its pinned Dapr SDK

runtime: ## the Dapr runtime and Jaeger (built once per machine into ~/.cache/taskfan) and redis-server
	@bash deploy/install-dapr.sh >/dev/null
	@bash deploy/install-jaeger.sh >/dev/null
	@bash deploy/install-redis.sh >/dev/null

deps: venv runtime ## everything above

up: deps ## start the stack in the background, return when ready (SCORERS=N scorers, WORKFLOWS=N workflow processes)
	$(BIN)/taskfan stack up --scorers $(SCORERS) --workflows $(WORKFLOWS)

down: ## stop everything `make up` started
	@if [[ -x $(BIN)/taskfan ]]; then $(BIN)/taskfan stack down; else echo "no stack is running"; fi

status: ## show the stack's processes
	$(BIN)/taskfan stack status

run: venv ## start the stack, publish examples/batch.json, print its outcome, stop the stack (builds what it needs)
	trap '$(BIN)/taskfan stack down' EXIT; \
	$(BIN)/taskfan stack up --scorers $(SCORERS) --workflows $(WORKFLOWS); \
	$(BIN)/taskfan publish examples/batch.json --wait

test: venv ## unit tests, end-to-end tests on the real stack, then on a real cluster (root)
	@bash deploy/background-build.sh start
	@trap 'bash deploy/background-build.sh stop' EXIT; $(MAKE) --no-print-directory deps && \
	  $(BIN)/pytest tests/unit -n auto && $(BIN)/pytest tests/e2e tests/k8s

unit: venv ## unit tests only (no stack), one process per core
	$(BIN)/pytest tests/unit -n auto

e2e: deps ## end-to-end tests only
	$(BIN)/pytest tests/e2e

bench-deps: venv ## the Temporal CLI for the benchmark's Temporal peer (built once per machine, cached)
	@bash deploy/install-temporal.sh >/dev/null

bench: deps bench-deps ## measure Taskfan vs Temporal vs Celery vs in-process; writes bench/results/latest.{json,png}
	$(BIN)/python -m bench.run

bench-quick: deps bench-deps ## every benchmark scenario and peer at a tiny size (~6 min); results in a temp dir
	$(BIN)/python -m bench.run --quick

soak: deps ## the pipeline under load and random faults for SOAK_SECONDS (600), a ledger in bench/results/soak.json
	$(BIN)/python -m bench.soak --seconds $(or $(SOAK_SECONDS),600)

soak-long: deps ## the same for SOAK_LONG_SECONDS (3600) with the stack's curves: bench/results/soak-long.{json,png}
	$(BIN)/python -m bench.soak --long --seconds $(or $(SOAK_LONG_SECONDS),3600)

images: venv ## OCI image archives (Taskfan, Dapr's control plane, KEDA) in .taskfan/images, no Docker (root)
	@bash deploy/images/build.sh >/dev/null

k8s-deps: venv ## the cluster's binaries and every image (built once per machine, cached; root)
	@bash deploy/k8s/install-k8s.sh >/dev/null
	@bash deploy/images/build.sh >/dev/null

k8s-up: venv ## a local Kubernetes cluster with Dapr, KEDA and Taskfan, ready (built once per machine; root)
	@bash deploy/k8s/up.sh

k8s-down: ## stop the local cluster; fails unless the host is as it was before k8s-up
	@bash deploy/k8s/cluster.sh down

k8s-test: venv k8s-deps ## the cluster tests only (root): up, Taskfan on it, scaling, pods deleted, down
	$(BIN)/pytest tests/k8s

lint: venv
	$(BIN)/ruff check src services tests bench examples

schemas: venv ## regenerate schemas/*.schema.json from the pydantic models
	$(BIN)/taskfan schemas

clean: down
	@if [[ -d .taskfan/k8s ]]; then bash deploy/k8s/cluster.sh down --wipe; fi
	rm -rf $(VENV) .taskfan
