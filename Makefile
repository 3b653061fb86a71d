# One-command set-up and tests. Everything installs into .venv; servers into ~/.cache/vlgenrm.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
INFRA  := PYTHONPATH=scripts/infra $(PY) -m localinfra
PYTEST_ARGS ?=

.PHONY: help install system-deps lint format test test-quick demo fidelity base infra-up infra-down infra-status schemas clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "pip==25.3" "setuptools==80.9.0" "wheel==0.48.0"
	$(PY) -m pip install -q -c constraints.txt --no-build-isolation -e '.[dev,ml,experts,ray,operator]'
	@touch $(STAMP)

install: $(STAMP) ## Create or reuse .venv and install vlgenrm with its pinned dependencies

infra-up: install ## Install (cached) and start Kafka, the S3 server, etcd and kube-apiserver on 127.0.0.1; build Helm
	$(INFRA) up

infra-down: ## Stop the local servers (Kafka, S3, kube-apiserver, etcd)
	@test -x $(PY) && $(INFRA) down || true

infra-status: install ## Show the local servers
	$(INFRA) status

system-deps: ## Install missing system packages (tesseract) where possible
	@bash scripts/install-system-deps.sh

lint: install ## ruff: the formatter's check and the linter (pyproject.toml [tool.ruff]); make format fixes what it can
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install ## Format the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install system-deps infra-up ## The whole suite, against real Kafka, S3 and Kubernetes API (servers stay up: make infra-down)
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: install ## The tests that need no server and no big data
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

base: install ## Build (or find in the cache) the embedded base VLM and print its ladder
	$(VENV)/bin/vlgenrm --log-level WARNING base build

demo: install system-deps ## The whole loop on this machine: 2 iterations with and without experts (biased labeler), report in vlgenrm-report/
	$(VENV)/bin/vlgenrm --set store.root=$(CURDIR)/.demo/store --log-level WARNING run --ablate-experts --report vlgenrm-report

fidelity: install system-deps ## The ablation table: full method, no experts, no evidence, no margin filter, no verdict loss; 2 iterations x 3 seeds; report in vlgenrm-fidelity/
	$(VENV)/bin/vlgenrm --set store.root=$(CURDIR)/.demo/store --log-level WARNING run --ablations --report vlgenrm-fidelity

schemas: install ## Re-export the JSON Schemas of the contracts into schemas/
	$(VENV)/bin/vlgenrm schemas export --out schemas

clean: infra-down ## Remove the venv, build outputs and server state (the server cache stays)
	rm -rf $(VENV) .infra build dist *.egg-info .pytest_cache
