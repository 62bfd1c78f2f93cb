#!/usr/bin/env python3
"""Runs the TPC-H queries on a reference engine in this process, DuckDB or DataFusion (its
Python bindings, the same DataFusion version as Flotilla's), over Parquet files, and prints,
as JSON, the best wall time in milliseconds, the row count and the rows of each query
(decimals as numbers, dates as ISO text), for the benchmarks to check answers with.

Used by the `tpch-cluster` and `tpch-files` benchmarks:
    python scripts/tpch_reference.py --engine duckdb --data DIR --queries ../shared/tpch/queries --runs 2 [--warmup 1]

DIR holds TABLE.parquet files (`flotilla tpch-gen`) or TABLE/data/*.parquet directories
(tables Flotilla wrote with CREATE TABLE AS, all committed in a benchmark's fresh catalog).
"""
import argparse
import datetime
import decimal
import json
import os
import pathlib
import time

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]


def plain(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def table_paths(data):
    for table in TABLES:
        path = data / f"{table}.parquet"
        if path.exists():
            yield table, str(path), False
        else:
            yield table, str(data / table / "data"), True


class DuckDB:
    def __init__(self, data):
        import duckdb

        self.connection = duckdb.connect()
        for table, path, folder in table_paths(data):
            pattern = f"{path}/*.parquet" if folder else path
            self.connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}')")
        self.threads = self.connection.execute("SELECT current_setting('threads')").fetchone()[0]
        self.version = duckdb.__version__

    def run(self, sql):
        return self.connection.execute(sql).fetchall()


class DataFusion:
    def __init__(self, data):
        import datafusion

        # The defaults of `SessionContext::new()`: one partition per core.
        self.context = datafusion.SessionContext()
        for table, path, folder in table_paths(data):
            self.context.register_parquet(table, path + ("/" if folder else ""))
        self.threads = os.cpu_count()
        self.version = datafusion.__version__

    def run(self, sql):
        batches = self.context.sql(sql).collect()
        rows = []
        for batch in batches:
            columns = [column.to_pylist() for column in batch.columns]
            rows.extend(zip(*columns))
        return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["duckdb", "datafusion"], default="duckdb")
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--queries", required=True, type=pathlib.Path)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=0, help="passes over every query before the timed runs")
    args = parser.parse_args()
    engine = (DuckDB if args.engine == "duckdb" else DataFusion)(args.data)
    paths = sorted(args.queries.glob("q*.sql"))
    for _ in range(args.warmup):
        for path in paths:
            engine.run(path.read_text())
    results = {}
    for path in paths:
        sql = path.read_text()
        best, rows = None, []
        for _ in range(args.runs):
            started = time.perf_counter()
            rows = engine.run(sql)
            elapsed = (time.perf_counter() - started) * 1000.0
            best = elapsed if best is None else min(best, elapsed)
        values = [[plain(v) for v in row] for row in rows]
        results[path.stem] = {"millis": best, "rows": len(rows), "values": values}
    print(json.dumps({"engine": args.engine, "version": engine.version, "threads": engine.threads, "queries": results}))


if __name__ == "__main__":
    main()
