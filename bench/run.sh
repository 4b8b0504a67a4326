#!/usr/bin/env bash
# Warden PostgreSQL proxy benchmark: pgbench through nothing (direct), pgbouncer (session mode),
# Warden's proxy alone (examples/bench_proxy.rs: no rule, every statement audited into a
# counting sink) and the whole Warden gateway (`warden gateway`, default SQLite store, no rule on
# the connection, every statement written to the hash-chained audit log), in one run, plus
# `forward` (examples/bench_forward.rs: a byte forwarder that parses nothing, audits nothing:
# the floor of any extra hop on this runtime; left out with TLS=1, where it would carry the
# client's TLS end to end), all with
# sslmode=disable (no TLS on any hop, so like is compared with like); TLS=1 instead puts TLS on
# every hop of every target (sslmode=require, one self-signed P-256 certificate for both proxies).
#
# Under a command rule: `warden-review` (the proxy alone with REVIEW=1: every statement read by
# the classifier — PostgreSQL's own parser — and run read-only on the server) and
# `gateway-rule` (the gateway, a non-admin engineer on a connection bound to a command rule:
# every read parsed, allowed and run read-only, every statement in the audit chain); compare
# each with its no-rule twin (`warden`, `gateway`) in the same run.
#
# Usage: bench/run.sh   (env: DURATION=15 ROUNDS=3 CLIENTS=8 JOBS=2 SCALE=10 PGHOST=127.0.0.1 PGPORT=5432
#                        PGUSER=postgres PGDATABASE=test WARDEN_THREADS=2 RELAY_THREADS=nproc/2 GATEWAY_RELAY_THREADS=(gateway default)
#                        WORKLOADS="select-only tpcb-like rows-10k" (or connect)
#                        CONNECTS=200
#                        TARGETS="direct pgbouncer forward warden gateway" TLS=0)
# rows-10k: one query returning 10,000 rows of pgbench_accounts per transaction (large results).
# connect: CONNECTS connections opened one after the other through psycopg (bench/connect.py),
# startup packet to ReadyForQuery; p50/p99 per target and the p50's distance to direct.
# Rounds are interleaved (direct, pgbouncer, warden back to back for each case) and the median
# per case is reported, so a burst of load from elsewhere on the machine skews one sample only.
# Needs: PostgreSQL reachable as above, pgbench, cargo; installs pgbouncer (Debian) if missing.
set -euo pipefail

DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-3}
WORKLOADS=${WORKLOADS:-select-only tpcb-like rows-10k}
TARGETS=${TARGETS:-direct pgbouncer forward warden warden-review gateway gateway-rule}
[ "${TLS:-0}" = 1 ] && TARGETS=${TARGETS/forward/}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
PGDATABASE=${PGDATABASE:-test}
WARDEN_THREADS=${WARDEN_THREADS:-2}
# Relay threads as the gateway picks them: one per two cores, at least one.
RELAY_THREADS=${RELAY_THREADS:-$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))}
BOUNCER_PORT=${BOUNCER_PORT:-6432}
WARDEN_PORT=${WARDEN_PORT:-6433}
FORWARD_PORT=${FORWARD_PORT:-6435}
REVIEW_PORT=${REVIEW_PORT:-6436}
GATEWAY_PORT=${GATEWAY_PORT:-6434}
GATEWAY_HTTP=${GATEWAY_HTTP:-127.0.0.1:8098}
TLS=${TLS:-0}
SSLMODE=disable
[ "$TLS" = 1 ] && SSLMODE=require
export PGSSLMODE=$SSLMODE

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/warden-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

tls_ini=""
tls_env=()
if [ "$TLS" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
        -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
    tls_ini="client_tls_sslmode = require
client_tls_key_file = $work/key.pem
client_tls_cert_file = $work/cert.pem
server_tls_sslmode = require"
    tls_env=(TLS_CERT="$work/cert.pem" TLS_KEY="$work/key.pem" UPSTREAM_TLS=require)
fi

if ! command -v pgbouncer >/dev/null; then
    echo "installing pgbouncer (Debian package)…" >&2
    apt-get install -y pgbouncer >/dev/null || { apt-get update >/dev/null && apt-get install -y pgbouncer >/dev/null; }
fi
pg_isready -h "$PGHOST" -p "$PGPORT" >/dev/null || { echo "PostgreSQL is not reachable at $PGHOST:$PGPORT" >&2; exit 1; }

echo "building the proxy and the gateway (release)…" >&2
(cd "$root" && cargo build --release -q -p warden-pgwire --example bench_proxy --example bench_forward && cargo build --release -q -p warden-cli)
proxy_bin="$root/target/release/examples/bench_proxy"
forward_bin="$root/target/release/examples/bench_forward"
warden_bin="$root/target/release/warden"

# pgbouncer, session mode, trust to its clients, trust upstream (as the PostgreSQL here).
cat >"$work/pgbouncer.ini" <<INI
[databases]
$PGDATABASE = host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
$tls_ini
INI
echo "\"$PGUSER\" \"\"" >"$work/users.txt"
chmod 644 "$work"/*
if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$work" # pgbouncer refuses to run as root; it writes its log here
    runuser -u postgres -- pgbouncer -q "$work/pgbouncer.ini" 2>/dev/null & pids+=($!)
else
    pgbouncer -q "$work/pgbouncer.ini" 2>/dev/null & pids+=($!)
fi
env "${tls_env[@]}" RELAY_THREADS=$RELAY_THREADS "$proxy_bin" "127.0.0.1:$WARDEN_PORT" "$PGHOST:$PGPORT" "$PGUSER" "$PGDATABASE" "$WARDEN_THREADS" 2>"$work/warden.log" & pids+=($!)
proxy_pid=$!
env "${tls_env[@]}" REVIEW=1 RELAY_THREADS=$RELAY_THREADS "$proxy_bin" "127.0.0.1:$REVIEW_PORT" "$PGHOST:$PGPORT" "$PGUSER" "$PGDATABASE" "$WARDEN_THREADS" 2>"$work/warden-review.log" & pids+=($!)
review_pid=$!
"$forward_bin" "127.0.0.1:$FORWARD_PORT" "$PGHOST:$PGPORT" 2>"$work/forward.log" & pids+=($!)
# The whole gateway, as README's first command starts it (fresh data dir, SQLite store), with
# a connection to the benchmark database and no rule on it.
export WARDEN_CONFIG="$work/cli.json"
gateway_env=()
[ "$TLS" = 1 ] && gateway_env=(WARDEN_TLS_CERT="$work/cert.pem" WARDEN_TLS_KEY="$work/key.pem")
[ -n "${GATEWAY_RELAY_THREADS:-}" ] && gateway_env+=(WARDEN_PG_RELAY_THREADS="$GATEWAY_RELAY_THREADS")
env "${gateway_env[@]}" WARDEN_DATA_DIR="$work/gateway" WARDEN_LISTEN="$GATEWAY_HTTP" WARDEN_PG_LISTEN="127.0.0.1:$GATEWAY_PORT" \
    WARDEN_ADMIN_PASSWORD=bench-password-1 RUST_LOG=warn "$warden_bin" gateway >"$work/gateway.log" 2>&1 & pids+=($!)
for port in "$BOUNCER_PORT" "$WARDEN_PORT" "$REVIEW_PORT" "$FORWARD_PORT" "$GATEWAY_PORT"; do
    for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p "$port" >/dev/null 2>&1 && break; sleep 0.1; done
done
echo bench-password-1 | "$warden_bin" login --gateway "http://$GATEWAY_HTTP" --email admin@warden.local --password-stdin >/dev/null
"$warden_bin" admin create connection bench --type postgres \
    --url "postgres://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE?sslmode=$SSLMODE" >/dev/null
gateway_token=$("$warden_bin" admin create token --user admin@warden.local -o json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
# The same database under a command rule, used by an engineer (not an admin: admins may be
# auto-approved): reads run, anything else would wait for a dba.
"$warden_bin" admin create connection bench-rule --type postgres \
    --url "postgres://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE?sslmode=$SSLMODE" >/dev/null
"$warden_bin" admin create rule bench-rule-cmd --type command --connections bench-rule --approval-groups dba >/dev/null
"$warden_bin" admin create user engineer@warden.local --groups dev >/dev/null
engineer_token=$("$warden_bin" admin create token --user engineer@warden.local -o json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')

if [ "$WORKLOADS" != connect ]; then
    echo "initialising pgbench tables (scale $SCALE, direct)…" >&2
    pgbench -i -q -s "$SCALE" -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" "$PGDATABASE" >/dev/null 2>&1
fi

# target -> "host port user"
declare -A target=(
    [direct]="$PGHOST $PGPORT $PGUSER"
    [pgbouncer]="127.0.0.1 $BOUNCER_PORT $PGUSER"
    [forward]="127.0.0.1 $FORWARD_PORT $PGUSER"
    [warden]="127.0.0.1 $WARDEN_PORT bench@warden.test"
    [warden-review]="127.0.0.1 $REVIEW_PORT bench@warden.test"
    [gateway-rule]="127.0.0.1 $GATEWAY_PORT engineer@warden.local"
    [gateway]="127.0.0.1 $GATEWAY_PORT admin@warden.local"
)
echo "SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid <= 10000;" >"$work/rows.sql"
chmod 644 "$work/rows.sql"
results="$work/results.tsv"
: >"$results"
run_one() { # workload mode target
    local workload=$1 mode=$2 name=$3 script_args=() db=$PGDATABASE password=bench-token
    read -r host port user <<<"${target[$name]}"
    [ "$name" = gateway ] && db=bench password=$gateway_token
    [ "$name" = gateway-rule ] && db=bench-rule password=$engineer_token
    if [ "$workload" = connect ]; then
        local p50 p90 p99 mean
        read -r p50 p90 p99 mean < <(python3 "$root/bench/connect.py" "$host" "$port" "$user" "$db" "$password" "${CONNECTS:-200}") \
            || { echo "connect.py failed against $name" >&2; exit 1; }
        printf '%s\t%s\t%s\t%s\t%s\n' connect - "$name" "$p50" "$p99" >>"$results"
        printf '  %-11s %-9s p50 %8s ms  p99 %8s ms  (load %s)\n' connect "$name" "$p50" "$p99" "$(cut -d' ' -f1 /proc/loadavg)" >&2
        return
    fi
    case $workload in
        select-only) script_args=(-S) ;;
        rows-10k) script_args=(-f "$work/rows.sql") ;;
    esac
    local out
    out=$(PGPASSWORD=$password pgbench -n "${script_args[@]}" -M "$mode" -c "$CLIENTS" -j "$JOBS" -T "$DURATION" \
        -h "$host" -p "$port" -U "$user" "$db" 2>&1) || { echo "$out" >&2; exit 1; }
    local tps lat
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    printf '%s\t%s\t%s\t%s\t%s\n' "$workload" "$mode" "$name" "$tps" "$lat" >>"$results"
    printf '  %-11s %-8s %-9s %10s tps %8s ms  (load %s)\n' "$workload" "$mode" "$name" "$tps" "$lat" "$(cut -d' ' -f1 /proc/loadavg)" >&2
}

echo "pgbench: $CLIENTS clients, $JOBS threads, ${DURATION}s per run, $ROUNDS round(s), sslmode=$SSLMODE;" \
    "warden: $WARDEN_THREADS runtime worker threads, $RELAY_THREADS relay threads" >&2
for _ in $(seq "$ROUNDS"); do
    for workload in $WORKLOADS; do
        modes="simple prepared"
        [ "$workload" = connect ] && modes=-
        for mode in $modes; do
            for name in $TARGETS; do
                run_one "$workload" "$mode" "$name"
            done
        done
    done
done

echo
echo "| workload | mode | target | tps (median) | latency avg (ms, median) | vs direct | under a rule vs no rule |"
echo "|---|---|---|---:|---:|---:|---:|"
gawk -F'\t' '
    function median(list,   a, n) { n = split(list, a, " "); asort(a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    $1 == "connect" { next }
    { key = $1 FS $2 FS $3; tps[key] = tps[key] " " $4; lat[key] = lat[key] " " $5; if (!(key in seen)) { seen[key] = ++n; keys[n] = key } }
    END {
        for (i = 1; i <= n; i++) {
            key = keys[i]; split(key, k, FS)
            d = k[1] FS k[2] FS "direct"
            twin = ""
            if (k[3] == "warden-review") twin = k[1] FS k[2] FS "warden"
            if (k[3] == "gateway-rule") twin = k[1] FS k[2] FS "gateway"
            vs = (twin != "" && (twin in tps)) ? sprintf("%.2f×", median(tps[key]) / median(tps[twin])) : ""
            printf "| %s | %s | %s | %.0f | %.3f | %.2f× | %s |\n", k[1], k[2], k[3], median(tps[key]), median(lat[key]), median(tps[key]) / median(tps[d]), vs
        }
    }' "$results"
if grep -q '^connect' "$results"; then
    echo
    echo "| connect (psycopg, startup to ReadyForQuery) | p50 (ms, median of rounds) | p99 (ms, median) | p50 − direct |"
    echo "|---|---:|---:|---:|"
    gawk -F'\t' '
        function median(list,   a, n) { n = split(list, a, " "); asort(a); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        $1 == "connect" { p50[$3] = p50[$3] " " $4; p99[$3] = p99[$3] " " $5; if (!($3 in seen)) { seen[$3] = ++n; keys[n] = $3 } }
        END { for (i = 1; i <= n; i++) { k = keys[i]; printf "| %s | %.2f | %.2f | %+.2f ms |\n", k, median(p50[k]), median(p99[k]), median(p50[k]) - median(p50["direct"]) } }
    ' "$results"
fi
kill -INT "$proxy_pid" "$review_pid" 2>/dev/null || true
sleep 1
tail -n 1 "$work/warden.log" >&2
tail -n 1 "$work/warden-review.log" >&2
if [[ " $TARGETS " == *" gateway "* ]]; then
    echo "gateway: $("$warden_bin" audit verify 2>&1 | tail -n 1)" >&2
fi
