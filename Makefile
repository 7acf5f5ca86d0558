# The two commands a fresh machine needs (as root): `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench deps clean need-root

deps:
	bash scripts/install-deps.sh

need-root:
	@[ "$$(id -u)" = 0 ] || { echo "make $(MAKECMDGOALS) needs root: the lab builds network namespaces, veth links and NFQUEUE rules (sudo make $(MAKECMDGOALS))" >&2; exit 2; }

demo: need-root deps
	bash scripts/install-bt-lab.sh
	$(BIN)/python -m lab.demo

test: deps lint
	$(BIN)/python -m twisted.trial tests

lint: deps
	$(BIN)/ruff check p2pwall tests lab bench twisted setup.py

bench: need-root deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
