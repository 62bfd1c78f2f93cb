#!/usr/bin/env python3
"""Runs the TPC-H queries on DuckDB over Parquet files (as `flotilla tpch-gen` writes them)
and prints, as JSON, the best wall time in milliseconds, the row count and the rows of each
query (decimals as numbers, dates as ISO text), for the benchmark to check answers with.

Used by the `tpch-cluster` benchmark as the independent reference engine:
    python scripts/duckdb_tpch.py --data DIR --queries ../shared/tpch/queries --runs 2
"""
import argparse
import datetime
import decimal
import json
import pathlib
import time

import duckdb

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def plain(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--queries", required=True, type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    connection = duckdb.connect()
    for table in TABLES:
        # One file per table (`flotilla tpch-gen`), or a table directory written by Flotilla
        # (CREATE TABLE AS into a files catalog: its data files under data/, all committed in
        # a benchmark's fresh catalog, and its _flotilla/ metadata).
        path = args.data / f"{table}.parquet"
        if not path.exists():
            path = args.data / table / "data" / "*.parquet"
        connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    results = {}
    for path in sorted(args.queries.glob("q*.sql")):
        sql = path.read_text()
        best, rows = None, []
        for _ in range(args.runs):
            started = time.perf_counter()
            rows = connection.execute(sql).fetchall()
            elapsed = (time.perf_counter() - started) * 1000.0
            best = elapsed if best is None else min(best, elapsed)
        values = [[plain(v) for v in row] for row in rows]
        results[path.stem] = {"millis": best, "rows": len(rows), "values": values}
    print(json.dumps({"threads": connection.execute("SELECT current_setting('threads')").fetchone()[0], "queries": results}))


if __name__ == "__main__":
    main()
