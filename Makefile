PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv checkov browser netfaults test fuzz lint typecheck layers demo demo-up demo-down kafka bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# checkov, for tests/deploy (deploy/ and the Dockerfile), in a venv of its own: it requires packaging<24,
# which pytest 9 (packaging>=24) cannot share. Pinned exactly, as ruff and mypy are pinned to a minor: a new
# release adds checks and could fail CI on its own.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_STAMP): | $(STAMP)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)

SOURCES := meshkit presence_server example_services tests bench scripts

lint: $(STAMP)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The layer contracts of pyproject.toml's [tool.importlinter]: who may import whom, no cycles, no private reach.
layers: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

# Debian's chromium and chromedriver for tests/presence_server/test_dashboard.py (the dashboard in a real headless browser);
# elsewhere install both and point MESHKIT_CHROMIUM / MESHKIT_CHROMEDRIVER at them.
CHROMIUM := $(or $(MESHKIT_CHROMIUM),/usr/bin/chromium)
CHROMEDRIVER := $(or $(MESHKIT_CHROMEDRIVER),/usr/bin/chromedriver)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser:
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then \
	  echo "browser: $(CHROMIUM) and $(CHROMEDRIVER) present, for tests/presence_server/test_dashboard.py"; \
	else \
	  echo "browser: installing Debian's chromium and chromium-driver for tests/presence_server/test_dashboard.py:"; \
	  echo "  $(strip $(SUDO) apt-get update) && $(strip $(SUDO) apt-get install -y chromium chromium-driver)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null && \
	  echo "browser: installed $$($(CHROMEDRIVER) --version)"; \
	fi

# iproute2 and nftables for tests/netfaults (hosts in network namespaces, links cut with nftables rules); the
# tests need root and skip, saying why, where namespaces cannot be made.
netfaults:
	@if command -v ip >/dev/null && command -v nft >/dev/null; then \
	  echo "netfaults: ip and nft present, for tests/netfaults"; \
	elif [ "$$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then \
	  echo "netfaults: not root and no sudo: tests/netfaults will be skipped"; \
	else \
	  echo "netfaults: installing Debian's iproute2 and nftables for tests/netfaults:"; \
	  echo "  $(strip $(SUDO) apt-get update) && $(strip $(SUDO) apt-get install -y iproute2 nftables)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables >/dev/null && \
	  echo "netfaults: installed $$(nft --version)"; \
	fi

# Two workers (pytest-xdist): the suite mostly waits on the processes and brokers it starts; TEST_WORKERS=0 for one.
TEST_WORKERS ?= 2

test: $(STAMP) $(CHECKOV_STAMP) browser netfaults lint typecheck layers
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# Fuzz the edges that take outside input (tests/fuzz): MESHKIT_FUZZ_EXAMPLES inputs per target (25,000 by
# default, a fifth of it or less for the websocket ones: well over 100,000 in all; `make test` runs a small
# derandomized share). Random inputs, failures kept in .hypothesis/ and replayed first next time; prints the
# inputs each target ran and how long it took.
MESHKIT_FUZZ_EXAMPLES ?= 25000

fuzz: $(STAMP)
	MESHKIT_FUZZ_EXAMPLES=$(MESHKIT_FUZZ_EXAMPLES) $(PY) -m pytest tests/fuzz -q --durations=0

# the development broker (Tansu) on 127.0.0.1:9092, in the foreground until Ctrl-C
kafka: $(STAMP)
	$(PY) -m meshkit.devbroker --port 9092

# the seed's walk-through end to end, narrated; logs in .demo/<name>.log
demo: $(STAMP)
	$(PY) scripts/demo.py run

# the same start-up, left running to explore; `make demo-down` stops it
demo-up: $(STAMP)
	$(PY) scripts/demo.py up

# stops what demo-up started (.demo/pids); standard library only, so no venv needed
demo-down:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/demo.py down

# Benchmarks beside their floors, same run (BENCH.md), then the requests lost in a rolling restart under
# load (bench/rolling.py); ARGS="--json" for one JSON object per line.
bench: $(STAMP)
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
