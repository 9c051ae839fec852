# Fresh machine: `make run` serves apps/hello-python; `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
LISTEN ?= 127.0.0.1:3000

.PHONY: setup run test lint bench clean redis-server

setup: $(STAMP)

# The venv holds the host (editable), the test tools and the guest toolchains
# (componentize-py, wasm-tools); npm installs componentize-js for apps/hello-ts.
$(STAMP): pyproject.toml apps/hello-ts/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,toolchains]'
	cd apps/hello-ts && npm ci --prefer-offline --no-audit --no-fund --loglevel=error
	touch $(STAMP)

run: setup
	$(PY) -m host up -f apps/hello-python --build --listen $(LISTEN)

# The Redis key-value backend is tested against a real redis-server (Debian package).
redis-server:
	@command -v redis-server >/dev/null || { \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

test: setup redis-server
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check host tests
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) apps/*/*.wasm apps/hello-ts/dist apps/hello-ts/node_modules
