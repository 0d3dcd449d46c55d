# LatScope: `make demo` runs the whole pipeline on namespaces; `make test` passes the suite.
# Both set up what is missing first (idempotent; heavy builds are cached in ~/.cache/latscope).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LATSCOPE := $(VENV)/bin/latscope
APT_PACKAGES := gcc libc6-dev python3-dev clang llvm bpftool libbpf-dev libbpf1 iperf3 sockperf iproute2 maven openjdk-17-jre-headless pkg-config docker-compose chromium openssh-server openssh-client sudo systemd-container
PYTEST_ARGS ?=

.PHONY: setup apt venv provision stack-up bpf bpf-clean wheel test demo lint bench faults clean help

help:
	@echo "make demo   - set up what is missing, then run the default topology end to end"
	@echo "make test   - set up what is missing, start the local stack, run the test suite"
	@echo "make setup  - apt packages, Python venv, Kafka jars, influxd build (all cached)"
	@echo "make lint   - ruff"
	@echo "make bench  - the benchmarks in benchmarks/ (ratios measured side by side)"
	@echo "make faults - the fault suite (tests/faults) as one table: lost, recovery, met/missed"
	@echo "make bpf    - (re)compile the BPF objects into build/bpf (what a checkout loads)"
	@echo "make wheel  - dist/latscope-*.whl: installs on a server with no compiler or make"

setup: apt venv provision bpf

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The editable install also builds the C extensions (setup.py: bpf/, producers/, stream/, stats/, sinks/
# native/) and the BPF objects (clang and bpftool from `apt`): again when their sources change.
$(VENV)/.installed: pyproject.toml setup.py $(wildcard bpf/native/*.[ch] producers/native/*.[ch] stream/native/*.[ch] stats/native/*.[ch] sinks/native/*.[ch]) | apt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

provision: venv
	$(LATSCOPE) stack up

stack-up: provision

# BPF objects: bpf/build.py is the one definition of sources and flags (setup.py uses it for
# wheels and the editable install). It recompiles what is older than its sources into
# build/bpf; nothing compiles at run time, so `setup` (and so `test`) runs it every time.
bpf:
	$(PYTHON) bpf/build.py

bpf-clean:
	rm -rf build/bpf

# A wheel with the C extension and the compiled BPF objects (latscope/bpf/objects). The
# in-tree build/lib goes first, so nothing deleted from the sources lingers in the wheel.
wheel: venv
	rm -rf build/lib.* build/bdist.*
	$(PY) -m pip wheel -q --no-deps -w dist .
	@ls -1 dist/latscope-*.whl

test: setup
	$(VENV)/bin/ruff check .
	LATSCOPE_TESTS_STRICT=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	@mkdir -p out
	$(LATSCOPE) demo --json out/demo-summary.json --report out/report

lint: venv
	$(VENV)/bin/ruff check .

bench: setup
	@status=0; for b in benchmarks/agent_overhead.py benchmarks/agent_replay.py \
	  benchmarks/sync_accuracy.py benchmarks/stream_throughput.py benchmarks/stream_cpu.py; do \
	  echo "== $$b"; $(PY) $$b --check || status=1; done; exit $$status

# tests/faults also runs in `make test`; this prints its one table (benchmarks/faults.py).
faults: setup
	$(PY) benchmarks/faults.py --check

clean:
	rm -rf build out dist
