#!/usr/bin/env bash
# The cost of reading one statement under a command rule (PostgreSQL's own parser via
# libpg_query, then Warden's walk of the parse tree): nanoseconds per statement, release build.
# Usage: bench/classify.sh [ROUNDS]   (default 20000 per statement)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo run --release -q -p warden-core --example classify_cost -- "${1:-20000}"
