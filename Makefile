# Everything a fresh machine needs: `make demo` renders the example offline, `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard protos/scenecast/v1/*.proto)

.PHONY: install protos lint lint-protos test-deps demo serve studio up down test bench schema openapi image clean

install: $(VENV)/.installed

# The venv is rebuilt when the dependencies change; gen/ must exist first because it is installed as a package.
$(VENV)/.installed: pyproject.toml gen/.stamp
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'grpcio-tools==1.85.*'

protos: gen/.stamp

gen/.stamp: $(PROTOS) $(VENV)/bin/python
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch gen/scenecast/__init__.py gen/scenecast/v1/__init__.py $@

# buf (from npm, pinned in package-lock.json) lints the contract the polyglot clients are generated from.
BUF := node_modules/.bin/buf
$(BUF): package.json package-lock.json
	npm ci --silent
	touch $@

# Lint, and check the working tree's contract against the last commit (in a clean clone this compares HEAD with
# itself; tests/unit/test_contract.py proves the check catches a breaking change).
lint-protos: $(BUF)
	$(BUF) lint
	$(BUF) breaking --against '.git#ref=HEAD'

# The Node.js client's pinned dependencies (clients/node/package-lock.json), for tests/e2e/test_node_client.py.
# Install scripts are skipped: protobufjs's postinstall is not needed to load .proto files.
NODE_CLIENT := clients/node/node_modules/.package-lock.json
$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json
	npm ci --prefix clients/node --ignore-scripts --silent
	touch $@

# Starts the five services on loopback, renders the example script, stops the services.
demo: install
	mkdir -p out
	$(VENV)/bin/scenecast render examples/safety-ladder.yaml -o out/demo.mp4 --start-services

# Runs the five services and the HTTP API (with the web studio) in the foreground until Ctrl-C; `make studio` is the
# same, named for people who came for the studio: it prints its URL (http://127.0.0.1:8080/).
serve studio: install
	$(VENV)/bin/scenecast serve

# ruff keeps the Python consistent (pyflakes, pycodestyle, import order, bugbear, pyupgrade; format checked).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# `make up` runs the compose topology as local processes in the background (gateway on 127.0.0.1:50050, logs in
# out/services.log); `make down` stops them gracefully. Same services, ports and defaults as docker-compose.yml.
up: install
	mkdir -p out
	@if [ -f out/services.pid ] && kill -0 $$(cat out/services.pid) 2>/dev/null; then \
		echo "already up (pid $$(cat out/services.pid))"; \
	else \
		nohup $(VENV)/bin/scenecast serve > out/services.log 2>&1 & echo $$! > out/services.pid; \
	fi
	@for attempt in $$(seq 120); do \
		$(PY) -m services.common.healthcheck 127.0.0.1:50050 >/dev/null 2>&1 && echo "gateway serving on 127.0.0.1:50050" && exit 0; \
		sleep 0.5; \
	done; echo "services did not become healthy; see out/services.log"; exit 1

down:
	@if [ -f out/services.pid ]; then \
		pid=$$(cat out/services.pid); kill $$pid 2>/dev/null; \
		while kill -0 $$pid 2>/dev/null; do sleep 0.2; done; rm -f out/services.pid; echo "stopped"; \
	else echo "not running"; fi

# Debian packages the tests start servers from (redis-server, PostgreSQL) and docker-compose: installed when missing.
test-deps:
	bash tools/test-deps.sh

test: test-deps install $(BUF) $(NODE_CLIENT) lint lint-protos
	$(PY) -m pytest -q

# Measures the figures in docs/BENCHMARKS.md on this machine and rewrites it (about 8-9 minutes on 2 cores).
bench: install
	$(PY) -m bench.run

# Rewrites schemas/script.schema.json from the script model (tests/unit/test_script_schema.py checks it is current).
schema: install
	$(PY) -m scenecast_cli.schema

# Rewrites web/openapi.json from the HTTP API's routes (tests check it is current).
openapi: install
	$(PY) -m web openapi > web/openapi.json

# Builds the container image (scenecast:<version>, the tag deploy/k8s names, and scenecast:local for docker compose);
# without a Docker engine it says so and fails.
image:
	bash tools/build-image.sh

clean:
	rm -rf gen out $(VENV) node_modules clients/node/node_modules clients/go/gen
