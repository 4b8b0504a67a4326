#!/usr/bin/env bash
# CPU cost per transaction of each proxy (user µs, system µs, context switches), read from
# /proc while pgbench runs select-only through it: the measure that background load on a
# shared machine disturbs least. Also the whole machine's CPU per transaction and its idle
# share, with a direct run as the baseline: what the extra hop costs everyone. Starts
# pgbouncer (session mode), the byte forwarder (examples/bench_forward.rs: the floor of any
# extra hop) and Warden's bench_proxy like run.sh does; sslmode=disable everywhere.
#
# Usage: bench/cpu.sh   (env: DURATION=10 CLIENTS=8 JOBS=2 PGHOST PGPORT PGUSER PGDATABASE RELAY_THREADS=nproc/2;
#                        expects pgbench tables: run bench/run.sh once, or pgbench -i -s 10)
set -euo pipefail
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
PGDATABASE=${PGDATABASE:-test}
# Relay threads as the gateway picks them: one per two cores, at least one.
RELAY_THREADS=${RELAY_THREADS:-$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))}
export PGSSLMODE=disable
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/warden-cpu.XXXXXX)
chmod 755 "$work"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT

command -v pgbouncer >/dev/null || apt-get install -y pgbouncer >/dev/null
(cd "$root" && cargo build --release -q -p warden-pgwire --example bench_proxy --example bench_forward)
cat >"$work/pgbouncer.ini" <<INI
[databases]
$PGDATABASE = host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=$PGUSER
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6442
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
echo "\"$PGUSER\" \"\"" >"$work/users.txt"
chmod 644 "$work"/*
if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$work"
    runuser -u postgres -- pgbouncer -q "$work/pgbouncer.ini" 2>/dev/null & pids+=($!)
else
    pgbouncer -q "$work/pgbouncer.ini" 2>/dev/null & pids+=($!)
fi
RELAY_THREADS=$RELAY_THREADS "$root/target/release/examples/bench_proxy" 127.0.0.1:6443 "$PGHOST:$PGPORT" "$PGUSER" "$PGDATABASE" 2 2>/dev/null &
warden=$!
pids+=("$warden")
"$root/target/release/examples/bench_forward" 127.0.0.1:6444 "$PGHOST:$PGPORT" 2>/dev/null &
forward=$!
pids+=("$forward")
for port in 6442 6443 6444; do
    for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p "$port" >/dev/null 2>&1 && break; sleep 0.1; done
done
bouncer=$(cat "$work/pgbouncer.pid")

busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
measure() { # name pid port user mode (pid 0: direct, no proxy)
    local name=$1 pid=$2 port=$3 user=$4 mode=$5 u0=0 s0=0 u1=0 s1=0 c0=0 c1=0 out n tps hz b0 i0 b1 i1
    hz=$(getconf CLK_TCK)
    read -r b0 i0 < <(busy)
    if [ "$pid" != 0 ]; then
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        c0=$(awk '/ctxt_switches/ {s += $2} END {print s}' /proc/"$pid"/task/*/status)
    fi
    out=$(PGPASSWORD=bench pgbench -n -S -M "$mode" -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -h 127.0.0.1 -p "$port" -U "$user" "$PGDATABASE" 2>&1)
    read -r b1 i1 < <(busy)
    if [ "$pid" != 0 ]; then
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        c1=$(awk '/ctxt_switches/ {s += $2} END {print s}' /proc/"$pid"/task/*/status)
    fi
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    awk -v name="$name" -v mode="$mode" -v tps="$tps" -v n="$n" -v du="$((u1 - u0))" -v ds="$((s1 - s0))" -v dc="$((c1 - c0))" -v hz="$hz" \
        -v db="$((b1 - b0))" -v di="$((i1 - i0))" \
        'BEGIN { printf "| %s | %s | %.0f | %.2f | %.2f | %.2f | %.1f | %.1f %% |\n", name, mode, tps, du / hz * 1e6 / n, ds / hz * 1e6 / n, dc / n, db / hz * 1e6 / n, 100 * di / (db + di) }'
}
echo "| proxy | mode | tps | user µs/txn | system µs/txn | context switches/txn | machine µs/txn | machine idle |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for mode in simple prepared; do
    measure direct 0 "$PGPORT" "$PGUSER" "$mode"
    measure pgbouncer "$bouncer" 6442 "$PGUSER" "$mode"
    measure forward "$forward" 6444 "$PGUSER" "$mode"
    measure warden "$warden" 6443 bench@warden.test "$mode"
done
