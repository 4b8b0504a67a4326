#!/usr/bin/env python3
"""Connect latency through a real driver (psycopg 3 over libpq): startup packet to
ReadyForQuery, as an application opening a connection sees it.

    connect.py HOST PORT USER DBNAME PASSWORD COUNT

Opens COUNT connections one after the other (each closed before the next), after 5 warm-up
connects that are not counted, and prints one tab-separated line: p50, p90, p99 and mean in
milliseconds. Run by bench/run.sh (WORKLOADS=connect); prints, never asserts.
"""
import statistics
import sys
import time

import psycopg


def main() -> None:
    host, port, user, dbname, password, count = sys.argv[1:7]
    count = int(count)
    conninfo = dict(host=host, port=port, user=user, dbname=dbname,
                    password=password or None, sslmode="disable")
    for _ in range(5):
        psycopg.connect(**conninfo).close()
    ms = []
    for _ in range(count):
        t = time.perf_counter()
        conn = psycopg.connect(**conninfo)
        ms.append((time.perf_counter() - t) * 1000.0)
        conn.close()
    ms.sort()

    def pct(p: float) -> float:
        return ms[round((len(ms) - 1) * p)]

    print(f"{pct(0.5):.3f}\t{pct(0.9):.3f}\t{pct(0.99):.3f}\t{statistics.fmean(ms):.3f}")


if __name__ == "__main__":
    main()
