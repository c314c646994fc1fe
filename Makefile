# `make demo` and `make test` build .venv from requirements.lock on first use (about 5 minutes
# from a cold pip cache) and refresh it when the lock or setup.py changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test test-fast lint demo bench lock clean-demo

venv: $(STAMP)

$(STAMP): requirements.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/hadolint --failure-threshold warning Dockerfile

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m chestdet.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_records.py --repeat 3
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_export.py
	$(PY) benchmarks/bench_detect.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_evaluate.py

# Re-pin every package from requirements.in into requirements.lock, with hashes.
lock:
	tools/lock.sh

clean-demo:
	rm -rf workspace/demo
