# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Trains the default classifier on the bundled Rotten Tomatoes reviews, prints the
# test metrics, writes TensorBoard logs under runs/ and exports savedmodels/reviews/N/.
demo: $(STAMP)
	$(BIN)/tfllm train --task classify --data rotten_tomatoes --run-dir runs/reviews --overwrite
	$(BIN)/tfllm export runs/reviews --name reviews

# The try-it page's tests drive Debian's Chromium (Playwright, no browser download of its own);
# installed here where the machine allows (root and apt-get), otherwise those tests skip.
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make: Chromium is not installed, so the browser tests will skip (apt-get install chromium)"

# Tests run in TEST_WORKERS processes (pytest-xdist), a test file per process at a time so its
# module fixtures (tiny trained models) are built once; most of a test's time is single-threaded
# Python (tracing, tokenizer learning, starting TensorFlow), so two workers use both cores.
# Files are handed out in tests/conftest.py's order (longest first), not xdist's by test count.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The 25 slowest tests are listed at the end: where the suite's minutes go.
test: $(STAMP) browser
	$(PYTEST) --durations=25 tests

# The quicker part (no end-to-end runs marked slow).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" tests

clean:
	rm -rf $(VENV) runs build *.egg-info
