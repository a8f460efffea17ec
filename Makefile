# `make demo` and `make test` each build (or refresh) .venv, install the project with the
# pinned CPU torch from constraints.txt, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,data]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/attackgen demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff, then mypy over taxonomy and attackgen (config: [tool.mypy] in pyproject.toml); both must pass.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/threat_space.py

clean:
	rm -rf $(VENV) .pytest_cache runs
