# carsite — `make run` serves the site on http://127.0.0.1:8000, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA ?= $(abspath ../shared/data)
SPECS_CSV := $(SHARED_DATA)/specs/car_specs.csv
# The embedded default: SQLite, in-process tasks, debug pages, local media under var/.
RUN_ENV := DEBUG=$${DEBUG-1} CARSITE_SHARED_DATA_DIR=$(SHARED_DATA)
# The set-up commands print their own summaries; the log says only what goes wrong.
SETUP_ENV := $(RUN_ENV) LOG_LEVEL=$${LOG_LEVEL-WARNING}

.PHONY: install lock run setup test lint

install: $(VENV)/.installed

# The versions in requirements.lock (pip constraints), so every install gets what was tested.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev,train,serve]'
	touch $@

# After a dependency change in pyproject.toml: install it unconstrained, then record what was installed.
lock:
	$(PY) -m pip install --quiet -e '.[dev,train,serve]'
	{ echo "# Every dependency's version, as tested: pip constraints for make install, the serving install and the image."; \
	  echo "# Regenerate with 'make lock' after changing pyproject.toml's dependencies."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^carsite' | LC_ALL=C sort -f; } > requirements.lock

setup: install
	$(SETUP_ENV) $(PY) manage.py migrate --noinput -v 0
	$(SETUP_ENV) $(PY) manage.py load_catalog
	@if [ -f "$(SPECS_CSV)" ]; then $(SETUP_ENV) $(PY) manage.py import_specs --create-missing "$(SPECS_CSV)"; \
	else echo "No spec CSV at $(SPECS_CSV): skipping import_specs."; fi
	$(SETUP_ENV) $(PY) manage.py setup_demo

run: setup
	$(RUN_ENV) $(PY) manage.py runserver 127.0.0.1:8000

test: install
	bash scripts/test

lint: install
	$(VENV)/bin/ruff check .
