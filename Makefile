# Tidegate: every target CI and people call. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[services,dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install Tidegate with pinned dependencies

.PHONY: infra-up
infra-up: install ## Start Kafka and PostgreSQL (downloading/installing what is missing) and create the topics
	$(BIN)/tidegate infra up

.PHONY: infra-down
infra-down: install ## Stop the Kafka and PostgreSQL that infra-up started
	$(BIN)/tidegate infra down

.PHONY: infra-status
infra-status: install ## Show what runs, where, and where its logs are
	$(BIN)/tidegate infra status

.PHONY: up
up: infra-up ## Start every service in the background (supervised)
	$(BIN)/tidegate up --detach

.PHONY: down
down: install ## Stop the services, then the infrastructure
	$(BIN)/tidegate down
	$(BIN)/tidegate infra down

# Stripe's own stand-in, stripe-mock, built with `go install` (the version `standins.stripe_mock` names).
STRIPE_MOCK := .tidegate/bin/stripe-mock
$(STRIPE_MOCK): | $(STAMP)
	$(BIN)/python -c "from pathlib import Path; from standins import ensure_stripe_mock; ensure_stripe_mock(Path('.tidegate/bin'))"

.PHONY: stripe-mock
stripe-mock: $(STRIPE_MOCK) ## Build Stripe's stripe-mock into .tidegate/bin (the demo's and the tests' Stripe stand-in)

.PHONY: demo
demo: infra-up $(STRIPE_MOCK) ## Set everything up and run the support-triage demo end to end (Zendesk and Stripe stand-ins, offline)
	$(BIN)/tidegate demo

.PHONY: test
# The adapters' three venvs are built side by side (-j3: 1.5 min instead of 2.5 on 2 cores), and they and their offline
# tests (~2.2 min in all) run beside the unit suite, which keeps one core (their output is printed once both are done;
# an interrupted run stops them too);
# the long suite names its 15 slowest tests, to keep the whole run near 20 minutes.
# `make test` runs the tests on the real broker and database but those marked `alone` (they set what the whole broker
# holds: quotas, every prefix's rights), then those, from the files that mark them (tests/unit/foundation/
# test_alone_marks.py holds each such test to the mark, in its own file). TEST_WORKERS=2 runs the unit tests and the
# first set on two pytest-xdist workers (one file per worker at a time; each worker's session has a database and roles
# of its own, each test its own topic prefix): not yet the default, since it is not proven green on a loaded machine.
TEST_WORKERS ?= 0
LIVE_TESTS := tests/integration tests/security tests/e2e

test: install ## Everything from nothing: venv, infra up, unit + integration + e2e tests, infra down
	@set -o pipefail; rc=0; \
	$(BIN)/tidegate infra up || exit $$?; \
	bash tests/e2e/approval/browser_deps.sh || exit $$?; \
	adapters_log=$$(mktemp); $(MAKE) -j3 integrations-test >"$$adapters_log" 2>&1 & adapters=$$!; \
	trap 'kill $$adapters 2>/dev/null; rm -f "$$adapters_log"' EXIT; \
	$(BIN)/pytest tests/unit -q -p no:cacheprovider -n $(TEST_WORKERS) || rc=$$?; \
	wait $$adapters || { arc=$$?; [ $$rc -ne 0 ] || rc=$$arc; }; trap - EXIT; cat "$$adapters_log"; rm -f "$$adapters_log"; \
	if [ $$rc -eq 0 ]; then $(BIN)/pytest $(LIVE_TESTS) -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile -m 'not alone' --durations=15 || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then $(BIN)/pytest $$(grep -rl --include='*.py' 'mark\.alone' $(LIVE_TESTS)) -q -p no:cacheprovider -m alone || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then $(BIN)/pytest tests/chaos -q -p no:cacheprovider --ignore=tests/chaos/test_session_expiry.py || rc=$$?; fi; \
	$(BIN)/tidegate infra down || true; \
	exit $$rc

INT_VENV := .venv-integrations
INT_STAMP := $(INT_VENV)/.installed

# The framework adapters' own venv: langchain pins a newer certifi and openai-agents a newer openai than the services'
# lock allows, so they get a venv of their own with only what tidegate.client needs (schemas, pydantic, aiokafka).
$(INT_STAMP): integrations/requirements.lock
	@test -x $(INT_VENV)/bin/python || $(PY) -m venv $(INT_VENV)
	$(INT_VENV)/bin/pip install -q --upgrade pip
	$(INT_VENV)/bin/pip install -q -r integrations/requirements.lock
	@touch $(INT_STAMP)

# CrewAI pins mcp<2 and pydantic<2.13: a venv of its own again.
CREW_VENV := .venv-crewai
CREW_STAMP := $(CREW_VENV)/.installed
$(CREW_STAMP): integrations/requirements-crewai.lock
	@test -x $(CREW_VENV)/bin/python || $(PY) -m venv $(CREW_VENV)
	$(CREW_VENV)/bin/pip install -q --upgrade pip
	$(CREW_VENV)/bin/pip install -q -r integrations/requirements-crewai.lock
	@touch $(CREW_STAMP)

# AutoGen 0.7's autogen-core pins protobuf 5, which Temporal's SDK in the adapters' venv outgrew: a venv of its own too.
AG_VENV := .venv-autogen
AG_STAMP := $(AG_VENV)/.installed
$(AG_STAMP): integrations/requirements-autogen.lock
	@test -x $(AG_VENV)/bin/python || $(PY) -m venv $(AG_VENV)
	$(AG_VENV)/bin/pip install -q --upgrade pip
	$(AG_VENV)/bin/pip install -q -r integrations/requirements-autogen.lock
	@touch $(AG_STAMP)

.PHONY: integrations-test
integrations-test: $(INT_STAMP) $(CREW_STAMP) $(AG_STAMP) ## Offline tests of the framework adapters (real frameworks, scripted models), in their own venvs
	PYTHONPATH=$(CURDIR) $(INT_VENV)/bin/pytest integrations/tests -q -p no:cacheprovider
	PYTHONPATH=$(CURDIR) $(CREW_VENV)/bin/pytest integrations/crewai_tests -q -p no:cacheprovider
	PYTHONPATH=$(CURDIR) $(AG_VENV)/bin/pytest integrations/autogen_tests -q -p no:cacheprovider

.PHONY: browser-deps
browser-deps: ## Install Debian's chromium (the approver page's browser test), faketime (the clock-skew test) and promtool (the alert rules' test) when missing (idempotent; needs root or sudo)
	bash tests/e2e/approval/browser_deps.sh

.PHONY: test-unit
test-unit: install ## Unit tests only (no network, seconds)
	$(BIN)/pytest tests/unit -q

.PHONY: test-integration
test-integration: infra-up ## Integration, security and e2e tests against the running infrastructure
	$(BIN)/pytest tests/integration tests/security tests/e2e -q

CHAOS := PYTHONPATH=$(CURDIR):$(CURDIR)/tests:$(CURDIR)/tests/chaos $(BIN)/python tests/chaos/chaos_run.py

.PHONY: test-chaos
test-chaos: install ## The full chaos suite on its own Kafka (one node, then three) and PostgreSQL: every fault in turn under load (~25 min)
	$(CHAOS) --brokers 1
	$(CHAOS) --brokers 3

.PHONY: test-sessions
test-sessions: install ## Kafka sessions of 8 s under load, a broker restart and a leaked password's holder (~10 min; not in `make test` until runs since the policy waits for an unread tasks group close every task, docs/security/bus.md)
	$(BIN)/tidegate infra up
	PYTHONPATH=$(CURDIR) $(BIN)/pytest tests/chaos/test_session_expiry.py -q -p no:cacheprovider; rc=$$?; $(BIN)/tidegate infra down || true; exit $$rc

.PHONY: test-fuzz
test-fuzz: install ## The fuzz tests with many examples (FUZZ_EXAMPLES, default 2000; `make test` runs 40)
	TIDEGATE_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),2000) $(BIN)/pytest tests/unit/fuzz -q -p no:cacheprovider -o timeout=3600

.PHONY: test-recovery
test-recovery: install ## The recovery tests with aiokafka's own 40 s request timeout and a broker outage past it (minutes)
	TIDEGATE_RECOVERY_LONG=1 $(BIN)/pytest tests/integration/recovery -q -p no:cacheprovider

.PHONY: lint
lint: install ## ruff (lint + format check) and mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: fmt
fmt: install ## Format and fix imports
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: contract
contract: install ## Regenerate docs/contract (JSON Schema + AsyncAPI) from schemas/, and the approval API's OpenAPI from its app
	$(BIN)/python -m schemas.export docs/contract
	$(BIN)/python -m services.approval._openapi docs/contract

.PHONY: settings-doc
settings-doc: install ## Regenerate docs/settings.md (every TIDEGATE_* setting: default, what it accepts, what it does) from the settings' models
	$(BIN)/python -m tidegate.settings_reference docs/settings.md

.PHONY: cli-index
cli-index: install ## Regenerate tidegate/cli_index.json (each command's name, module and help: what `tidegate --help` lists without importing the modules)
	$(BIN)/python -m tidegate.cli_lazy

.PHONY: bench
bench: infra-up ## Run every benchmark (short; FULL=1 for the long ones) and write docs/benchmarks.md (figures beside bare limits)
	$(BIN)/python -m bench.report $(if $(FULL),--full,) --save artifacts/bench-figures.json
