# The two commands of README.md: `make demo` (main job) and `make test` (whole suite).
# Each installs what it needs, every time, so they work on a fresh machine.
PY ?= python3
PIP = $(PY) -m pip

.PHONY: install install-test chromium demo test lint bench js-check

# torch: a working one is kept; without one, the CPU build from PyTorch's CPU index (PyPI's default
# Linux wheel is the CUDA build, several GB). CI pins its wheel: TORCH_SPEC=torch==2.13.0 TORCH_INDEX=
# (see .ci/install_torch.py and .ci/run).
install:
	$(PY) .ci/install_torch.py
	$(PIP) install -q -e .

install-test: install
	$(PIP) install -q -e ".[test]"
	$(PY) .ci/install_interop.py

chromium:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ) || \
	  echo "WARNING: chromium not installed; browser tests will be skipped"

demo: install
	$(PIP) install -q jupyterlab ipykernel
	$(PY) -m circwidgets.demo

# the front ends (js/): locked install, ESLint, node:test unit tests, committed bundles == a fresh build
js-check:
	@command -v npm >/dev/null 2>&1 || { echo "ERROR: npm (Node.js >= 18) is needed for the front-end checks of \
	'make test' (js/: lint, unit tests, bundle staleness); install Node.js, e.g. apt-get install nodejs npm"; exit 1; }
	cd js && npm ci --no-audit --no-fund && npm run lint && npm test && npm run check-bundles

test: install-test chromium js-check
	$(PY) -m ruff check .
	$(PY) -m pytest

lint:
	$(PY) -m ruff check .

bench: install
	$(PY) benchmarks/run_all.py
