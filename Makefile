# One command each for the quick start; both install what they need into .venv.
VENV ?= .venv
PYTHON ?= python3

.PHONY: install dev test test-all bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,harness]'
	touch $@

install: $(VENV)/.installed

dev: install  ## run a local 3-node cluster on 127.0.0.1:7001-7003
	$(VENV)/bin/raftkv dev

test: install  ## the default test suite (what CI runs)
	$(VENV)/bin/pytest -q

test-all: install  ## also the slow tests
	$(VENV)/bin/pytest -q -m ''

bench: install  ## a short benchmark: a native 3-node cluster driven by wrk, 1 round of 3 s per workload
	$(VENV)/bin/python bench/cluster_bench.py --engines native --duration 3 --rounds 1

clean:
	rm -rf .raftkv-dev build *.egg-info
