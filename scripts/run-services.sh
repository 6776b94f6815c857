#!/usr/bin/env bash
# Builds and runs Picket's five services against the NATS and PostgreSQL that `scripts/stack.sh`
# made reachable, with graph-sim standing in for Microsoft Graph and a local webhook receiver;
# prints where each listens once all are ready, runs the scripted demo (scripts/demo/demo.sh) and
# keeps running until Ctrl-C, which stops them all.
#
# Environment: PICKET_PG_HOST/PICKET_PG_PORT and PICKET_NATS_HOST/PICKET_NATS_PORT as for stack.sh;
# PICKET_DEMO=0 skips the demo; any PICKET__SECTION__KEY setting is passed through to every service.
set -euo pipefail

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=${PICKET_DEV_DIR:-$REPO_ROOT/.dev}
PG_HOST=${PICKET_PG_HOST:-127.0.0.1}
PG_PORT=${PICKET_PG_PORT:-5432}
NATS_HOST=${PICKET_NATS_HOST:-127.0.0.1}
NATS_PORT=${PICKET_NATS_PORT:-4222}
DATABASE=${PICKET_DATABASE:-picket}
SERVICES=(scanner prioritizer notifier ledger offboarding)
# Default ports of each service, as in services/<service>/defaults.toml.
declare -A GRPC_PORT=([scanner]=50051 [prioritizer]=50052 [notifier]=50053 [ledger]=50054 [offboarding]=50055)
declare -A ADMIN_PORT=([scanner]=9051 [prioritizer]=9052 [notifier]=9053 [ledger]=9054 [offboarding]=9055)
SIM_PORT=${PICKET_SIM_PORT:-8787}
RECEIVER_PORT=${PICKET_RECEIVER_PORT:-8788}
DEMO_DIR=$DEV_DIR/demo

mkdir -p "$DEV_DIR/logs" "$DEMO_DIR"
cd "$REPO_ROOT"

echo "building the services..." >&2
cargo build --locked --bins

# A development signing key, made once and kept under the git-ignored dev dir.
if [[ -z ${PICKET__AUTH__JWT_SECRET:-} ]]; then
	if [[ ! -s $DEV_DIR/jwt-secret ]]; then
		head -c 48 /dev/urandom | base64 | tr -d '\n/+=' >"$DEV_DIR/jwt-secret"
	fi
	PICKET__AUTH__JWT_SECRET=$(cat "$DEV_DIR/jwt-secret")
	export PICKET__AUTH__JWT_SECRET
fi
# The key-encryption key that seals webhook secrets at rest, made once like the signing key.
if [[ -z ${PICKET__NOTIFIER__SECRET_KEYS:-} ]]; then
	if [[ ! -s $DEV_DIR/notifier-secret-keys ]]; then
		printf 'dev-1:%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" >"$DEV_DIR/notifier-secret-keys"
	fi
	PICKET__NOTIFIER__SECRET_KEYS=$(cat "$DEV_DIR/notifier-secret-keys")
	export PICKET__NOTIFIER__SECRET_KEYS
fi
# The keys that seal a forwarded consent link for the notifier: the scanner and the notifier share them.
if [[ -z ${PICKET__SCANNER__CONSENT_LINK_KEYS:-} ]]; then
	if [[ ! -s $DEV_DIR/consent-link-keys ]]; then
		printf 'dev-links-1:%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" >"$DEV_DIR/consent-link-keys"
	fi
	PICKET__SCANNER__CONSENT_LINK_KEYS=$(cat "$DEV_DIR/consent-link-keys")
fi
export PICKET__SCANNER__CONSENT_LINK_KEYS
export PICKET__NOTIFIER__CONSENT_LINK_KEYS=${PICKET__NOTIFIER__CONSENT_LINK_KEYS:-$PICKET__SCANNER__CONSENT_LINK_KEYS}
export PICKET__DATABASE__URL=${PICKET__DATABASE__URL:-postgres://postgres@$PG_HOST:$PG_PORT/$DATABASE}
export PICKET__NATS__URL=${PICKET__NATS__URL:-nats://$NATS_HOST:$NATS_PORT}
export PICKET__TELEMETRY__LOG_FORMAT=${PICKET__TELEMETRY__LOG_FORMAT:-json}
# Microsoft Graph is graph-sim's simulated tenants, with graph-sim's operator app credentials.
SIM_URL=http://127.0.0.1:$SIM_PORT
export PICKET__SCANNER__LOGIN_BASE_URL=${PICKET__SCANNER__LOGIN_BASE_URL:-$SIM_URL}
export PICKET__SCANNER__GRAPH_BASE_URL=${PICKET__SCANNER__GRAPH_BASE_URL:-$SIM_URL}
export PICKET__SCANNER__DEFENDER_BASE_URL=${PICKET__SCANNER__DEFENDER_BASE_URL:-$SIM_URL}
export PICKET__SCANNER__CLIENT_ID=${PICKET__SCANNER__CLIENT_ID:-00000000-0000-0000-0000-00000000c11e}
export PICKET__SCANNER__CLIENT_SECRET=${PICKET__SCANNER__CLIENT_SECRET:-sim-secret}
# The demo's webhook receiver listens on loopback over plain http.
export PICKET__NOTIFIER__ALLOWED_NETWORKS=${PICKET__NOTIFIER__ALLOWED_NETWORKS:-127.0.0.1/32}
export PICKET__NOTIFIER__ALLOW_INSECURE_HTTP=${PICKET__NOTIFIER__ALLOW_INSECURE_HTTP:-true}

if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1; then
	psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -qc "CREATE DATABASE $DATABASE"
	echo "created database $DATABASE" >&2
fi

PIDS=()
stop_all() {
	trap - EXIT INT TERM
	if ((${#PIDS[@]})); then
		echo "stopping the services..." >&2
		kill -TERM "${PIDS[@]}" 2>/dev/null || true
		wait "${PIDS[@]}" 2>/dev/null || true
	fi
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A Microsoft tenant is connected through one Picket tenant at a time and the database outlives a
# run, so each run simulates directories of its own (PICKET_SIM_SEED repeats one).
SIM_SEED=${PICKET_SIM_SEED:-$(((RANDOM << 15) | RANDOM))}
target/debug/graph-sim "$SIM_PORT" 3 20 "$SIM_SEED" >"$DEV_DIR/logs/graph-sim.log" 2>&1 &
PIDS+=($!)
python3 scripts/demo/webhook-receiver.py "$RECEIVER_PORT" "$DEMO_DIR/webhook-secret" \
	>"$DEV_DIR/logs/webhooks.log" 2>&1 &
PIDS+=($!)
for service in "${SERVICES[@]}"; do
	"target/debug/$service" >"$DEV_DIR/logs/$service.log" 2>&1 &
	PIDS+=($!)
done
FIRST_SERVICE=2 # index in PIDS of the first service

# Ready means grpc.health.v1 reports SERVING: the admin port's /ready mirrors it.
ready() {
	local port=$1 status
	{ exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
	printf 'GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
	IFS= read -r status <&3 || true
	exec 3>&-
	[[ $status == *" 200 "* ]]
}

deadline=$((SECONDS + 120))
for index in "${!SERVICES[@]}"; do
	service=${SERVICES[$index]}
	until ready "${ADMIN_PORT[$service]}"; do
		if ! kill -0 "${PIDS[$((FIRST_SERVICE + index))]}" 2>/dev/null; then
			echo "$service exited; its log:" >&2
			tail -n 20 "$DEV_DIR/logs/$service.log" >&2
			exit 1
		fi
		if ((SECONDS > deadline)); then
			echo "$service did not become ready; see $DEV_DIR/logs/$service.log" >&2
			exit 1
		fi
		sleep 0.2
	done
done

printf '\nPicket is running (Ctrl-C stops it):\n\n'
printf '  %-12s %-18s %-30s %s\n' service gRPC admin log
for service in "${SERVICES[@]}"; do
	printf '  %-12s %-18s %-30s %s\n' "$service" "127.0.0.1:${GRPC_PORT[$service]}" \
		"http://127.0.0.1:${ADMIN_PORT[$service]}/metrics" ".dev/logs/$service.log"
done
printf '\n  NATS %s:%s   PostgreSQL %s:%s/%s\n' "$NATS_HOST" "$NATS_PORT" "$PG_HOST" "$PG_PORT" "$DATABASE"
printf '  graph-sim %s (simulated Microsoft Graph)   webhook receiver http://127.0.0.1:%s (.dev/logs/webhooks.log)\n' \
	"$SIM_URL" "$RECEIVER_PORT"
printf '  picketctl: target/debug/picketctl; development tokens: picketctl token mint (key in .dev/jwt-secret)\n\n'

if [[ ${PICKET_DEMO:-1} != 0 ]]; then
	until grep -q '^  tenant ' "$DEV_DIR/logs/graph-sim.log"; do sleep 0.2; done
	tail -n +1 -f "$DEV_DIR/logs/webhooks.log" &
	TAIL_PID=$!
	PICKETCTL=target/debug/picketctl DEMO_DIR=$DEMO_DIR RECEIVER_URL="http://127.0.0.1:$RECEIVER_PORT/picket" \
		SIM_TENANTS="$(awk '/^  tenant / { printf "%s ", $2 }' "$DEV_DIR/logs/graph-sim.log")" \
		SIM_ADMINISTRATORS="$(awk '/^  tenant / { printf "%s ", $4 }' "$DEV_DIR/logs/graph-sim.log")" \
		scripts/demo/demo.sh || echo "the demo stopped early; Picket keeps running" >&2
	sleep 1
	kill "$TAIL_PID" 2>/dev/null || true
	printf '\nPicket keeps running; Ctrl-C stops it.\n'
fi

# Runs until a service stops or Ctrl-C.
wait -n "${PIDS[@]}"
echo "a service stopped; see $DEV_DIR/logs" >&2
exit 1
