# Set-up and everyday commands. `make demo` then `make test` on a fresh clone is all a new user needs.
# TORCH pins the CPU build that installs offline; override for a GPU machine: `make TORCH=torch setup`.
TORCH ?= torch==2.13.0
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACK_STAMP := $(VENV)/.installed-track

.PHONY: setup demo test test-slow test-all bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,slurm]"
	touch $(STAMP)

# The trackers' packages (tensorboard, mlflow) only for the tests of learnscope.tracking: not a dependency.
$(TRACK_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[track]"
	touch $(TRACK_STAMP)

demo: setup
	$(BIN)/learnscope demo
	@echo "learnscope is installed in .venv: put it on your PATH with  source .venv/bin/activate  (or call .venv/bin/learnscope)"

# The suite on every core (pytest-xdist), one test at a time to the next free worker. `make test` is the
# everyday run, without the `slow` acceptance tests (each reproduces a study at tiny scale or kills runs for
# minutes); `make test-slow` runs those, the slowest first (tests/conftest.py) so none queues at the end; CI
# (.ci/run) runs both; `make test-all` runs everything in one go.
PYTEST := $(BIN)/pytest -q -n auto --dist load --maxschedchunk 1 --durations=15

test: setup $(TRACK_STAMP)
	$(PYTEST) -m "not slow"

test-slow: setup $(TRACK_STAMP)
	$(PYTEST) -m slow

test-all: setup $(TRACK_STAMP)
	$(PYTEST)

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
