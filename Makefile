# The two commands a newcomer needs: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install run test test-fast lint constraints clean bench image-test

install: $(PY_STAMP) $(NODE_STAMP)

# PIP_CONSTRAINT pins the build backend too (pip applies it to the isolated build environment).
$(PY_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Azurite, pinned in package.json and package-lock.json, installed into node_modules/.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/python -m devtools.demo

test: install
	$(BIN)/python -m pytest

# Everything but the slow (memory, large-transfer) tests.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# layout_check: no import cycle in imgproxy/ (TYPE_CHECKING and local imports count), no module over 400 lines.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m devtools.layout_check imgproxy

constraints: $(PY_STAMP)
	{ echo "# Exact versions installed by 'make install' (pip install -c constraints.txt -e '.[test]')."; \
	  echo "# Regenerate after changing pyproject.toml: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -vi '^imgproxy'; \
	  grep '^setuptools==' constraints.txt; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) node_modules .cache .pytest_cache .mypy_cache .ruff_cache

# imgproxy against nginx, Varnish and a bare aiohttp handler, in front of an app against nginx
# proxy_pass, three replicas behind nginx, and image transforms against thumbor and the in-process
# limit; writes bench/results/<UTC time>.json and its Markdown tables. What each part measures and
# every BENCH_* knob: docs/benchmarks.md.
bench: install
	$(BIN)/python -m bench.run

# Builds the container image (Containerfile) on a local Debian base and checks it against Azurite:
# MISS, HIT, a variant, the health check, SIGTERM's drain. Needs root, podman, runc and mmdebstrap
# (apt-get installs them when missing), so it is not part of `make test`. devtools/image_test.py.
image-test: install
	$(BIN)/python -m devtools.image_test

# Memory over time (bench/soak, docs/benchmarks.md#memory-over-time): SOAK_SECONDS (1800) of mixed
# load on two workers with a Redis outage halfway, then the variant churn under each allocator
# (glibc's defaults, the server's default, jemalloc where Debian's libjemalloc2 is installed).
# Writes bench/results/soak-*.{json,md} and churn-*.{json,md}.
.PHONY: soak
soak: install
	$(BIN)/python -m bench.soak.run
	$(BIN)/python -m bench.soak.churn
