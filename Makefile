# Two commands do all the set-up: `make demo` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv

.PHONY: demo test soak fuzz check lint typecheck bench bench-quick clean

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv

# The demo needs only the package and its runtime dependencies. --inexact keeps what `make test` installed.
$(VENV)/.synced-demo: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --no-default-groups --inexact
	touch $@

# Tests, lint, types and benchmarks: the dev group (pytest, mypy, ruff, playwright, the drivers) and the
# bench group (test_bench runs the suite against eventsourcing).
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --all-groups
	touch $@

demo: $(VENV)/.synced-demo
	$(VENV)/bin/epoch demo

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

# The whole suite: lint, types, then pytest. PostgreSQL is a private throwaway cluster that
# scripts/test starts (and stops) unless EPOCH_TEST_PG_DSN names one already; so is NATS JetStream
# (a nats-server) unless EPOCH_TEST_NATS_URL names one.
test: lint typecheck
	scripts/test

# The long fuzz run: every property-based test (each test file importing hypothesis) with
# EPOCH_FUZZ_EXAMPLES examples each (default 2000; `make test` runs the same tests with 60), against
# the same real stores as `make test`.
fuzz: $(VENV)/.synced
	EPOCH_FUZZ_PROFILE=long scripts/test $$(grep -l 'from hypothesis import' tests/test_*.py) -p no:cacheprovider -q --timeout=0

# The long fault and soak runs (about 15 minutes): 1,000,000 events through read_all, a projection and
# epoch copy; 600 s of mixed load on PostgreSQL; 200 SIGKILLs per store; 20 PostgreSQL restarts. Each
# figure can be overridden from the environment (e.g. EPOCH_SOAK_SECONDS=60 make soak). `make test`
# runs the same tests in their short versions. The figures land in .soak/*.json (short: .soak/short/).
soak: lint typecheck
	rm -f .soak/*.json
	EPOCH_SOAK_EVENTS=$${EPOCH_SOAK_EVENTS:-1000000} EPOCH_SOAK_SECONDS=$${EPOCH_SOAK_SECONDS:-600} \
	EPOCH_FAULT_KILLS=$${EPOCH_FAULT_KILLS:-200} EPOCH_FAULT_RESTARTS=$${EPOCH_FAULT_RESTARTS:-20} \
	EPOCH_SOAK_REPORT_DIR=.soak scripts/test tests/test_soak.py tests/test_faults.py -s -q
	@echo "figures: $$(ls .soak/*.json)"

bench: $(VENV)/.synced
	$(VENV)/bin/epoch bench

bench-quick: $(VENV)/.synced
	$(VENV)/bin/epoch bench --quick

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache epoch.db*
