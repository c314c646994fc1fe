# `make demo` and `make test` build .venv from requirements.lock (runtime) and requirements-dev.lock
# (tests, lint, labelImg) on first use (about 5 minutes from a cold pip cache) and refresh it when a
# lock or setup.py changes. Both are installed with --no-deps: exactly what they list.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two test processes (pytest-xdist), a test file each at a time: exporting, tracing and loading models is
# mostly single-threaded, and the model fixtures are built once for both (tests/conftest.py).
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: venv test test-fast lint demo bench lock clean-demo

venv: $(STAMP)

# Earlier locks installed opencv-python beside the headless build, both in cv2/: remove both, so that
# the lock's headless build is installed whole.
$(STAMP): requirements.lock requirements-dev.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if $(PY) -m pip show --quiet opencv-python >/dev/null 2>&1; then \
	    $(PY) -m pip uninstall --quiet --yes opencv-python opencv-python-headless; fi
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/hadolint --failure-threshold warning Dockerfile

test: lint
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m chestdet.commands.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_records.py --repeat 3
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_export.py
	$(PY) benchmarks/bench_detect.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_evaluate.py

# Re-pin requirements.in into requirements.lock and requirements-dev.in into requirements-dev.lock, with hashes.
lock:
	tools/lock.sh

clean-demo:
	rm -rf workspace/demo
