# The README's commands. `make run` and `make test` install into .venv first (once per pyproject change).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODES ?= 10
RUN_CONFIG ?= algorithm='fedncalign-ml' preset='ml-digits-skewed' num-server-rounds=10

.PHONY: install run test test-fast clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

run: install
	$(BIN)/python -m fedapp.simulate --nodes $(NODES) -c "$(RUN_CONFIG)"

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf .flwr .pytest_cache outputs
