"""Chaos with the real Python client: 8 threads run TPC-H queries through the gateway of a
cluster of 2 resource managers, 2 coordinators and 3 workers while, one after the other, a
worker, a coordinator and a resource manager are SIGKILLed, the killed ones are started
again, and a worker and a coordinator are drained (SIGTERM).

No query may fail, and every answer must equal the one computed before the faults. Queries
that lost a worker are run again (retry-policy=QUERY); those of the killed coordinator are
adopted by the other one. The counts and the extra latency of the retried and adopted queries
go to $FLOTILLA_REPORT_DIR/chaos.json (and the test output).

The killed coordinator is started again before the other one drains: with two coordinators,
draining the last one would leave none to take new queries."""
import json
import os
import pathlib
import signal
import statistics
import subprocess
import threading
import time
from decimal import Decimal

import requests
import trino

THREADS = 8
DURATION = 32.0
# (seconds into the run, what happens)
TIMELINE = [
    (4.0, "kill worker-1"),
    (8.0, "kill coordinator-1"),
    (12.0, "kill resource-manager-1"),
    (16.0, "restart killed"),
    (21.0, "drain worker-2"),
    (25.0, "drain coordinator-2"),
]
# TPC-H shaped queries of about a second here, each with one answer (aggregates, ordered by
# every grouping key): the answers can be compared exactly.
QUERIES = [
    "SELECT l_returnflag, l_linestatus, sum(l_quantity), sum(l_extendedprice), count(*) FROM tpch.tiny.lineitem "
    "WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus",
    "SELECT count(*), sum(o_totalprice) FROM tpch.sf1.orders WHERE o_orderpriority = '1-URGENT'",
    "SELECT n_name, count(*) FROM tpch.tiny.customer JOIN tpch.tiny.nation ON c_nationkey = n_nationkey "
    "GROUP BY n_name ORDER BY n_name",
    "SELECT sum(l_extendedprice * l_discount) FROM tpch.tiny.lineitem "
    "WHERE l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
]


def normalise(rows):
    """Rows as comparable values (floats rounded: sums of doubles may differ in the last bits
    with the order the workers add them in)."""
    def value(v):
        if isinstance(v, float):
            return round(v, 6)
        if isinstance(v, Decimal):
            return str(v)
        return v
    return [[value(v) for v in row] for row in rows]


def run_client(url, index, start, records, expected):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    turn = index
    while time.monotonic() - start < DURATION:
        sql = QUERIES[turn % len(QUERIES)]
        turn += 1
        connection = trino.dbapi.connect(host=host, port=int(port), user=f"client{index}", catalog="tpch")
        began = time.monotonic() - start
        record = {"thread": index, "sql": sql, "start": began}
        try:
            cursor = connection.cursor()
            cursor.execute(sql)
            rows = normalise(cursor.fetchall())
            record.update(ok=rows == expected[sql], query_id=cursor.query_id)
            if rows != expected[sql]:
                record["error"] = f"wrong answer: {rows!r} instead of {expected[sql]!r}"
            record["end"] = time.monotonic() - start
            # Asked at once: its coordinator may be drained later in the run.
            info = requests.get(f"{url}/v1/query/{cursor.query_id}", timeout=5)
            if info.ok:
                record["adopted"] = info.json().get("adoptedFrom") is not None
                record["retried"] = len(info.json().get("failedAttempts") or [])
            else:
                record["infoError"] = f"{info.status_code}: {info.text[:200]}"
        except Exception as error:  # every failure is recorded and judged below
            record.update(ok=False, error=f"{type(error).__name__}: {error}", query_id=getattr(error, "query_id", None))
            record["end"] = time.monotonic() - start
            # What the query went through, for the report (its attempts, an adoption).
            try:
                info = requests.get(f"{url}/v1/query/{record['query_id']}", timeout=5)
                details = info.json() if info.ok else {"status": info.status_code, "text": info.text[:200]}
                record["details"] = {
                    key: details.get(key) for key in ("failedAttempts", "adoptedFrom", "coordinator", "tasks", "status", "text")
                }
            except Exception as lookup:  # noqa: BLE001 - only for the report
                record["details"] = f"{type(lookup).__name__}: {lookup}"
        finally:
            connection.close()
        record.setdefault("end", time.monotonic() - start)
        records.append(record)


class Node:
    """A node `flotilla up` started, which this test can kill and start again (same command,
    same port, same secret)."""

    def __init__(self, node_id, url, pid):
        self.node_id, self.url, self.pid = node_id, url, pid
        self.command = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        self.env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        self.process = None

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)

    def drain(self):
        os.kill(self.pid, signal.SIGTERM)

    def restart(self, log_dir):
        port = self.url.rsplit(":", 1)[1]
        command = list(self.command)
        command[command.index(b"--port") + 1] = port.encode()
        log = open(log_dir / f"{self.node_id}.restarted.log", "wb")
        # --exit-with-stdin: it lives while this pipe is open.
        self.process = subprocess.Popen(command, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        self.pid = self.process.pid

    def stop(self):
        if self.process is not None:
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_no_query_fails_while_nodes_die_drain_and_restart(start_cluster, tmp_path):
    url, listed = start_cluster("--resource-managers", "2", "--coordinators", "2", "--workers", "3")
    nodes = {node_id: Node(node_id, node_url, pid) for node_id, (node_url, pid) in listed.items()}
    active = lambda: [n for n in requests.get(f"{url}/v1/node", timeout=5).json() if n.get("state", "active") == "active"]
    wait_until(lambda: len(active()) >= 7, 20, "every node in the view")
    wait_until(lambda: len(requests.get(f"{url}/v1/gateway", timeout=5).json()["coordinators"]) == 2, 20, "the gateway")

    expected = {}
    host, port = url.removeprefix("http://").rsplit(":", 1)
    for sql in QUERIES:
        connection = trino.dbapi.connect(host=host, port=int(port), user="reference", catalog="tpch")
        cursor = connection.cursor()
        cursor.execute(sql)
        expected[sql] = normalise(cursor.fetchall())
        connection.close()

    records = []
    events = []
    start = time.monotonic()
    threads = [threading.Thread(target=run_client, args=(url, i, start, records, expected)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    killed = []
    try:
        for at, event in TIMELINE:
            time.sleep(max(0.0, at - (time.monotonic() - start)))
            action, _, node_id = event.partition(" ")
            if action == "kill":
                nodes[node_id].kill()
                killed.append(nodes[node_id])
            elif action == "drain":
                nodes[node_id].drain()
            else:
                for node in killed:
                    node.restart(tmp_path)
            events.append({"at": round(time.monotonic() - start, 2), "event": event})
        for thread in threads:
            thread.join(DURATION + 120)
        restarted_back = sorted(n["nodeId"] for n in active() if n["nodeId"] in {k.node_id for k in killed})
    finally:
        for node in killed:
            node.stop()

    failed = [r for r in records if not r["ok"]]
    plain = {}
    for record in records:
        if record["ok"] and not record.get("adopted") and not record.get("retried"):
            plain.setdefault(record["sql"], []).append(record["end"] - record["start"])
    median = {sql: statistics.median(times) for sql, times in plain.items()}

    def extra(kind):
        extras = [r["end"] - r["start"] - median.get(r["sql"], 0.0) for r in records if r["ok"] and r.get(kind)]
        return {
            "queries": len(extras),
            "medianExtraSeconds": round(statistics.median(extras), 3) if extras else None,
            "maxExtraSeconds": round(max(extras), 3) if extras else None,
        }

    report = {
        "threads": THREADS,
        "seconds": DURATION,
        "cluster": "2 resource managers, 2 coordinators, 3 workers, 1 gateway",
        "events": events,
        "queries": len(records),
        "succeeded": len(records) - len(failed),
        "failed": len(failed),
        "failures": [
            {
                "sql": r["sql"][:60],
                "error": r["error"][:600],
                "queryId": r.get("query_id"),
                "from": round(r["start"], 2),
                "to": round(r["end"], 2),
                "details": r.get("details"),
            }
            for r in failed
        ],
        "queryInfoUnavailable": [r["infoError"] for r in records if "infoError" in r],
        "medianSecondsByQuery": {sql[:60]: round(t, 3) for sql, t in median.items()},
        "adopted": extra("adopted"),
        "retriedAfterWorkerLoss": extra("retried"),
        "restartedNodesBackInView": restarted_back,
    }
    out = pathlib.Path(os.environ.get("FLOTILLA_REPORT_DIR", "target/reports"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))

    assert report["failed"] == 0, report
    assert report["succeeded"] > 3 * THREADS, report
    # Work went on after the last drain, on the restarted coordinator.
    assert any(r["ok"] and r["start"] > TIMELINE[-1][0] + 1 for r in records), report
