# Two commands on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   run everything on this machine (embedded broker, gateway, API, simulated street)
#   make test   run the test suite (installs mosquitto, influxdb, victoria-metrics, postgresql and chromium
#               for the browser tests, when root)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := mosquitto mosquitto-clients influxdb victoria-metrics postgresql \
  ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
  gstreamer1.0-tools chromium fonts-noto-cjk
PYTEST_ARGS ?=

.PHONY: demo test lint bench-ingest bench-scale bench-push bench-edge bench-detect bench-plates soak-edge debian-packages clean

# torch for the edge stack: these pairs import together (PyPI's torchvision needs its own torch)
TORCH := $(shell [ "$$(uname -m)" = aarch64 ] && echo "torch==2.9.1 torchvision==0.24.1" || echo "torch==2.14.1 torchvision==0.29.1")

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "gridgate needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev,edge]'
	@touch $@

# Installs the servers the tests start (never started as system services here).
debian-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    rm -f /usr/sbin/policy-rc.d; \
	  else \
	    echo "missing Debian packages:$$missing (run as root, or: sudo apt-get install$$missing)"; \
	  fi; \
	fi

demo: $(BIN)/.installed
	$(BIN)/gridgate demo

test: $(BIN)/.installed debian-packages
	$(BIN)/ruff check .
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-ingest: $(BIN)/.installed debian-packages
	$(BIN)/python bench/ingest.py

bench-scale: $(BIN)/.installed debian-packages
	$(BIN)/python bench/scale.py --json var/bench/scale.json

bench-push: $(BIN)/.installed debian-packages
	$(BIN)/python bench/push_storm.py

bench-edge: $(BIN)/.installed debian-packages
	$(BIN)/python bench/edge.py

bench-detect: $(BIN)/.installed
	$(BIN)/python bench/detect_eval.py

bench-plates: $(BIN)/.installed debian-packages
	$(BIN)/python bench/plate_eval.py

soak-edge: $(BIN)/.installed
	$(BIN)/python bench/edge_soak.py --minutes 10 --synthetic

clean:
	rm -rf $(VENV) var .pytest_cache
