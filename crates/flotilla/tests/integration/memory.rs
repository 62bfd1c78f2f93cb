//! Memory: a query over `query.max-memory-per-node` fails with `EXCEEDED_LOCAL_MEMORY_LIMIT`
//! while the worker keeps serving; an aggregation larger than the pool finishes by spilling;
//! the session lowers the per-node and the cluster-wide (`EXCEEDED_GLOBAL_MEMORY_LIMIT`)
//! limits; the cluster's low-memory killer kills exactly one of two queries blocked on a
//! full pool (`CLUSTER_OUT_OF_MEMORY`), and with policy `none` they wait or fail by their
//! own limits. No worker ever dies or grows past its pool by much (its exit status and
//! memory high-water mark are checked).

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

/// An aggregation and a sort whose state is far larger than the pool spill and still give
/// the right answer; the session's `query_max_memory` and `query_max_memory_per_node` lower
/// the limits.
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
    let responses = http.run(grouped).await;
    let (_, rows) = crate::collect(&responses);
    let (_, expected) = http.rows("SELECT count(*), sum(orderkey) FROM tpch.sf1.orders").await;
    assert_eq!(rows, expected, "every group once after spilling");
    // The bytes spilled on the worker are in the query's stats and the coordinator's metrics.
    let id = responses[0]["id"].as_str().unwrap();
    let info: Value = http.get_json(&format!("{}/v1/query/{id}", http.base)).await;
    assert!(info["queryStats"]["spilledBytes"].as_u64().unwrap() > 0, "{}", info["queryStats"]);
    let metrics = http.client.get(format!("{}/metrics", http.base)).send().await.unwrap().text().await.unwrap();
    let spilled = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flotilla_query_spilled_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(spilled > 0.0, "{metrics}");
    let (_, plan) = http.rows(&format!("EXPLAIN ANALYZE {grouped}")).await;
    let text = crate::plan_text(&plan);
    let spilled = text
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(spilled > 0, "the aggregation spilled: {text}");

    // A sort of a million and a half comments (one window over all of them): in order,
    // every row once.
    let sorted = "SELECT count(*), sum(CASE WHEN prev > comment THEN 1 ELSE 0 END) FROM (SELECT comment, lag(comment) OVER (ORDER BY comment, orderkey) AS prev FROM tpch.sf1.orders)";
    let (_, rows) = http.rows(sorted).await;
    assert_eq!(rows, vec![vec![Value::from(1500000), Value::from(0)]], "sorted, every row once");
    let (_, plan) = http.rows(&format!("EXPLAIN ANALYZE {sorted}")).await;
    let text = crate::plan_text(&plan);
    let sort_spills = text
        .lines()
        .filter(|line| line.contains("SortExec"))
        .filter_map(|line| {
            line.split("spill_count=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
        .sum::<u64>();
    assert!(sort_spills > 0, "the sort spilled: {text}");

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

/// A join whose build side (a million and a half orders with their comments, about 250MB in
/// all) cannot spill: one fits [`SQUEEZED_POOL`], two at once do not. Every line item's
/// comment differs from its order's, so it counts all 6001215 of them.
const HUNGRY_JOIN: &str = "SELECT count(*) FROM tpch.sf1.lineitem l JOIN tpch.sf1.orders o ON l.orderkey = o.orderkey AND l.comment <> o.comment";
const HUNGRY_JOIN_ROWS: i64 = 6001215;

/// The worker pool of the low-memory tests.
const SQUEEZED_POOL: u64 = 320 << 20;

/// Two resource managers, two coordinators and one worker whose pool is [`SQUEEZED_POOL`],
/// with the killer settings `killer` (lines of config.properties).
fn squeezed_cluster(killer: &str) -> (TempDir, ProcessCluster) {
    let etc = etc_with(&format!("memory.pool-size={}MB\n{killer}", SQUEEZED_POOL >> 20));
    let cluster = ProcessCluster::builder().resource_managers(2).coordinators(2).workers(1).etc_dir(&etc.path).start();
    (etc, cluster)
}

/// The worker's memory high-water mark (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the worker is alive");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Runs [`HUNGRY_JOIN`] through each coordinator at once; returns each one's last response
/// and the rows it returned.
async fn hungry_joins_on_two_coordinators(cluster: &ProcessCluster) -> Vec<(Value, Vec<Vec<Value>>)> {
    let clients: Vec<Http> = cluster.cluster.coordinators.iter().map(|c| Http::new(&c.url)).collect();
    wait_for_nodes(&clients[0], 5).await;
    wait_for_nodes(&clients[1], 5).await;
    let runs = clients.iter().map(|http| async move {
        let mut responses = http.run_with(http.post(HUNGRY_JOIN)).await;
        let (_, rows) = crate::collect(&responses);
        (responses.pop().unwrap(), rows)
    });
    futures::future::join_all(runs).await
}

/// A run that finished, with the whole answer.
fn assert_complete(last: &Value, rows: &[Vec<Value>]) {
    assert_eq!(last["stats"]["state"], "FINISHED", "{last}");
    assert_eq!(rows, [vec![Value::from(HUNGRY_JOIN_ROWS)]], "the whole answer");
}

/// The worker is alive and its resident memory never passed the pool by more than the
/// process's own needs (no query grew past the pool).
fn assert_worker_survived(cluster: &mut ProcessCluster) {
    let worker = &mut cluster.cluster.workers[0];
    assert!(worker.is_running(), "the worker was not killed");
    let peak = peak_rss(worker.pid());
    let pool = SQUEEZED_POOL;
    assert!(peak < pool + (1536 << 20), "worker high-water mark {} MB with a {} MB pool", peak >> 20, pool >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_low_memory_killer_kills_exactly_one_query_for_the_whole_cluster() {
    let (_etc, mut cluster) = squeezed_cluster(
        "query.low-memory-killer.policy=total-reservation-on-blocked-nodes\nquery.low-memory-killer.delay=1s\n",
    );
    let runs = hungry_joins_on_two_coordinators(&cluster).await;
    let (killed, survived): (Vec<_>, Vec<_>) = runs.iter().partition(|(last, _)| last.get("error").is_some());
    assert_eq!(killed.len(), 1, "exactly one query dies: {runs:?}");
    let error = &killed[0].0["error"];
    assert_eq!(error["errorName"], "CLUSTER_OUT_OF_MEMORY", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("Query killed because the cluster is out of memory"), "{message}");
    // The survivor's answer is complete.
    assert_complete(&survived[0].0, &survived[0].1);
    assert_worker_survived(&mut cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_killer_policy_none_blocked_queries_wait_or_fail_by_their_own_limits() {
    let (_etc, mut cluster) = squeezed_cluster(
        "query.low-memory-killer.policy=none\nquery.low-memory-killer.delay=1s\nmemory.blocked-timeout=4s\n",
    );
    // While they wait, the coordinators' metrics count the blocked query.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let urls: Vec<String> = cluster.cluster.coordinators.iter().map(|c| c.url.clone()).collect();
    let watcher = tokio::spawn({
        let stop = stop.clone();
        async move {
            let client = reqwest::Client::new();
            let mut most = 0.0f64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for url in &urls {
                    let Ok(response) = client.get(format!("{url}/metrics")).send().await else { continue };
                    let text = response.text().await.unwrap_or_default();
                    let value = text
                        .lines()
                        .find_map(|l| l.strip_prefix("flotilla_queries_blocked_on_memory "))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0);
                    most = most.max(value);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            most
        }
    });
    let runs = hungry_joins_on_two_coordinators(&cluster).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(watcher.await.unwrap() >= 1.0, "a coordinator's metrics showed the blocked query");
    for (last, rows) in &runs {
        match last.get("error") {
            None => assert_complete(last, rows),
            Some(error) => {
                assert_eq!(error["errorName"], "EXCEEDED_LOCAL_MEMORY_LIMIT", "{error}");
                assert!(error["message"].as_str().unwrap().contains("memory.blocked-timeout"), "{error}");
            }
        }
    }
    assert!(
        runs.iter().any(|(last, _)| last.get("error").is_some()),
        "two do not fit: one waited past its limit: {runs:?}"
    );
    assert_worker_survived(&mut cluster);
}
