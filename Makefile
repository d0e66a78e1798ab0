# The two README commands (`make demo`, `make test`) set themselves up from nothing:
# a virtualenv in .venv with the pinned dependencies of pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export SEGSYNTH_DATA ?= $(abspath ../shared/data)

.PHONY: install demo test test-unit test-integration bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[all]'
	# Reference metrics for the tests; its own pins (numpy<2.3.5, opencv<5) are too old for
	# ours although its code runs on them, so it goes in without its dependency pins.
	$(PIP) install -q --no-deps pysodmetrics==1.6.2
	touch $(STAMP)

demo: install
	$(VENV)/bin/segsynth demo --config configs/demo/demo.yaml

test: install
	$(PY) -m pytest -q -ra

test-unit: install
	$(PY) -m pytest -q tests/unit

test-integration: install
	$(PY) -m pytest -q tests/integration

bench: install
	$(PY) benchmarks/synth_throughput.py

clean:
	rm -rf outputs .pytest_cache
