"""psycopg 3 dropping prepared statements through the proxy under statement review (driven by
tests/clients.rs), where the proxy gives every prepared statement another name on the server.

Usage: psycopg_deallocate.py CONNINFO. Prints "OK <checks>" on success; any failure raises.
1. psycopg's cache eviction (prepare_threshold 0, prepared_max 2): psycopg drops evicted
   statements with a protocol Close (libpq >= 17) or an SQL `DEALLOCATE _pg3_N` (older libpq).
2. An SQL `DEALLOCATE _pg3_N` / `DEALLOCATE ALL` sent by hand (libpq's PQexec: a simple query)
   for statements psycopg prepared: the proxy must translate the name.
"""
import sys

import psycopg
from psycopg_checks import Checks
from psycopg import pq

conninfo = sys.argv[1]
check = Checks()


def server_names(conn):
    return [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name", prepare=False)]


with psycopg.connect(conninfo, autocommit=True) as conn:
    conn.prepare_threshold = 0
    conn.prepared_max = 2
    for round_ in range(3):
        for i in range(5):
            check(conn.execute(f"SELECT %s::int + {i}", (round_,)).fetchone()[0] == round_ + i, "evicting")
    names = server_names(conn)
    check(len(names) == 2 and all(n.startswith("_warden_") for n in names), f"two cached, renamed: {names}")

with psycopg.connect(conninfo, autocommit=True) as conn:
    conn.execute("SELECT %s::int * 2", (21,), prepare=True)
    conn.execute("SELECT %s::int * 3", (14,), prepare=True)
    check(len(server_names(conn)) == 2, "two prepared")
    res = conn.pgconn.exec_(b"DEALLOCATE _pg3_0")
    check(res.status == pq.ExecStatus.COMMAND_OK, f"DEALLOCATE _pg3_0: {res.error_message!r}")
    check(len(server_names(conn)) == 1, "one left")
    res = conn.pgconn.exec_(b"DEALLOCATE ALL")
    check(res.status == pq.ExecStatus.COMMAND_OK, f"DEALLOCATE ALL: {res.error_message!r}")
    check(server_names(conn) == [], "none left")
check.ok()
