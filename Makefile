# Every target sets up .venv on first use, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint test-systemd bench dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/blink-watcher demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Everything: unit, integration, and the real-systemd test (which skips, saying
# why, where the machine cannot run systemd in a private namespace).
test: lint
	$(BIN)/pytest -q -rs

test-systemd: $(STAMP)
	$(BIN)/pytest -q -rs tests/systemd

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.postgres

# A wheel and an sdist in dist/: one file to copy to a host (systemd/README.md).
dist: $(STAMP)
	$(BIN)/pip install --quiet build
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	@ls -1 dist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
