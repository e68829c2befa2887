# Two commands do all the set-up: `make demo` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv

.PHONY: demo test check lint typecheck fuzz bench bench-quick clean

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q uv

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --all-groups
	touch $@

demo: $(VENV)/.synced
	$(VENV)/bin/epoch demo

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

# The whole suite: lint, types, then pytest. PostgreSQL is a private throwaway cluster that
# scripts/test starts (and stops) unless EPOCH_TEST_PG_DSN names one already.
test: lint typecheck
	scripts/test

# The long fuzz run: every property-based test (each test file importing hypothesis) with EPOCH_FUZZ_EXAMPLES examples each (default 2000;
# `make test` runs the same tests with 60). Against the same real stores as `make test`.
fuzz: $(VENV)/.synced
	EPOCH_FUZZ_PROFILE=long scripts/test $$(grep -l 'from hypothesis import' tests/test_*.py) -p no:cacheprovider -q --timeout=0

bench: $(VENV)/.synced
	$(VENV)/bin/epoch bench

bench-quick: $(VENV)/.synced
	$(VENV)/bin/epoch bench --quick

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache epoch.db*
