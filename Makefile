# The two commands a fresh machine needs (as root): `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench deps clean

deps:
	bash scripts/install-deps.sh

demo: deps
	$(BIN)/python -m lab.demo

test: deps lint
	$(BIN)/python -m twisted.trial tests

lint: deps
	$(BIN)/ruff check p2pwall tests lab bench twisted

bench: deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
