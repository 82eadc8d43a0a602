# One entry point for newcomers and CI. `make test` works from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: test system-deps venv lint clean

test: system-deps venv
	$(BIN)/pytest --cov=orchestrator --cov-report=term-missing --cov-fail-under=80 $(PYTEST_ARGS)

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
