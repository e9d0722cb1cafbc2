# One command each: `make run` serves the demo, `make test` runs every test tier.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: venv tools run test test-unit test-integration test-security test-e2e lint format samples model manifests openapi clean

venv: $(STAMP)

# Reinstall when the project's dependencies change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	BIN=$(BIN) bash scripts/run_local.sh configs/serve.local.yaml

# Debian tools the tests use: promtool (package prometheus) checks the metrics exposition;
# chromium and its chromedriver run the web console's tests in a real browser.
DEBIAN_TOOLS := promtool:prometheus chromium:chromium chromedriver:chromium-driver
tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Fast tiers first: unit (no Ray), integration (one local Ray), security (the platform
# attacked over HTTP, its own local Ray), e2e (serve run, ray start + tenantctl, TLS).
test: $(STAMP) tools
	$(BIN)/pytest -q tests/unit tests/integration tests/security tests/e2e

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

test-security: $(STAMP)
	$(BIN)/pytest -q tests/security

test-e2e: $(STAMP) tools
	$(BIN)/pytest -q tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy serve_app tenant_registry scripts

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate the committed demo model (about 15 min on 2 CPU cores) and samples.
model: $(STAMP)
	$(BIN)/python scripts/train_demo_model.py

samples: $(STAMP)
	$(BIN)/python scripts/make_samples.py

# kuberay-cluster.yaml is `tenantctl render --format rayservice` of the example tenants
# (scripts/example_tenants.py); a unit test fails when the two drift apart.
manifests: $(STAMP)
	@rm -f var/example-tenants.db && mkdir -p var
	$(BIN)/python scripts/example_tenants.py --db var/example-tenants.db
	$(BIN)/tenantctl --db var/example-tenants.db render --format rayservice -o kuberay-cluster.yaml
	$(BIN)/tenantctl validate kuberay-cluster.yaml
	$(BIN)/tenantctl validate configs/batch-job.rayjob.yaml

# docs/openapi.json is what GET /openapi.json serves (serve_app/http/openapi.py); a unit
# test fails when the two drift apart.
openapi: $(STAMP)
	$(BIN)/python -c 'from serve_app.http import openapi; import sys; sys.stdout.buffer.write(openapi.document_bytes())' >docs/openapi.json

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
