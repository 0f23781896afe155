# The two set-up commands of the README: `make demo` and `make test`.
# Both install what they need: Debian's mosquitto and influxdb, a virtualenv with the project.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit lint typecheck check bench system-deps venv clean

demo: system-deps $(STAMP)
	$(PY) -m gateway demo

test: system-deps $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# lint-imports checks the import contracts of pyproject.toml (make test runs them too:
# tests/unit/test_import_contracts.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck

bench: system-deps $(STAMP)
	$(PY) -m bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + ")")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@./scripts/system-deps.sh

clean:
	rm -rf $(VENV) var build *.egg-info
