"""psycopg 3 through the Warden proxy (driven by tests/clients.rs).

Usage: psycopg_client.py CONNINFO TABLE. Prints "OK <n checks>" on success; any failure raises.
Exercises server-side parameters (extended protocol), prepared statements, pipeline mode,
executemany, COPY both ways, a transaction rolled back, notices, and the backend pid the
client sees (the server's own, as in notifications).
"""
import sys

import psycopg
from psycopg_checks import Checks

conninfo, table = sys.argv[1], sys.argv[2]
check = Checks()


with psycopg.connect(conninfo, autocommit=True) as conn:
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute(f"CREATE TABLE {table} (id int primary key, name text, data bytea)")
    # Extended protocol with parameters; prepare=True makes a named server-side statement.
    for i in range(10):
        conn.execute(f"INSERT INTO {table} (id, name) VALUES (%s, %s)", (i, f"n{i}"), prepare=True)
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (id, name) VALUES (%s, %s)", [(i, f"m{i}") for i in range(10, 50)])
    # Pipeline mode: many statements in flight before any Sync answer.
    with conn.pipeline():
        cursors = [conn.execute(f"SELECT name FROM {table} WHERE id = %s", (i,)) for i in range(0, 50, 7)]
    check([c.fetchone()[0] for c in cursors] == [("n" if i < 10 else "m") + str(i) for i in range(0, 50, 7)], "pipeline")
    # COPY in and out.
    with conn.cursor().copy(f"COPY {table} (id, name) FROM STDIN") as copy:
        for i in range(100, 200):
            copy.write_row((i, f"c{i}"))
    with conn.cursor().copy(f"COPY (SELECT id FROM {table} WHERE id >= 100 ORDER BY id) TO STDOUT") as copy:
        rows = [r for r in copy.rows()]
    check(len(rows) == 100, "copy out")
    # Binary data, a transaction rolled back.
    blob = bytes(range(256)) * 4096
    conn.execute(f"UPDATE {table} SET data = %s WHERE id = 1", (blob,))
    check(conn.execute(f"SELECT data FROM {table} WHERE id = 1").fetchone()[0] == blob, "bytea round trip")
    with conn.transaction(force_rollback=True):
        conn.execute(f"DELETE FROM {table}")
    check(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 150, "rollback")
    conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
    check("hello from plpgsql" in notices, "notice")
    # Errors keep the session usable.
    try:
        conn.execute("SELECT * FROM no_such_table_here")
        check(False, "error expected")
    except psycopg.errors.UndefinedTable:
        check(True, "error expected")
    check(conn.execute("SELECT 42").fetchone()[0] == 42, "after error")
    # The client sees the server's real backend pid: its own queries and notifications agree.
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    check(conn.info.backend_pid == pid, "conn.info.backend_pid is the server's pid")
    got = []
    conn.add_notify_handler(lambda n: got.append(n))
    conn.execute("LISTEN warden_pid_check")
    conn.execute("NOTIFY warden_pid_check, 'x'")
    conn.execute("SELECT 1")
    check(len(got) == 1 and got[0].pid == pid, "a notification carries the session's pid")
    conn.execute(f"DROP TABLE {table}")

check.ok()
