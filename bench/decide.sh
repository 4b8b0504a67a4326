#!/usr/bin/env bash
# Decisions at rate (issue 17 item 4): the whole gateway (release build, fresh data dir, default
# SQLite store) with a command rule on a PostgreSQL connection; crates/warden-gateway/examples/
# decide_rate.rs drives it over HTTP as the CLI does: RATE_REQUESTERS concurrent requesters
# cycling held → approved → executed for RATE_SECONDS, then BURST commands held and waited on
# at once and approved in a burst (approve→result p50/p99), once as fast as BURST_APPROVERS
# approvers can and once paced at BURST_PACE approvals a second. Prints the gateway's RSS after
# each phase and the audit chain's verification at the end. Prints, never asserts.
#
#   bash bench/decide.sh      (env: RATE_REQUESTERS=50 RATE_SECONDS=10 BURST=1000 BURST_APPROVERS=50
#                              BURST_PACE=100
#                              PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres PGDATABASE=test)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
HTTP=${HTTP:-127.0.0.1:8099}
work=$(mktemp -d /tmp/warden-decide.XXXXXX)
gw=""
cleanup() { [ -n "$gw" ] && kill "$gw" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
pg_isready -h "$PGHOST" -p "$PGPORT" >/dev/null || { echo "PostgreSQL is not reachable at $PGHOST:$PGPORT" >&2; exit 1; }
echo "building the gateway and the driver (release)…" >&2
(cd "$root" && cargo build --release -q -p warden-cli && cargo build --release -q -p warden-gateway --example decide_rate)
warden="$root/target/release/warden"
export WARDEN_CONFIG="$work/cli.json"
# No PostgreSQL listener needed; the HTTP API is what requesters and approvers use.
WARDEN_DATA_DIR="$work/gateway" WARDEN_LISTEN="$HTTP" WARDEN_PG_LISTEN=off \
    WARDEN_ADMIN_PASSWORD=bench-password-1 RUST_LOG=warn "$warden" gateway >"$work/gateway.log" 2>&1 &
gw=$!
for _ in $(seq 100); do curl -sf "http://$HTTP/api/health" >/dev/null && break; sleep 0.1; done
echo bench-password-1 | "$warden" login --gateway "http://$HTTP" --email admin@warden.local --password-stdin >/dev/null
"$warden" admin create connection decide --type postgres \
    --url "postgres://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE?sslmode=disable" >/dev/null
"$warden" admin create rule decide-cmd --type command --connections decide --approval-groups dba >/dev/null
"$warden" admin create user engineer@warden.local --groups dev >/dev/null
"$warden" admin create user approver@warden.local --groups dba >/dev/null
token() { "$warden" admin create token --user "$1" -o json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p'; }
requester=$(token engineer@warden.local)
approver=$(token approver@warden.local)
rss() { echo "gateway RSS $(awk '/VmRSS/ {print $2, $3}' /proc/$gw/status) (peak $(awk '/VmHWM/ {print $2, $3}' /proc/$gw/status)) $1"; }
rss "before the run"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
"$root/target/release/examples/decide_rate" "http://$HTTP" decide "$requester" "$approver"
rss "after the run"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "audit: $("$warden" audit verify 2>&1 | tail -n 1)"
