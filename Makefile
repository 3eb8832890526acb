# The two commands a newcomer needs: `make run` and `make test`.
# Both build a local virtual environment from nothing (only python3, pip and make needed).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Until the gRPC service lands, `make run` checks the shipped policies, runs their
# tests and prints the decision for each seed example.
run: $(STAMP)
	$(BIN)/pol check policies
	$(BIN)/pol test policies
	$(BIN)/pol eval --policies policies --jsonl policies/examples/seed.jsonl

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
