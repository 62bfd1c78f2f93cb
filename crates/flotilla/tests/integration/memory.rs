//! Memory: a query over `query.max-memory-per-node` fails with `EXCEEDED_LOCAL_MEMORY_LIMIT`
//! while the worker keeps serving; an aggregation larger than the pool finishes by spilling;
//! the session lowers the per-node and the cluster-wide (`EXCEEDED_GLOBAL_MEMORY_LIMIT`)
//! limits.

use serde_json::Value;

use crate::distributed::wait_for_nodes;
use crate::harness::{ProcessCluster, TempDir};
use crate::Http;

/// An `etc/` whose config.properties holds `properties`.
fn etc_with(properties: &str) -> TempDir {
    let etc = TempDir::new("flotilla-etc");
    std::fs::write(etc.path.join("config.properties"), properties).unwrap();
    etc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_per_node_limit_fails_and_the_worker_keeps_serving() {
    let etc = etc_with("query.max-memory-per-node=8MB\n");
    let mut cluster = ProcessCluster::builder().workers(1).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 3).await;
    // A join's build side (a million and a half orders with their comments) cannot spill:
    // far more than 8MB on the worker. (With spill-enabled=false, operators that try to
    // spill first fail with DataFusion's "DiskManager is disabled" instead of the limit's
    // message, so spilling stays on here.)
    let join = "SELECT count(*) FROM tpch.sf1.lineitem l JOIN tpch.sf1.orders o ON l.orderkey = o.orderkey AND l.comment <> o.comment";
    let error = http.error(join).await;
    assert_eq!(error["errorName"], "EXCEEDED_LOCAL_MEMORY_LIMIT", "{error}");
    assert!(error["message"].as_str().unwrap().contains("8.00MB"), "{error}");
    // The worker is alive and serves the next query.
    assert!(cluster.cluster.workers[0].is_running());
    let (_, rows) = http.rows("SELECT count(*) FROM tpch.sf1.orders").await;
    assert_eq!(rows, vec![vec![Value::from(1500000)]]);
}

/// An aggregation whose state is far larger than the pool spills and still gives every
/// group once; the session's `query_max_memory` and `query_max_memory_per_node` lower the
/// limits. (A sort over shuffled input does not finish in such a pool yet: the exchange
/// buffers reserve the pool without being able to spill, leaving the sorter nothing; see
/// the notes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_aggregation_spills_and_the_session_lowers_the_memory_limits() {
    let spill = TempDir::new("flotilla-spill");
    let etc = etc_with(&format!("memory.pool-size=64MB\nspiller-spill-path={}\n", spill.path.display()));
    let cluster = ProcessCluster::builder().workers(1).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 3).await;
    let pools = "SELECT node_id, memory_pool_bytes FROM system.runtime.nodes WHERE memory_pool_bytes IS NOT NULL";
    let (_, rows) = http.rows(pools).await;
    assert_eq!(rows, vec![vec![Value::from("worker-1"), Value::from(64u64 << 20)]], "only the worker has a pool");
    // A million and a half groups, each holding a comment: far more state than the pool.
    let grouped = "SELECT count(*), sum(orderkey) FROM (SELECT orderkey, max(comment) c FROM tpch.sf1.lineitem GROUP BY orderkey)";
    let (_, rows) = http.rows(grouped).await;
    let (_, expected) = http.rows("SELECT count(*), sum(orderkey) FROM tpch.sf1.orders").await;
    assert_eq!(rows, expected, "every group once after spilling");
    let (_, plan) = http.rows(&format!("EXPLAIN ANALYZE {grouped}")).await;
    let text: String = plan.iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join("\n");
    let spilled = text
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(spilled > 0, "the aggregation spilled: {text}");

    // The session lowers both limits: across the cluster, which the coordinator watches
    // from the workers' heartbeats (a join whose build side stays in memory while it probes
    // for many seconds) ...
    let long_join = "SELECT count(*) FROM tpch.sf10.lineitem l JOIN tpch.sf1.orders o ON l.orderkey = o.orderkey";
    let request = http.post(long_join).header("X-Trino-Session", "query_max_memory=1MB");
    let responses = http.run_with(request).await;
    let last = responses.last().unwrap();
    assert_eq!(last["error"]["errorName"], "EXCEEDED_GLOBAL_MEMORY_LIMIT", "{last}");
    assert_eq!(last["error"]["message"], "Query exceeded distributed user memory limit of 1.00MB");
    // Its peak counts what the workers reported holding (more than the limit, or it would
    // not have been killed).
    let id = last["id"].as_str().unwrap();
    let info: Value = http.get_json(&format!("{}/v1/query/{id}", http.base)).await;
    let peak = info["queryStats"]["peakMemoryBytes"].as_u64().unwrap();
    assert!(peak > 1 << 20, "peakMemoryBytes {peak} includes the workers' memory");
    // ... and per node (a join's build side cannot spill) ...
    let join = "SELECT count(*) FROM tpch.sf1.lineitem l JOIN tpch.sf1.orders o ON l.orderkey = o.orderkey AND l.comment <> o.comment";
    let request = http.post(join).header("X-Trino-Session", "query_max_memory_per_node=4MB");
    let error = http.error_with(request).await;
    assert_eq!(error["errorName"], "EXCEEDED_LOCAL_MEMORY_LIMIT", "{error}");
    assert!(error["message"].as_str().unwrap().contains("4.00MB"), "{error}");
}
