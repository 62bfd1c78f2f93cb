#!/usr/bin/env python3
"""Runs the 22 TPC-H queries on DataFusion in-process (its Python bindings, the engine
version Flotilla uses) under several sets of DataFusion settings, and prints each query's
best time per set, to see which settings pay before changing Flotilla's.

    .venv/bin/python scripts/tpch_datafusion_settings.py --data target/bench-data/sf1 \
        --settings '{"defaults": {}, "broadcast": {"datafusion.optimizer.hash_join_single_partition_threshold": 67108864, "datafusion.optimizer.hash_join_single_partition_threshold_rows": 1048576}}'

DIR holds the tables as `tpch_reference.py` reads them (TABLE.parquet files from
`flotilla tpch-gen`, or TABLE/data/ folders); `scripts/bench-setup` installs the package.
"""
import argparse
import json
import pathlib
import time

from tpch_reference import table_paths


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--queries", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "tpch" / "queries")
    parser.add_argument("--settings", required=True, help="JSON: {name: {datafusion setting: value}}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="q05,q18: only these queries")
    args = parser.parse_args()

    from datafusion import SessionConfig, SessionContext

    sets = json.loads(args.settings)
    only = [q for q in args.only.split(",") if q]
    paths = [p for p in sorted(args.queries.glob("q*.sql")) if not only or p.stem in only]
    results = {}
    for name, settings in sets.items():
        config = SessionConfig()
        for key, value in settings.items():
            config = config.set(key, str(value))
        context = SessionContext(config)
        for table, path, folder in table_paths(args.data):
            context.register_parquet(table, path + ("/" if folder else ""))
        times = {}
        for path in paths:
            sql = path.read_text()
            best = None
            for _ in range(args.runs):
                started = time.perf_counter()
                context.sql(sql).collect()
                elapsed = (time.perf_counter() - started) * 1000.0
                best = elapsed if best is None else min(best, elapsed)
            times[path.stem] = best
        results[name] = times
    names = list(results)
    print("query " + " ".join(f"{name:>14}" for name in names))
    for path in paths:
        print(f"{path.stem:5} " + " ".join(f"{results[name][path.stem]:14.1f}" for name in names))
    print("total " + " ".join(f"{sum(results[name].values()):14.1f}" for name in names))


if __name__ == "__main__":
    main()
