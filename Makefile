# Two commands from a fresh clone: `make test` and `make repro` (each creates .venv on first use).
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist: one worker per core (at most 4); most tests wait on subprocesses and imports on one core.
PYTEST := $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal --durations 15

.PHONY: setup test test-slow repro

setup: $(VENV)/.installed

# Reinstalls when pyproject.toml changes. torch is pinned to the CPU wheel (see pyproject.toml).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The unit and integration tests (minutes); test-slow: the end-to-end tier, real `dvc` on copies of the
# tiny pipeline (CI runs both).
test: setup
	$(PYTEST) -m "not slow"

test-slow: setup
	$(PYTEST) -m slow

# Stages run `python -m stages.<name>`: the venv comes first on PATH so that python is this one.
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
