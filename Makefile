# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOT ?= var
HOST ?= 127.0.0.1
PORT ?= 2121
HYPOTHESIS_PROFILE ?= dev
PYTEST_ARGS ?=

.PHONY: venv run test lint coverage bench bench-quick bench-charts fuzz clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: venv
	$(BIN)/python -m ftpd.demo --root $(ROOT) --host $(HOST) --port $(PORT)

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --hypothesis-profile=$(HYPOTHESIS_PROFILE) $(PYTEST_ARGS)

# The whole suite with branch coverage measured in the test process and in every Python
# subprocess (daemons, ftpc): the .pth starts coverage in any process that finds
# COVERAGE_PROCESS_START set.  Report on stdout, HTML in htmlcov/.
COVERAGE_PTH = import os; os.environ.get("COVERAGE_PROCESS_START") and __import__("coverage").process_startup()

coverage: venv
	$(BIN)/python -c 'import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_path("purelib"), "ftpd-coverage.pth").write_text(sys.argv[1] + "\n")' '$(COVERAGE_PTH)'
	rm -rf .coverage .coverage.* htmlcov
	COVERAGE_PROCESS_START=$(CURDIR)/.coveragerc COVERAGE_ROOT=$(CURDIR) \
		$(BIN)/python -m pytest -q -p no:cacheprovider --hypothesis-profile=$(HYPOTHESIS_PROFILE) $(PYTEST_ARGS); \
	status=$$?; \
	COVERAGE_ROOT=$(CURDIR) $(BIN)/coverage combine -q --rcfile=.coveragerc && \
	COVERAGE_ROOT=$(CURDIR) $(BIN)/coverage html -q --rcfile=.coveragerc && \
	COVERAGE_ROOT=$(CURDIR) $(BIN)/coverage report --rcfile=.coveragerc; \
	exit $$status

$(VENV)/.bench-installed: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run

bench-quick: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run --quick

# Redraw the newest full run's charts, also as docs/bench/<family>.png for BENCHMARKS.md.
bench-charts: $(VENV)/.bench-installed
	$(BIN)/python -m bench.charts --latest --docs

fuzz: venv
	$(BIN)/python -m pip install --quiet -e '.[fuzz]'
	$(BIN)/python -m tests.fuzz_decoder -max_total_time=$${FUZZ_SECONDS:-120}

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .ruff_cache
