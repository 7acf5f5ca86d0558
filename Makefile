# The two commands a fresh machine needs (as root): `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint bench bt-matrix bt-report deps clean need-root

deps:
	bash scripts/install-deps.sh

need-root:
	@[ "$$(id -u)" = 0 ] || { echo "make $(MAKECMDGOALS) needs root: the lab builds network namespaces, veth links and NFQUEUE rules (sudo make $(MAKECMDGOALS))" >&2; exit 2; }

demo: need-root deps
	bash scripts/install-bt-lab.sh
	$(BIN)/python -m lab.demo

test: deps lint
	$(BIN)/python -m twisted.trial tests

# make test and the variants it leaves out (kernel enforcement by ipset beside nft sets).
test-slow: deps lint
	P2PWALL_SLOW=1 $(BIN)/python -m twisted.trial tests

lint: deps
	$(BIN)/ruff check p2pwall tests lab bench twisted setup.py

bench: need-root deps
	$(BIN)/python -m bench.run

# The real BitTorrent clients behind the daemon (issue 11): the e2e matrix (~13 min) and the
# full report (~1 h), which rewrites the table in README.md.
bt-matrix: need-root deps
	bash scripts/install-bt-lab.sh
	P2PWALL_BT_MATRIX=1 $(BIN)/python -m twisted.trial tests.e2e.test_btblock

bt-report: need-root deps
	bash scripts/install-bt-lab.sh
	$(BIN)/python -m bench.btreport --splice README.md

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
