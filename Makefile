# The two commands a newcomer needs: `make run` and `make test`.
# Both build a local virtual environment from nothing (only python3, pip and make needed).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run demo test bench proto lint-proto clean

$(STAMP): pyproject.toml engine/_native.c server/_wire.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make run` serves the shipped policies over gRPC in the foreground (Ctrl-C drains and
# stops). It refuses to start if the set has errors or failing tests.
run: $(STAMP)
	$(BIN)/pol serve --policies policies --address 127.0.0.1:50051

# Without a server: check the shipped policies, run their tests, decide the seed examples.
demo: $(STAMP)
	$(BIN)/pol check policies
	$(BIN)/pol test policies
	$(BIN)/pol eval --policies policies --jsonl policies/examples/seed.jsonl

# Regenerate server/gen/ from proto/ (needs the [test] extra, which pins grpcio-tools).
proto: $(STAMP)
	$(BIN)/python -m server.gen.regenerate

# Lint the API with buf's default rules (buf from npm; needs node).
lint-proto:
	npx --yes @bufbuild/buf lint

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
