# LatScope: `make demo` runs the whole pipeline on namespaces; `make test` passes the suite.
# Both set up what is missing first (idempotent; heavy builds are cached in ~/.cache/latscope).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LATSCOPE := $(VENV)/bin/latscope
APT_PACKAGES := gcc libc6-dev python3-dev clang llvm bpftool libbpf-dev libbpf1 iperf3 iproute2 maven openjdk-17-jre-headless pkg-config docker-compose
PYTEST_ARGS ?=

.PHONY: setup apt venv provision stack-up bpf test demo lint bench clean help

help:
	@echo "make demo   - set up what is missing, then run the default topology end to end"
	@echo "make test   - set up what is missing, start the local stack, run the test suite"
	@echo "make setup  - apt packages, Python venv, Kafka jars, influxd build (all cached)"
	@echo "make lint   - ruff"
	@echo "make bench  - the benchmarks in benchmarks/ (ratios measured side by side)"

setup: apt venv provision bpf

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The editable install also builds the C extensions (setup.py: stream/, stats/ and sinks/
# native/): again when their sources change.
$(VENV)/.installed: pyproject.toml setup.py $(wildcard stream/native/*.[ch] stats/native/*.[ch] sinks/native/*.[ch])
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

provision: venv
	$(LATSCOPE) stack up

stack-up: provision

-include bpf.mk

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	@mkdir -p out
	$(LATSCOPE) demo --json out/demo-summary.json

lint: venv
	$(VENV)/bin/ruff check .

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build out
