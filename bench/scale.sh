#!/usr/bin/env bash
# Review listings at scale (issue 17 item 3): seeds SCALE_REVIEWS reviews through the store's own
# API (every review with its chain entry) into a fresh SQLite file and a fresh PostgreSQL
# database, then prints an admin's and an approver's pending-list latency (p50/p99 of
# SCALE_QUERIES first pages). Prints, never asserts.
#
#   SCALE_REVIEWS=100000 bash bench/scale.sh     (1,000,000: ~10 min per store to seed)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${SCALE_REVIEWS:=100000}" "${SCALE_QUERIES:=200}"
export SCALE_REVIEWS SCALE_QUERIES
PG_ADMIN="${WARDEN_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo build -q --release -p warden-store --example scale
bin=target/release/examples/scale
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "== sqlite ($SCALE_REVIEWS reviews; load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$bin" "sqlite://$dir/scale.db"
db="warden_scale_$$"
psql "$PG_ADMIN" -qc "CREATE DATABASE $db"
trap 'rm -rf "$dir"; psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $db"' EXIT
echo "== postgres ($SCALE_REVIEWS reviews; load: $(cut -d' ' -f1-3 /proc/loadavg))"
# Seeded, then VACUUM ANALYZE as autovacuum does after a bulk load (until then PostgreSQL has
# no statistics and no visibility map, and counts visit the heap), then queried.
SCALE_QUERIES=0 "$bin" "${PG_ADMIN%/*}/$db"
psql "${PG_ADMIN%/*}/$db" -qc "VACUUM ANALYZE"
echo "(vacuumed and analysed; load: $(cut -d' ' -f1-3 /proc/loadavg))"
SCALE_SEED=0 "$bin" "${PG_ADMIN%/*}/$db"
