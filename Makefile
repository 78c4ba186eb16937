# Turok: `make run` starts the whole stack locally, `make lint` runs ruff and mypy, `make test`
# runs lint and then the whole suite. Each creates (or reuses) a virtualenv in .venv and installs
# everything it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.turok-deps
# libcairo2 for graphite-web; a C compiler (and below, Python's headers) for turok_core.parse._speedups
# and turok_core.storage._blockcodec
APT_PACKAGES := libcairo2 gcc
# node and npm for dynalite (below), from Debian only where the machine has none (NodeSource's
# nodejs ships npm and conflicts with Debian's npm package)
NODE_APT := $(if $(shell command -v node),,nodejs) $(if $(shell command -v npm),,npm)
# dynalite, a DynamoDB from npm that validates requests as DynamoDB does where moto does not: the
# storage contract tests run on it too; installed into tests/.node (not committed), pinned
DYNALITE_VERSION := 4.0.0
DYNALITE_STAMP := tests/.node/.dynalite-$(DYNALITE_VERSION)
export GRAPHITE_NO_PREFIX := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run lint test bench install deps apt headers dynalite clean

run: install
	$(PY) -m turok_core.dev.stack run

# the style the code keeps (configured in pyproject.toml): lint and import order, then types
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

# lint first: a style or type error fails fast, before the slow suite; the real-client tests
# run Debian's collectd, the storage contract tests dynalite
test: APT_PACKAGES += collectd-core $(NODE_APT)
test: lint dynalite
	$(PY) -m pytest tests

# issue 6's benchmarks (bench/), on demand only, never part of `make test`;
# BENCH_ARGS=--quick for a run of a few minutes; etsy statsd comes from npm into bench/.node
bench: APT_PACKAGES += carbon-c-relay
bench: install
	$(PY) bench/run_all.py $(BENCH_ARGS)

# the project itself, reinstalled every time so twistd's plugins match the checkout; the C
# extension is also built in place, for the processes the tests and benchmarks run from the checkout
install: apt headers deps
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	$(PY) setup.py --quiet build_ext --inplace
	@rm -rf build *.egg-info

dynalite: APT_PACKAGES += $(NODE_APT)
dynalite: $(DYNALITE_STAMP)

$(DYNALITE_STAMP): | apt
	mkdir -p tests/.node
	cd tests/.node && npm install --no-audit --no-fund --no-save --silent dynalite@$(DYNALITE_VERSION)
	touch $@

# Python.h for the venv's interpreter: Debian's python3 has it in python3-dev
headers: | $(PY)
	@$(PY) -c "import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q python3-dev; }

deps: $(DEPS_STAMP)

$(DEPS_STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet '.[stack,test]'
	touch $@

# system packages (graphite-web needs cairo, the real-client tests collectd); checked on every
# run, which costs one dpkg query per package, so a package added later reaches old checkouts
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV) || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade 'pip>=23' 'setuptools>=68' wheel

clean:
	rm -rf $(VENV) .run build *.egg-info turok_core/parse/_speedups*.so turok_core/storage/_blockcodec*.so turok_core/turokd/_speedups*.so turok_core/wire/_envelope*.so .mypy_cache .ruff_cache tests/.node
