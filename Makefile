# Fresh machine: `make run` serves apps/hello-python; `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
LISTEN ?= 127.0.0.1:3000

.PHONY: setup run test lint bench clean system-packages

setup: $(STAMP)

# The venv holds the host (editable), the test and bench tools and the guest toolchains
# (componentize-py, wasm-tools); npm installs componentize-js for apps/hello-ts and apps/hello-js.
$(STAMP): pyproject.toml apps/hello-ts/package-lock.json apps/hello-js/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,toolchains]'
	cd apps/hello-ts && npm ci --prefer-offline --no-audit --no-fund --loglevel=error
	cd apps/hello-js && npm ci --prefer-offline --no-audit --no-fund --loglevel=error
	touch $(STAMP)

run: setup
	$(PY) -m host up -f apps/hello-python --build --listen $(LISTEN)

# Real servers and tools the tests use, from Debian: redis-server (Redis
# key-value backend), docker-registry (OCI registry), skopeo and umoci (read our
# image layouts, make runtime bundles), htpasswd (apache2-utils: the registry's
# bcrypt login file) and openssl (signs the registry's auth tokens). Installed
# only when missing.
# postgresql: its initdb/postgres live off PATH (/usr/lib/postgresql/N/bin), so it is
# detected by pg_ctlcluster (postgresql-common, which every server version depends on).
# mosquitto: the MQTT broker (outbound MQTT); its broker is in /usr/sbin, off a normal
# user's PATH, so it is detected by mosquitto_passwd (same package, /usr/bin).
SYSTEM_TOOLS := redis-server:redis-server docker-registry:docker-registry skopeo:skopeo \
  umoci:umoci htpasswd:apache2-utils openssl:openssl pg_ctlcluster:postgresql \
  mosquitto_passwd:mosquitto
# What `make bench` needs: wrk (load generator), redis-server (row k).
BENCH_TOOLS := wrk:wrk redis-server:redis-server

system-packages:
	@missing=$$(for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null || echo $${pair##*:}; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  echo "apt-get install $$missing"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

test: setup system-packages
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check host tests
	$(VENV)/bin/mypy

# Every section (see `python -m bench --help`); rewrites bench/REPORT.md (~15 min).
bench: setup
	@$(MAKE) --no-print-directory system-packages SYSTEM_TOOLS="$(BENCH_TOOLS)"
	$(PY) -m bench

clean:
	rm -rf $(VENV) apps/*/*.wasm apps/guestbook/*/*.wasm apps/hello-ts/dist apps/hello-ts/node_modules \
	  apps/hello-js/dist apps/hello-js/node_modules
