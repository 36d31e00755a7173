# Oz developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=

# The venv is reinstalled only when a requirements file changes.
REQUIREMENTS := requirements.txt requirements-dev.txt
REQ_SHA := $(shell cat $(REQUIREMENTS) 2>/dev/null | sha256sum | cut -c1-16)
VENV_STAMP := $(VENV)/.installed-$(REQ_SHA)

.PHONY: help venv run demo test lint bench clean

help:
	@echo "make run    - migrate, load predictors/, create demo users, serve http://$(HOST):$(PORT) (SQLite, Celery eager)"
	@echo "make demo   - play the whole loop on loan-approval in a fresh demo database (demo.sqlite3), then serve it"
	@echo "make test   - pytest against a throwaway PostgreSQL + Redis (PYTEST_ARGS=\"-k foo\")"
	@echo "make lint   - ruff check"
	@echo "make bench  - every benchmark on a throwaway PostgreSQL + Redis (BENCHES=..., BENCH_ARGS=--quick)"
	@echo "make venv   - create/refresh .venv from requirements-dev.txt"
	@echo "make clean  - remove .venv, caches and collected static files"

venv: $(VENV_STAMP)

$(VENV_STAMP):
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

# Target-specific exports: every recipe line of `run` sees them. An explicit DATABASE_URL
# in the caller's environment still wins (config/settings/base.py reads it).
run: export DJANGO_SETTINGS_MODULE := config.settings.local
run: export CELERY_TASK_ALWAYS_EAGER := true
run: venv
	$(VPY) manage.py migrate --noinput
	$(VPY) manage.py load_predictors predictors/
	$(VPY) manage.py bootstrap_demo --host $(HOST):$(PORT)
	exec $(VPY) manage.py run_local $(HOST):$(PORT)

# The scenario needs a predictor with no history: it gets its own database, new each time,
# and then serves it so the admin shows what happened (same logins as `make run`).
DEMO_DB := $(CURDIR)/demo.sqlite3
DEMO_ARGS ?=
demo: export DJANGO_SETTINGS_MODULE := config.settings.local
demo: export CELERY_TASK_ALWAYS_EAGER := true
demo: export DATABASE_URL := sqlite:///$(DEMO_DB)
demo: venv
	rm -f $(DEMO_DB)
	$(VPY) manage.py migrate --noinput
	$(VPY) manage.py load_predictors predictors/
	$(VPY) manage.py demo_traffic loan-approval --scenario $(DEMO_ARGS)
	$(VPY) manage.py bootstrap_demo --host $(HOST):$(PORT)
	exec $(VPY) manage.py run_local $(HOST):$(PORT)

test: venv
	scripts/testenv.sh $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	@if [ -x $(VENV)/bin/ruff ]; then \
		$(VENV)/bin/ruff check . ; \
	else \
		echo "ruff is not installed in $(VENV) (see requirements-dev.txt); skipping lint"; \
	fi

# Every benchmark, on a throwaway PostgreSQL + Redis (scripts/testenv.sh): /predict over HTTP
# beside MLflow, MLServer and bare WSGI apps (the peers' virtualenvs are built in bench/.venvs
# on first use), the review queue, training and export. Each prints a table and writes
# bench/results/<name>.json. BENCHES="predict_http" runs one; BENCH_ARGS="--quick" all small.
BENCHES ?= predict_http review_queue training export
bench: venv
	scripts/ensure-system-deps.sh wrk
	scripts/testenv.sh bash -c 'set -e; for b in $(BENCHES); do echo "== bench/$$b.py $(BENCH_ARGS)"; $(VPY) bench/$$b.py $(BENCH_ARGS); done'

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
