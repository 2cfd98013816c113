# Two commands from a fresh clone: `make test` and `make repro` (each creates .venv on first use).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test repro

setup: $(VENV)/.installed

# Reinstalls when pyproject.toml changes. torch is pinned to the CPU wheel (see pyproject.toml).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

# Stages run `python -m stages.<name>`: the venv comes first on PATH so that python is this one.
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
