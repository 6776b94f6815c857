#!/usr/bin/env bash
# Local dependency stack for Picket: NATS (with JetStream) and PostgreSQL, and the tests' Python
# tools (a virtualenv under the dev dir with aiosmtpd, a real SMTP server, and standardwebhooks,
# the Standard Webhooks reference verifier).
#
#   scripts/stack.sh up              ensure NATS + Postgres are reachable, start what is not
#   scripts/stack.sh down            stop only what `up` started (pid file / marker in the dev dir)
#   scripts/stack.sh run -- CMD ...  up, run CMD, then stop what this `up` started; exits with CMD's status
#   scripts/stack.sh status          show what is reachable and what stack.sh manages
#
# Environment (defaults in parentheses):
#   PICKET_NATS_HOST (127.0.0.1)  PICKET_NATS_PORT (4222)
#   PICKET_PG_HOST   (127.0.0.1)  PICKET_PG_PORT   (5432)
#   PICKET_DEV_DIR   (<repo root>/.dev)  state: nats/ nats.pid nats.log postgres/ postgres.log postgres.started
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/stack.sh up | down | status | run [--] CMD [ARGS...]

  up      Make sure NATS (JetStream) and PostgreSQL answer at the configured
          addresses; start a private instance under the dev dir for each one
          that does not. Prints one line per dependency.
  down    Stop only what `up` started (tracked in the dev dir); anything else
          is left alone.
  run     `up`, run CMD, then stop whatever this `up` started (also on Ctrl-C
          or SIGTERM). Exits with CMD's status. Stack messages go to stderr.
  status  Show reachability and what stack.sh manages.

Environment:
  PICKET_NATS_HOST (127.0.0.1)   PICKET_NATS_PORT (4222)
  PICKET_PG_HOST   (127.0.0.1)   PICKET_PG_PORT   (5432)
  PICKET_DEV_DIR   (<repo root>/.dev)

A Postgres started here uses trust auth: connect as user `postgres`, no password.
EOF
}

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

NATS_HOST=${PICKET_NATS_HOST:-127.0.0.1}
NATS_PORT=${PICKET_NATS_PORT:-4222}
PG_HOST=${PICKET_PG_HOST:-127.0.0.1}
PG_PORT=${PICKET_PG_PORT:-5432}
DEV_DIR=${PICKET_DEV_DIR:-$REPO_ROOT/.dev}
[[ $DEV_DIR == /* ]] || DEV_DIR=$PWD/$DEV_DIR
DEV_DIR=${DEV_DIR%/}

NATS_STORE=$DEV_DIR/nats
NATS_PIDFILE=$DEV_DIR/nats.pid
NATS_LOG=$DEV_DIR/nats.log
NATS_OUT=$DEV_DIR/nats.out
PG_DATA=$DEV_DIR/postgres
PG_LOG=$DEV_DIR/postgres.log
PG_MARKER=$DEV_DIR/postgres.started
LOCK_FILE=$DEV_DIR/.stack.lock

NATS_START_TIMEOUT=15 # seconds
PG_START_TIMEOUT=60   # seconds
STOP_TIMEOUT=15       # seconds

MSG_FD=1          # status lines; `run` switches this to stderr
APT_UPDATED=0
STARTED_NATS=0    # set when this invocation started the dependency
STARTED_PG=0
CHILD_PID=""
PG_BIN=""

say() { printf '%s\n' "$*" >&"$MSG_FD"; }
warn() { printf 'stack.sh: %s\n' "$*" >&2; }
die() {
	warn "error: $*"
	exit 1
}

for p in "$NATS_PORT" "$PG_PORT"; do
	if ! [[ $p =~ ^[0-9]+$ ]] || ((10#$p < 1 || 10#$p > 65535)); then
		die "invalid port: '$p'"
	fi
done

# ---------------------------------------------------------------- helpers

# TCP connect with a 1 s timeout.
tcp_up() {
	timeout 1 bash -c ': <"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# Prints the INFO line a NATS server sends on connect (empty if none).
nats_info() {
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r l <&3 && printf "%s\n" "$l"' \
		_ "$1" "$2" 2>/dev/null || true
}

# Serialize concurrent up/down on the same dev dir (flock on fd 9). fd 9 must
# not leak into long-running children (they would keep the lock), so external
# commands started while it is held get 9>&-. Never put 9>&- on a function or
# builtin call: bash would park the locked fd on a high fd meanwhile, and a
# signal trap re-locking then would deadlock on ourselves.
LOCK_HELD=0
take_lock() {
	((LOCK_HELD)) && return 0
	command -v flock >/dev/null 2>&1 || return 0
	exec 9>>"$LOCK_FILE"
	flock -w 120 9 || die "timed out waiting for lock $LOCK_FILE"
	LOCK_HELD=1
}
release_lock() {
	((LOCK_HELD)) || return 0
	exec 9>&-
	LOCK_HELD=0
}

as_root() {
	if ((EUID == 0)); then
		"$@" 9>&-
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@" 9>&-
	else
		die "need root for: $* (not root and sudo is not installed)"
	fi
}

apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* manually"
	if ((!APT_UPDATED)); then
		warn "running apt-get update"
		as_root apt-get update >&2
		APT_UPDATED=1
	fi
	warn "installing Debian package(s): $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2
}

# True if the process exists and is not a zombie (kill -0 succeeds on zombies,
# which linger when nobody reaps them, e.g. under a container's PID 1).
pid_alive() {
	local st
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
	st=${st##*) }
	[[ ${st:0:1} != Z ]]
}

# Wait until pid exits; SIGKILL after the timeout.
wait_pid_gone() {
	local pid=$1 i
	for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	warn "pid $pid did not exit after ${STOP_TIMEOUT}s, sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	sleep 0.2
}

show_log_tail() {
	local f
	for f in "$@"; do
		[[ -s $f ]] || continue
		warn "---- last lines of $f ----"
		tail -n 30 "$f" >&2 || true
	done
}

# ---------------------------------------------------------------- NATS

nats_bin() {
	local b
	if b=$(command -v nats-server 2>/dev/null); then
		printf '%s\n' "$b"
	elif [[ -x /usr/sbin/nats-server ]]; then
		printf '%s\n' /usr/sbin/nats-server
	else
		return 1
	fi
}

# Pid of the nats-server recorded in our pid file, if it is still that process.
nats_our_pid() {
	local pid cmd
	[[ -f $NATS_PIDFILE ]] || return 1
	pid=$(<"$NATS_PIDFILE")
	pid_alive "$pid" || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *nats-server* && $cmd == *"$NATS_STORE"* ]] || return 1
	printf '%s\n' "$pid"
}

# Something answers on the NATS port: make sure it is NATS with JetStream.
nats_check_existing() {
	local hint=${1:-} info
	info=$(nats_info "$NATS_HOST" "$NATS_PORT")
	[[ $info == INFO* ]] ||
		die "$NATS_HOST:$NATS_PORT accepts connections but does not look like NATS (no INFO line)${hint:+; $hint}"
	[[ $info == *'"jetstream":true'* ]] ||
		die "NATS at $NATS_HOST:$NATS_PORT does not have JetStream enabled (run it with -js)${hint:+; $hint}"
}

nats_up() {
	local where="$NATS_HOST:$NATS_PORT" pid bin i info
	if tcp_up "$NATS_HOST" "$NATS_PORT"; then
		nats_check_existing
		if pid=$(nats_our_pid); then
			say "nats: already running at $where (started by an earlier 'stack.sh up', pid $pid)"
		else
			say "nats: already running at $where (not managed by stack.sh, left alone)"
		fi
		return 0
	fi
	if pid=$(nats_our_pid); then
		die "nats-server pid $pid from $DEV_DIR is running but $where does not answer (started with other settings?); run 'stack.sh down' first"
	fi
	rm -f "$NATS_PIDFILE"

	if ! bin=$(nats_bin); then
		warn "nats-server not found on PATH or at /usr/sbin/nats-server"
		apt_install nats-server
		bin=$(nats_bin) || die "nats-server still not found after installing the package"
		# On systemd hosts the package starts its own service (127.0.0.1:4222, no JetStream).
		if tcp_up "$NATS_HOST" "$NATS_PORT"; then
			nats_check_existing "the nats-server package probably started its system service there; stop it with 'systemctl disable --now nats-server' and re-run"
			say "nats: already running at $where (started by the package install, not managed by stack.sh)"
			return 0
		fi
	fi

	mkdir -p "$NATS_STORE"
	# Double fork (subshell + &) so nats-server is not our child: a stray `wait`
	# could otherwise block on it, and it is detached from our session/signals.
	(
		setsid nohup "$bin" -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$NATS_STORE" -l "$NATS_LOG" \
			</dev/null >>"$NATS_OUT" 2>&1 9>&- &
		printf '%s\n' "$!" >"$NATS_PIDFILE"
	)
	pid=$(<"$NATS_PIDFILE")
	STARTED_NATS=1

	for ((i = 0; i < NATS_START_TIMEOUT * 10; i++)); do
		pid_alive "$pid" || break
		if tcp_up "$NATS_HOST" "$NATS_PORT"; then
			info=$(nats_info "$NATS_HOST" "$NATS_PORT")
			if [[ $info == *'"jetstream":true'* ]]; then
				say "nats: started at $where (JetStream on, store $NATS_STORE, pid $pid, log $NATS_LOG)"
				return 0
			fi
		fi
		sleep 0.1
	done

	if pid_alive "$pid"; then
		warn "nats-server (pid $pid) did not answer with JetStream at $where within ${NATS_START_TIMEOUT}s; stopping it"
		kill -TERM "$pid" 2>/dev/null || true
		wait_pid_gone "$pid"
	else
		warn "nats-server exited during startup"
	fi
	rm -f "$NATS_PIDFILE"
	STARTED_NATS=0
	show_log_tail "$NATS_LOG" "$NATS_OUT"
	die "could not start NATS at $where"
}

nats_down() {
	local pid
	if [[ ! -f $NATS_PIDFILE ]]; then
		say "nats: not started by stack.sh (no $NATS_PIDFILE), nothing to stop"
		return 0
	fi
	if pid=$(nats_our_pid); then
		kill -TERM "$pid" 2>/dev/null || true
		wait_pid_gone "$pid"
		if pid_alive "$pid"; then
			warn "nats-server pid $pid is still alive"
			return 1
		fi
		rm -f "$NATS_PIDFILE"
		say "nats: stopped (pid $pid, store $NATS_STORE)"
	else
		rm -f "$NATS_PIDFILE"
		say "nats: process from $NATS_PIDFILE is not running; removed stale pid file"
	fi
}

# ---------------------------------------------------------------- PostgreSQL

# runuser lives in /usr/sbin, which is not always on PATH. Sets RUNUSER.
RUNUSER=""
find_runuser() {
	local b
	[[ -n $RUNUSER ]] && return 0
	for b in "$(command -v runuser 2>/dev/null)" /usr/sbin/runuser /sbin/runuser; do
		if [[ -n $b && -x $b ]]; then
			RUNUSER=$b
			return 0
		fi
	done
	die "runuser not found (util-linux); it is needed to run PostgreSQL as user postgres"
}

# Run as the cluster owner: `postgres` when we are root (Postgres refuses to run
# as root), ourselves otherwise. cd / so an unreadable cwd does not matter.
as_pg() {
	if ((EUID == 0)); then
		find_runuser
		(cd / && exec "$RUNUSER" -u postgres -- "$@" 9>&-)
	else
		(cd / && exec "$@" 9>&-)
	fi
}

# Sets PG_BIN. A cluster that already exists is run with the major version that
# created it (PG_VERSION); otherwise the highest installed version is used.
# Returns 1 if no server is installed, 2 if the cluster's version is missing.
pg_find_bin() {
	local ver best
	if [[ -f $PG_DATA/PG_VERSION ]]; then
		ver=$(<"$PG_DATA/PG_VERSION")
		PG_BIN=/usr/lib/postgresql/$ver/bin
		[[ -x $PG_BIN/pg_ctl ]] && return 0
		PG_BIN=""
		return 2
	fi
	best=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
	[[ -x $best ]] || return 1
	PG_BIN=${best%/initdb}
}

pg_isready_bin() {
	if command -v pg_isready >/dev/null 2>&1; then
		command -v pg_isready
	elif [[ -n $PG_BIN && -x $PG_BIN/pg_isready ]]; then
		printf '%s\n' "$PG_BIN/pg_isready"
	else
		return 1
	fi
}

# Wait until the port answers and (if available) pg_isready succeeds.
pg_wait_ready() {
	local timeout=$1 isready deadline=$((SECONDS + $1)) noted=0
	isready=$(pg_isready_bin) || isready=""
	while ((SECONDS < deadline)); do
		if tcp_up "$PG_HOST" "$PG_PORT"; then
			[[ -z $isready ]] && return 0
			"$isready" -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -t 2 && return 0
			if ((!noted)); then
				warn "waiting up to ${timeout}s for PostgreSQL at $PG_HOST:$PG_PORT to accept connections"
				noted=1
			fi
		fi
		sleep 0.2
	done
	return 1
}

# Is the cluster in our dev dir running on PG_PORT, started by stack.sh?
pg_ours_running() {
	local pid port
	[[ -f $PG_MARKER && -f $PG_DATA/postmaster.pid ]] || return 1
	{ read -r pid && read -r _ && read -r _ && read -r port; } <"$PG_DATA/postmaster.pid" 2>/dev/null || return 1
	pid_alive "$pid" && [[ $port == "$PG_PORT" ]]
}

pg_up() {
	local where="$PG_HOST:$PG_PORT" rc=0 sockdir locale_opt
	if tcp_up "$PG_HOST" "$PG_PORT"; then
		pg_wait_ready 30 ||
			die "$where accepts connections but pg_isready does not report PostgreSQL accepting connections"
		if pg_ours_running; then
			say "postgres: already running at $where (started by an earlier 'stack.sh up', data $PG_DATA)"
		else
			say "postgres: already running at $where (not managed by stack.sh, left alone)"
		fi
		return 0
	fi

	pg_find_bin || rc=$?
	if ((rc == 2)); then
		die "cluster $PG_DATA was created by PostgreSQL $(<"$PG_DATA/PG_VERSION"), whose server binaries are not installed (install postgresql-$(<"$PG_DATA/PG_VERSION") or delete $PG_DATA)"
	elif ((rc == 1)); then
		warn "no PostgreSQL server found (/usr/lib/postgresql/*/bin/initdb)"
		apt_install postgresql
		pg_find_bin || die "PostgreSQL server binaries still not found after installing the package"
		# The package creates a 'main' cluster on 5432 and may start it (password auth on TCP).
		if tcp_up "$PG_HOST" "$PG_PORT"; then
			die "installing postgresql started the distribution cluster on $where (it does not allow passwordless TCP logins as postgres); stop it (e.g. 'pg_ctlcluster $(basename "$(dirname "$PG_BIN")") main stop', and set it to manual in /etc/postgresql/*/main/start.conf) or pick another PICKET_PG_PORT, then re-run"
		fi
	fi

	# Both end up single-quoted inside pg_ctl -o.
	if [[ $DEV_DIR == *"'"* || $PG_HOST == *"'"* ]]; then
		die "PICKET_DEV_DIR and PICKET_PG_HOST must not contain a single quote"
	fi

	mkdir -p "$PG_DATA"
	if ((EUID == 0)); then
		id -u postgres >/dev/null 2>&1 || die "system user 'postgres' does not exist (normally created by the postgresql package)"
		find_runuser
		"$RUNUSER" -u postgres -- test -x "$DEV_DIR" ||
			die "user postgres cannot reach $DEV_DIR (a parent directory is not traversable, e.g. /root); set PICKET_DEV_DIR to a path under a world-traversable directory"
		if [[ $(stat -c %U "$PG_DATA") != postgres ]]; then
			chown -R postgres:postgres "$PG_DATA"
		fi
		touch "$PG_LOG"
		chown postgres:postgres "$PG_LOG"
	fi

	if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
		die "the cluster in $PG_DATA is already running but not answering at $where (started with other settings?); run 'stack.sh down' (or pg_ctl -D $PG_DATA stop) first"
	fi

	if [[ ! -f $PG_DATA/PG_VERSION ]]; then
		if [[ -n $(ls -A "$PG_DATA") ]]; then
			die "$PG_DATA is not empty but holds no cluster (interrupted initdb?); delete it and re-run"
		fi
		if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
			locale_opt=--locale=C.UTF-8
		else
			locale_opt=--no-locale
		fi
		warn "initializing a new PostgreSQL cluster in $PG_DATA"
		as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres --encoding=UTF8 "$locale_opt" >>"$PG_LOG" 2>&1 || {
			show_log_tail "$PG_LOG"
			die "initdb failed for $PG_DATA"
		}
	fi

	# Unix sockets go into the cluster dir; their path is limited to 107 bytes.
	sockdir=$PG_DATA
	if (($(printf '%s' "$PG_DATA/.s.PGSQL.$PG_PORT" | wc -c) > 107)); then
		warn "path $PG_DATA is too long for a Unix socket; Postgres will listen on TCP only"
		sockdir=""
	fi

	# Mark before starting so that an interrupted start is still cleaned up by down.
	printf '%s\n' "$where" >"$PG_MARKER"
	STARTED_PG=1
	if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_START_TIMEOUT" \
		-o "-h '$PG_HOST' -p $PG_PORT -k '$sockdir'" start >/dev/null; then
		as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m immediate >/dev/null 2>&1 || true
		rm -f "$PG_MARKER"
		STARTED_PG=0
		show_log_tail "$PG_LOG"
		die "could not start PostgreSQL at $where"
	fi
	if ! pg_wait_ready "$PG_START_TIMEOUT"; then
		show_log_tail "$PG_LOG"
		die "PostgreSQL started from $PG_DATA but $where is not ready (it stays running; 'stack.sh down' stops it)"
	fi
	say "postgres: started at $where (user postgres, trust auth; data $PG_DATA, log $PG_LOG)"
}

pg_down() {
	local rc=0 where
	if [[ ! -f $PG_MARKER ]]; then
		say "postgres: not started by stack.sh (no $PG_MARKER), nothing to stop"
		return 0
	fi
	where=$(<"$PG_MARKER")
	pg_find_bin || rc=$?
	if ((rc != 0)); then
		warn "cannot find the PostgreSQL binaries for $PG_DATA; not stopping it"
		return 1
	fi
	if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
		if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m fast -w -t 60 >/dev/null; then
			warn "pg_ctl stop failed for $PG_DATA"
			return 1
		fi
		rm -f "$PG_MARKER"
		say "postgres: stopped (was at $where, data $PG_DATA)"
	else
		rm -f "$PG_MARKER"
		say "postgres: cluster in $PG_DATA is not running; removed stale marker"
	fi
}

# ---------------------------------------------------------------- test tools

# The tests' Python tools from PyPI: aiosmtpd, a real SMTP server each e-mail test starts on its
# own port, and standardwebhooks, the reference verifier webhooks are checked with. They live in a
# virtualenv under the dev dir, created on first use.
TEST_VENV=$DEV_DIR/test-python
TEST_PACKAGES=("aiosmtpd==1.4.6" "standardwebhooks==1.1.0")

test_tools_up() {
	if "$TEST_VENV/bin/python" -c 'import aiosmtpd, standardwebhooks' 2>/dev/null; then
		say "test tools: aiosmtpd and standardwebhooks ready in $TEST_VENV"
		return 0
	fi
	command -v python3 >/dev/null || die "test tools: python3 is needed (aiosmtpd, standardwebhooks)"
	python3 -m venv "$TEST_VENV" >&2 || die "test tools: cannot create a virtualenv in $TEST_VENV"
	"$TEST_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
		"${TEST_PACKAGES[@]}" >&2 || die "test tools: cannot install ${TEST_PACKAGES[*]} from PyPI"
	say "test tools: ${TEST_PACKAGES[*]} installed in $TEST_VENV"
}

# ---------------------------------------------------------------- commands

cmd_up() {
	mkdir -p "$DEV_DIR"
	take_lock
	nats_up
	pg_up
	test_tools_up
	release_lock
}

cmd_down() {
	local rc=0
	if [[ ! -d $DEV_DIR ]]; then
		say "nats: not started by stack.sh (no $DEV_DIR), nothing to stop"
		say "postgres: not started by stack.sh (no $DEV_DIR), nothing to stop"
		return 0
	fi
	take_lock
	nats_down || rc=1
	pg_down || rc=1
	release_lock
	return "$rc"
}

cmd_status() {
	local pid
	if tcp_up "$NATS_HOST" "$NATS_PORT"; then
		if pid=$(nats_our_pid); then
			say "nats: reachable at $NATS_HOST:$NATS_PORT (managed by stack.sh, pid $pid)"
		else
			say "nats: reachable at $NATS_HOST:$NATS_PORT (not managed by stack.sh)"
		fi
	else
		say "nats: not reachable at $NATS_HOST:$NATS_PORT"
	fi
	if tcp_up "$PG_HOST" "$PG_PORT"; then
		if pg_ours_running; then
			say "postgres: reachable at $PG_HOST:$PG_PORT (managed by stack.sh, data $PG_DATA)"
		else
			say "postgres: reachable at $PG_HOST:$PG_PORT (not managed by stack.sh)"
		fi
	else
		say "postgres: not reachable at $PG_HOST:$PG_PORT"
	fi
}

# Stop what this invocation started (used by `run`).
stop_started() {
	local rc=0
	((STARTED_NATS || STARTED_PG)) || return 0
	take_lock
	if ((STARTED_NATS)); then nats_down || rc=1; fi
	if ((STARTED_PG)); then pg_down || rc=1; fi
	release_lock
	return "$rc"
}

# Pids of the process tree under $1 (children first-level first), excluding $1.
descendants() {
	local c
	command -v pgrep >/dev/null 2>&1 || return 0
	for c in $(pgrep -P "$1" 2>/dev/null); do
		printf '%s\n' "$c"
		descendants "$c"
	done
}

# Send a signal to CMD and everything it spawned (CMD shares our process
# group, so the group cannot be used without hitting ourselves).
signal_tree() {
	local sig=$1 root=$2 pids
	pids=$(descendants "$root")
	# shellcheck disable=SC2086 # word splitting of the pid list is intended
	kill -"$sig" "$root" $pids 2>/dev/null || true
}

GOT_SIGNAL=""
run_on_signal() {
	local sig=$1 code=$2
	trap '' INT TERM HUP
	GOT_SIGNAL=$sig
	# A terminal Ctrl-C already reached CMD (it shares our process group), so
	# INT is only forwarded later if CMD is still alive; TERM/HUP usually come
	# from a supervisor and are forwarded to CMD's whole process tree now.
	if [[ $sig != INT && -n $CHILD_PID ]] && pid_alive "$CHILD_PID"; then
		signal_tree "$sig" "$CHILD_PID"
	fi
	exit "$code"
}

run_cleanup() {
	local rc=$? i
	set +e
	trap '' INT TERM HUP
	if [[ -n $CHILD_PID ]]; then
		for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
			pid_alive "$CHILD_PID" || break
			# SIGINT sent to this script alone (not via the terminal): pass it on.
			if ((i == 30)) && [[ $GOT_SIGNAL == INT ]]; then
				signal_tree INT "$CHILD_PID"
			fi
			sleep 0.1
		done
		if pid_alive "$CHILD_PID"; then
			warn "command (pid $CHILD_PID) still running after ${STOP_TIMEOUT}s, sending SIGTERM"
			signal_tree TERM "$CHILD_PID"
			for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
				pid_alive "$CHILD_PID" || break
				sleep 0.1
			done
			if pid_alive "$CHILD_PID"; then
				warn "command (pid $CHILD_PID) ignored SIGTERM, sending SIGKILL"
				signal_tree KILL "$CHILD_PID"
			fi
		fi
		# No `wait` here: after an interrupted `wait`, bash may still list the
		# (already reaped) child as running and block.
	fi
	stop_started || warn "failed to stop some dependencies; see above (try 'stack.sh down')"
	exit "$rc"
}

cmd_run() {
	[[ ${1-} == -- ]] && shift
	(($#)) || die "run: missing command (usage: stack.sh run -- CMD [ARGS...])"
	MSG_FD=2
	trap run_cleanup EXIT
	trap 'run_on_signal INT 130' INT
	trap 'run_on_signal TERM 143' TERM
	trap 'run_on_signal HUP 129' HUP
	cmd_up
	# Run CMD in the background so signals reach our traps while we wait.
	# Bash makes background jobs ignore SIGINT/SIGQUIT and read /dev/null;
	# undo both so CMD behaves as if run in the foreground.
	(
		trap - INT QUIT
		export PICKET_TEST_PYTHON=$TEST_VENV/bin/python
		exec "$@"
	) <&0 &
	CHILD_PID=$!
	local rc=0
	wait "$CHILD_PID" || rc=$?
	CHILD_PID=""
	exit "$rc"
}

case ${1-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
run)
	shift
	cmd_run "$@"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
