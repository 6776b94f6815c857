# The two commands: `make run` runs Picket, `make test` tests it. Both start NATS (JetStream) and
# PostgreSQL on loopback when they are not reachable, and stop what they started.

BUF := npx --yes @bufbuild/buf@1.75.0
STACK := scripts/stack.sh run --
BENCH_ARGS ?=

.PHONY: run test lint deny deploy-check bench fmt

run:
	$(STACK) scripts/run-services.sh

test:
	$(STACK) cargo test --workspace --locked

lint:
	cd proto && $(BUF) lint
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# cargo-deny over the lock file: licences, bans, sources and advisories (deny.toml).
deny:
	bash scripts/deny.sh

# Renders the Kubernetes overlays (deploy/kubernetes) and validates them; needs no cluster.
deploy-check:
	bash scripts/deploy-check.sh

# Not part of the tests: drives the finding-to-webhook path and prints throughput and latency.
bench:
	$(STACK) cargo run --release --locked -p picket-bench -- $(BENCH_ARGS)

fmt:
	cargo fmt --all
