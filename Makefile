# The two commands: `make run` (everything, end to end) and `make test`.
# Both bootstrap .venv from requirements/lock.txt first (idempotent: a second call installs nothing).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# DVC stages run `scripts/python -m deepflow...`: make that the venv's python (scripts/python
# finds .venv by itself; this covers VENV=elsewhere), and put the venv first on PATH for the rest.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DEEPFLOW_PYTHON := $(abspath $(VENV))/bin/python
export DVC_NO_ANALYTICS := 1
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site-cache
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
PYTEST_MARK := $(if $(filter true,$(CI)),-m "",)
# Test workers (pytest-xdist): one per CPU this process may use, at most 4; each takes whole test
# files (--dist loadfile), so a module's servers and fixtures start once. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))

.PHONY: run test bootstrap data lint bench lock ui schedule clean
run: bootstrap data
	$(BIN)/deepflow run

test: bootstrap
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_MARK)

bootstrap:
	@bash scripts/bootstrap.sh $(VENV)

data: bootstrap
	$(BIN)/dvc repro

lint: bootstrap
	$(BIN)/ruff check src flows tests bench

bench: bootstrap data
	$(BIN)/python bench/lightning_vs_torch.py
	$(BIN)/python bench/pipeline_breakdown.py
	$(BIN)/python bench/pipeline_breakdown.py --server
	$(BIN)/python bench/promotion_cost.py
	$(BIN)/python bench/nlp_latency.py
	$(BIN)/python bench/traffic_throughput.py
	$(BIN)/deepflow run fraud nlp traffic
	for uc in fraud nlp traffic; do $(BIN)/python bench/serving_latency.py --use-case $$uc; done
	$(BIN)/python bench/batch_scoring.py

ui: bootstrap
	$(BIN)/deepflow ui

schedule: bootstrap data
	$(BIN)/deepflow schedule

# Re-resolve the lock after editing requirements/requirements.in (pip sees the local torch wheel).
lock:
	rm -rf .lock-venv && python3.11 -m venv .lock-venv
	.lock-venv/bin/pip install -q -r requirements/requirements.in
	.lock-venv/bin/pip freeze --exclude-editable > requirements/lock.txt
	rm -rf .lock-venv

clean:
	rm -rf reports .prefect mlflow/mlflow.db mlflow/artifacts
