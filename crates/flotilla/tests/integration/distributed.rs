//! Distributed execution with real processes: placement by warehouse and worker group,
//! load-aware choice of the group, cancellation that frees every task, and a worker dying
//! in the middle of a query.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::ProcessCluster;
use crate::Http;

/// A blackhole table of `splits` splits that takes an hour to read (a page a second,
/// costing no CPU); returns the query that reads it.
async fn long_query(http: &Http, name: &str, splits: u32) -> String {
    crate::blackhole::paced_table(http, name, splits, 3600, "1s").await
}

async fn get_json(http: &Http, url: &str) -> Value {
    http.get_json(&url).await
}

/// Waits until the coordinator lists `count` live nodes.
pub async fn wait_for_nodes(http: &Http, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = get_json(http, &format!("{}/v1/node", http.base)).await;
        let seen = nodes.as_array().map(Vec::len).unwrap_or(0);
        if seen == count {
            return;
        }
        assert!(Instant::now() < deadline, "the coordinator lists {seen} nodes, expected {count}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn in_warehouse(http: &Http, sql: &str, warehouse: &str) -> reqwest::RequestBuilder {
    http.post(sql).header("X-Trino-Session", format!("warehouse={warehouse}"))
}

/// Node ids the query's tasks were placed on.
async fn task_nodes(http: &Http, query_id: &str) -> BTreeSet<String> {
    let info = get_json(http, &format!("{}/v1/query/{query_id}", http.base)).await;
    info["tasks"].as_array().unwrap().iter().map(|t| t["nodeId"].as_str().unwrap().to_string()).collect()
}

/// Submits a query and follows it until its tasks are placed; returns (query id, the
/// response to continue from).
async fn start_until_placed(http: &Http, request: reqwest::RequestBuilder) -> (String, Value) {
    let mut response: Value = request.send().await.unwrap().json().await.unwrap();
    let id = response["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while task_nodes(http, &id).await.is_empty() {
        assert!(response.get("error").is_none(), "{}", response["error"]);
        assert!(Instant::now() < deadline, "the query's tasks were never placed");
        if let Some(next) = response["nextUri"].as_str() {
            response = get_json(http, next).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (id, response)
}

/// Follows `response` to the end; returns the final document.
async fn finish(http: &Http, mut response: Value) -> Value {
    while let Some(next) = response["nextUri"].as_str().map(str::to_string) {
        response = get_json(http, &next).await;
    }
    response
}

/// A worker's `/v1/status`.
async fn worker_status(http: &Http, worker_url: &str) -> Value {
    get_json(http, &format!("{worker_url}/v1/status")).await
}

/// Waits until no worker holds a task or memory of any query.
async fn wait_until_idle(http: &Http, workers: &[String], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut busy = Vec::new();
        for url in workers {
            let status = worker_status(http, url).await;
            if status["runningTasks"].as_u64() != Some(0) || !status["queries"].as_array().unwrap().is_empty() {
                busy.push(status);
            }
        }
        if busy.is_empty() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "workers still hold tasks after {within:?}: {busy:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_stay_in_their_warehouse_avoid_busy_groups_and_cancel_cleanly() {
    let etc = crate::blackhole::blackhole_etc();
    let cluster = ProcessCluster::builder()
        .workers(4)
        .worker_labels(&[("a", "g1"), ("a", "g2"), ("b", "g1"), ("b", "g2")])
        .etc_dir(&etc.path)
        .start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 6).await;
    let workers: Vec<String> = cluster.cluster.workers.iter().map(|w| w.url.clone()).collect();

    // Warehouse b's query runs on b's workers only, and gives the right answer.
    let responses = http.run_with(in_warehouse(&http, "SELECT count(*) FROM tpch.tiny.lineitem", "b")).await;
    let id = responses[0]["id"].as_str().unwrap().to_string();
    let (_, rows) = crate::collect(&responses);
    assert_eq!(rows, vec![vec![Value::from(60175)]]);
    let used = task_nodes(&http, &id).await;
    let info = get_json(&http, &format!("{}/v1/query/{id}", http.base)).await;
    assert!(!used.is_empty(), "the query ran on workers: {info}");
    assert!(used.iter().all(|n| n == "worker-3" || n == "worker-4"), "warehouse b used {used:?}");
    // Listed with the warehouse it ran in (/v1/query/{id}, system.runtime.queries, /v1/query).
    assert_eq!(info["warehouse"], "b", "{info}");
    let listed = format!("SELECT warehouse FROM system.runtime.queries WHERE query_id = '{id}'");
    assert_eq!(http.rows(&listed).await.1, vec![vec![Value::from("b")]]);
    let listing: Value = get_json(&http, &format!("{}/v1/query", http.base)).await;
    assert!(listing.as_array().unwrap().iter().any(|q| q["queryId"] == id.as_str() && q["warehouse"] == "b"));
    // The worker groups and warehouses, from the workers' labels in the view.
    let groups = "SELECT warehouse, worker_group, kind, workers FROM system.runtime.worker_groups ORDER BY 1, 2";
    let row = |w: &str, g: &str| vec![Value::from(w), Value::from(g), Value::from("physical"), Value::from(1)];
    assert_eq!(http.rows(groups).await.1, vec![row("a", "g1"), row("a", "g2"), row("b", "g1"), row("b", "g2")]);
    let warehouses =
        "SELECT warehouse, worker_groups, workers, running_queries FROM system.runtime.warehouses ORDER BY 1";
    let row =
        |w: &str, n: i64, running: i64| vec![Value::from(w), Value::from(n), Value::from(n), Value::from(running)];
    // `default` has no workers here, and runs this very query (on the coordinator).
    assert_eq!(http.rows(warehouses).await.1, vec![row("a", 2, 0), row("b", 2, 0), row("default", 0, 1)]);
    // The final stats count the work done on the workers, stage by stage.
    let stats = &responses.last().unwrap()["stats"];
    assert_eq!(stats["processedRows"], 60175, "{stats}");
    assert!(stats["nodes"].as_u64().unwrap() >= 2, "{stats}");
    let root = &stats["rootStage"];
    assert_eq!(root["coordinatorOnly"], true, "{root}");
    let scan_stage = &root["subStages"][0];
    assert_eq!(scan_stage["processedRows"], 60175, "the scan stage read lineitem: {root}");
    assert!(scan_stage["totalSplits"].as_u64().unwrap() >= 2, "{root}");
    // Per stage and per task figures in the query's info.
    let info = get_json(&http, &format!("{}/v1/query/{id}", http.base)).await;
    let scan = info["stages"].as_array().unwrap().iter().find(|s| s["stageId"] == 1).expect("stage 1").clone();
    let per_task: u64 = scan["tasks"].as_array().unwrap().iter().map(|t| t["processedRows"].as_u64().unwrap()).sum();
    assert_eq!(per_task, 60175, "each task's rows add up to the table: {scan}");
    assert!(scan["tasks"].as_array().unwrap().len() >= 2, "{scan}");
    // A finished query leaves nothing behind on any worker.
    wait_until_idle(&http, &workers, Duration::from_secs(5)).await;

    // A warehouse without workers is a clear error.
    let error = http.error_with(in_warehouse(&http, "SELECT count(*) FROM tpch.tiny.orders", "nowhere")).await;
    assert_eq!(error["errorName"], "NO_NODES_AVAILABLE", "{error}");
    assert!(error["message"].as_str().unwrap().contains("nowhere"), "{error}");

    // A long query occupies one group of warehouse a; the next query goes to the other.
    let long = long_query(&http, "long", 2).await;
    let (long_id, long_response) = start_until_placed(&http, in_warehouse(&http, &long, "a")).await;
    let busy = task_nodes(&http, &long_id).await;
    assert_eq!(busy.len(), 1, "one worker per group in warehouse a: {busy:?}");
    let short = http.run_with(in_warehouse(&http, "SELECT count(*) FROM tpch.tiny.orders", "a")).await;
    let (_, rows) = crate::collect(&short);
    assert_eq!(rows, vec![vec![Value::from(15000)]]);
    let short_used = task_nodes(&http, short[0]["id"].as_str().unwrap()).await;
    assert!(short_used.is_disjoint(&busy), "the short query avoided the busy group: {short_used:?} vs {busy:?}");
    assert!(short_used.iter().all(|n| n == "worker-1" || n == "worker-2"), "warehouse a: {short_used:?}");

    // Its progress reaches the client from the workers' heartbeats while it runs.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut long_response = long_response;
    loop {
        let next = long_response["nextUri"].as_str().expect("the long query is still running").to_string();
        long_response = get_json(&http, &next).await;
        let stats = &long_response["stats"];
        let moving = stats["processedRows"].as_u64().unwrap_or(0) > 0
            && stats["progressPercentage"].as_f64().is_some_and(|p| p > 0.0 && p < 100.0);
        if moving {
            assert!(stats["nodes"].as_u64().unwrap() >= 2, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress while the query runs: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The long query really runs on its worker; cancelling it frees its tasks and memory.
    let busy_url = &workers[if busy.contains("worker-1") { 0 } else { 1 }];
    let status = worker_status(&http, busy_url).await;
    assert!(status["runningTasks"].as_u64().unwrap() > 0, "{status}");
    let next = long_response["nextUri"].as_str().expect("the long query is still running").to_string();
    let cancelled = http.client.delete(&next).send().await.unwrap();
    assert!(cancelled.status().is_success(), "cancel: {}", cancelled.status());
    let freed = wait_until_idle(&http, &workers, Duration::from_secs(3)).await;
    eprintln!("cancel freed every task within {freed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dying_fails_its_query_by_name_and_the_next_query_runs_on_the_rest() {
    let (_etc, mut cluster, http) = crate::blackhole::blackhole_cluster(3).await;

    // With retries off (today's behaviour before retry-policy=QUERY, the default).
    let long = long_query(&http, "long", 3).await;
    let request = http.post(&long).header("X-Trino-Session", "retry_policy=NONE");
    let (id, response) = start_until_placed(&http, request).await;
    let used = task_nodes(&http, &id).await;
    assert!(used.contains("worker-2"), "the query uses every worker: {used:?}");
    cluster.cluster.workers[1].kill();

    let last = tokio::time::timeout(Duration::from_secs(30), finish(&http, response)).await.expect("the query ends");
    let error = &last["error"];
    assert_eq!(error["errorName"], "REMOTE_HOST_GONE", "{last}");
    assert!(error["message"].as_str().unwrap().contains("worker-2"), "the error names the worker: {error}");

    // The next query succeeds right away on the workers that are left.
    let (_, rows) = http.rows("SELECT count(*), sum(totalprice) > 0 FROM tpch.tiny.orders").await;
    assert_eq!(rows, vec![vec![Value::from(15000), Value::from(true)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_loses_a_worker_runs_again_on_the_others() {
    let (_etc, mut cluster, http) = crate::blackhole::blackhole_cluster(3).await;

    // Three splits of 4 pages, a page every half second: two seconds an attempt.
    let paced = crate::blackhole::paced_table(&http, "paced", 3, 4, "500ms").await;
    let (id, response) = start_until_placed(&http, http.post(&paced)).await;
    assert!(task_nodes(&http, &id).await.contains("worker-2"), "the query uses every worker");
    cluster.cluster.workers[1].kill();

    let follow = async {
        let mut responses = vec![response];
        while let Some(next) = responses.last().unwrap()["nextUri"].as_str().map(str::to_string) {
            responses.push(get_json(&http, &next).await);
        }
        responses
    };
    let responses = tokio::time::timeout(Duration::from_secs(60), follow).await.expect("the query ends");
    let last = responses.last().unwrap();
    assert!(last.get("error").is_none(), "the query should have run again on the others: {last}");
    let (_, rows) = crate::collect(&responses);
    assert_eq!(rows, vec![vec![Value::from(120)]], "every row, once");
    let info = get_json(&http, &format!("{}/v1/query/{id}", http.base)).await;
    let attempts = info["failedAttempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{info}");
    assert_eq!(attempts[0]["errorName"], "REMOTE_HOST_GONE");
    assert!(attempts[0]["message"].as_str().unwrap().contains("worker-2"), "{info}");
    // One failed attempt only: the retry went to the live workers (a task on the dead one
    // would have failed it again), and the stats list the last attempt's tasks only.
    let nodes: std::collections::BTreeSet<&str> =
        info["tasks"].as_array().unwrap().iter().filter_map(|t| t["nodeId"].as_str()).collect();
    assert!(!nodes.is_empty() && !nodes.contains("worker-2"), "{info}");

    // A user error is never retried.
    let error = http.error("SELECT CAST('x' AS integer) FROM blackhole.default.paced").await;
    assert_eq!(error["errorName"], "INVALID_CAST_ARGUMENT", "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_build_sides_are_broadcast_and_every_exchange_codec_answers_alike() {
    let cluster = ProcessCluster::builder().workers(2).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 4).await;
    // customer (150,000 rows) is above DataFusion's single-process threshold (128K rows)
    // but within two workers' broadcast budget: sent whole to the tasks reading orders,
    // which is not shuffled.
    let join = "SELECT c.mktsegment, count(*), sum(o.totalprice) FROM tpch.sf1.customer c \
                JOIN tpch.sf1.orders o ON c.custkey = o.custkey GROUP BY c.mktsegment ORDER BY 1";
    let (_, plan) = http.rows(&format!("EXPLAIN {join}")).await;
    let plan = crate::plan_text(&plan);
    assert!(plan.contains("NetworkBroadcastExec") && plan.contains("mode=CollectLeft"), "{plan}");
    let expected = {
        let (_, rows) =
            http.rows_with(http.post(join).header("X-Trino-Session", "exchange_compression_codec=NONE")).await;
        rows
    };
    assert_eq!(expected.len(), 5, "{expected:?}");
    for codec in ["AUTO", "lz4", "ZSTD"] {
        let request = http.post(join).header("X-Trino-Session", format!("exchange_compression_codec={codec}"));
        let (_, rows) = http.rows_with(request).await;
        assert_eq!(rows, expected, "{codec}");
    }
    for bad in ["GZIP", "snappy"] {
        let request = http.post(join).header("X-Trino-Session", format!("exchange_compression_codec={bad}"));
        let error = http.error_with(request).await;
        assert_eq!(error["errorName"], "INVALID_SESSION_PROPERTY", "{bad}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_finishes_its_tasks_gets_no_new_ones_and_exits() {
    let mut cluster = ProcessCluster::builder().workers(3).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 5).await;

    // A query of a few seconds with tasks on every worker; worker-2 is drained under it.
    let (id, response) = start_until_placed(&http, http.post("SELECT count(*) FROM tpch.sf1.lineitem")).await;
    assert!(task_nodes(&http, &id).await.contains("worker-2"));
    let drained_at = Instant::now();
    assert_eq!(cluster.drain(&cluster.cluster.workers[1].url.clone()).await, 200);
    // It still had the query's tasks to finish when it was told to drain.
    let status = worker_status(&http, &cluster.cluster.workers[1].url).await;
    assert!(status["runningTasks"].as_u64().unwrap() > 0, "nothing left to finish: {status}");

    // The cluster sees it shutting down, and places nothing new on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, state) = http.rows("SELECT state FROM system.runtime.nodes WHERE node_id = 'worker-2'").await;
        if state == vec![vec![Value::from("shutting_down")]] {
            break;
        }
        assert!(Instant::now() < deadline, "worker-2 does not show as shutting down: {state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (other, other_response) =
        start_until_placed(&http, http.post("SELECT count(*) FROM tpch.sf1.orders WHERE totalprice > 0")).await;
    let placed = task_nodes(&http, &other).await;
    assert!(!placed.contains("worker-2"), "a task went to the draining worker: {placed:?}");

    // Both queries end with every row: the drained worker finished its tasks.
    let last = tokio::time::timeout(Duration::from_secs(120), finish(&http, response)).await.expect("the query ends");
    assert!(last.get("error").is_none(), "the drained worker's query failed: {last}");
    let other_last = tokio::time::timeout(Duration::from_secs(120), finish(&http, other_response)).await.unwrap();
    assert!(other_last.get("error").is_none(), "{other_last}");

    // Then it exits (after its notice period: 3 heartbeats and a second).
    let worker = &mut cluster.cluster.workers[1];
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.is_running() {
        assert!(Instant::now() < deadline, "the drained worker did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained_at.elapsed() >= Duration::from_secs(4), "it left before coordinators could notice");
    let (_, rows) = http.rows("SELECT count(*) FROM tpch.tiny.orders").await;
    assert_eq!(rows, vec![vec![Value::from(15000)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_every_attempt_loses_a_worker_reports_each_attempts_error() {
    let etc = crate::blackhole::blackhole_etc();
    std::fs::write(etc.path.join("config.properties"), "query-retry-attempts=1\nretry-initial-delay=200ms\n").unwrap();
    let mut cluster = ProcessCluster::builder().workers(3).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 5).await;
    let paced = crate::blackhole::paced_table(&http, "paced", 3, 60, "500ms").await;
    let (id, response) = start_until_placed(&http, http.post(&paced)).await;

    // Each attempt loses a worker it runs on: worker-1 under the first, worker-2 under the retry.
    for (attempt, index) in [(0usize, 0usize), (1, 1)] {
        let url = cluster.cluster.workers[index].url.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = get_json(&http, &format!("{}/v1/query/{id}", http.base)).await;
            let attempts = info["failedAttempts"].as_array().map_or(0, Vec::len);
            let status = worker_status(&http, &url).await;
            let busy = status["queries"].as_array().into_iter().flatten().any(|q| q["queryId"] == id.as_str());
            if attempts == attempt && busy {
                break;
            }
            assert!(Instant::now() < deadline, "attempt {attempt} never ran on worker {}: {info}", index + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.cluster.workers[index].kill();
    }

    let last = tokio::time::timeout(Duration::from_secs(60), finish(&http, response)).await.expect("the query ends");
    assert_eq!(last["error"]["errorName"], "REMOTE_HOST_GONE", "{last}");
    assert!(last["error"]["message"].as_str().unwrap().contains("worker-2"), "{last}");
    let info = get_json(&http, &format!("{}/v1/query/{id}", http.base)).await;
    let attempts = info["failedAttempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{info}");
    assert!(attempts[0]["message"].as_str().unwrap().contains("worker-1"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_worker_under_load_fails_no_query() {
    let (_etc, mut cluster, http) = crate::blackhole::blackhole_cluster(3).await;
    // A query of about a second on the workers (3 splits, 4 pages 250 ms apart).
    let paced = crate::blackhole::paced_table(&http, "paced", 3, 4, "250ms").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (http, stop, paced) = (Http::new(&http.base), stop.clone(), paced.clone());
            tokio::spawn(async move {
                let (mut answered, mut failed) = (0usize, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let responses = http.run(&paced).await;
                    match responses.last().unwrap().get("error") {
                        Some(error) => failed.push(error.clone()),
                        None if crate::collect(&responses).1 == vec![vec![Value::from(120)]] => answered += 1,
                        None => failed.push(responses.last().unwrap().clone()),
                    }
                }
                (answered, failed)
            })
        })
        .collect();

    // Each worker in turn: drained (as Kubernetes does before stopping a pod), then started
    // again once it has exited, then the cluster counts it again.
    for index in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let url = cluster.cluster.workers[index].url.clone();
        assert_eq!(cluster.drain(&url).await, 200);
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.cluster.workers[index].is_running() {
            assert!(Instant::now() < deadline, "worker {} did not exit after draining", index + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut worker = cluster.cluster.workers.remove(index);
        cluster.cluster.restart(&mut worker).unwrap();
        cluster.cluster.workers.insert(index, worker);
        wait_for_nodes(&http, 5).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "queries failed during the rolling restart: {failed:#?}");
        answered += ok;
    }
    eprintln!("{answered} queries answered during a rolling restart of 3 workers, none failed");
    assert!(answered >= 6, "the clients kept running queries: {answered}");
}

/// `etc/warehouses.json` on the resource managers: a warehouse without workers of its own
/// runs on the physical group its shared group references (and reports that group's load);
/// changing the file moves its queries without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_groups_run_on_the_group_they_reference_and_follow_the_definitions_file() {
    let etc = crate::blackhole::blackhole_etc();
    let definitions = |from: &str| {
        format!(
            r#"{{"warehouses": [
                {{"name": "a", "type": "write", "workerGroups": [{{"name": "g1"}}, {{"name": "g2"}}]}},
                {{"name": "bi", "type": "read", "workerGroups": [{{"name": "lent", "sharedFrom": "{from}"}}]}}
            ],
            "routingRules": [{{"user": "router_.*", "queryType": "SELECT", "warehouse": "bi"}}]}}"#
        )
    };
    std::fs::write(etc.path.join("warehouses.json"), definitions("a.g1")).unwrap();
    let mut cluster = ProcessCluster::builder()
        .resource_managers(2)
        .workers(2)
        .worker_labels(&[("a", "g1"), ("a", "g2")])
        .etc_dir(&etc.path)
        .start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 5).await;
    let groups = "SELECT warehouse, worker_group, kind, referenced_group, workers FROM system.runtime.worker_groups ORDER BY 1, 2";
    let row = |w: &str, g: &str, kind: &str, from: Option<&str>| {
        vec![Value::from(w), Value::from(g), Value::from(kind), from.map_or(Value::Null, Value::from), Value::from(1)]
    };
    assert_eq!(
        http.rows(groups).await.1,
        vec![
            row("a", "g1", "physical", None),
            row("a", "g2", "physical", None),
            row("bi", "lent", "shared", Some("a.g1"))
        ]
    );
    let kinds = "SELECT warehouse, type FROM system.runtime.warehouses WHERE type IS NOT NULL ORDER BY 1";
    assert_eq!(
        http.rows(kinds).await.1,
        vec![vec![Value::from("a"), Value::from("write")], vec![Value::from("bi"), Value::from("read")]]
    );
    let run_in_bi = || async {
        let responses = http.run_with(in_warehouse(&http, "SELECT count(*) FROM tpch.tiny.lineitem", "bi")).await;
        let (_, rows) = crate::collect(&responses);
        assert_eq!(rows, vec![vec![Value::from(60175)]]);
        task_nodes(&http, responses[0]["id"].as_str().unwrap()).await
    };
    let used = run_in_bi().await;
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["worker-1"], "bi's shared group is a's g1");

    // Routing: a rule picks bi for router_* users; X-Trino-Routing-Group and the session
    // property come first.
    let warehouse_of = |request: reqwest::RequestBuilder| async {
        let responses = http.run_with(request).await;
        assert!(responses.last().unwrap().get("error").is_none(), "{}", responses.last().unwrap()["error"]);
        let id = responses[0]["id"].as_str().unwrap().to_string();
        get_json(&http, &format!("{}/v1/query/{id}", http.base)).await["warehouse"].clone()
    };
    let sql = "SELECT count(*) FROM tpch.tiny.lineitem";
    assert_eq!(warehouse_of(http.post_as("router_7", sql)).await, "bi");
    assert_eq!(warehouse_of(http.post_as("alice", sql).header("X-Trino-Session", "warehouse=a")).await, "a");
    assert_eq!(warehouse_of(http.post_as("router_7", sql).header("X-Trino-Routing-Group", "a")).await, "a");
    assert_eq!(warehouse_of(http.post_as("router_7", sql).header("X-Trino-Session", "warehouse=a")).await, "a");
    let error = http.error_with(http.post_as("router_7", sql).header("X-Trino-Routing-Group", "no where")).await;
    assert_eq!(error["errorName"], "INVALID_SESSION_PROPERTY", "{error}");

    // The definitions change: bi now borrows g2. No restart. Both resource managers read
    // the file: the coordinator sees the change from whichever it asks.
    std::fs::write(etc.path.join("warehouses.json"), definitions("a.g2")).unwrap();
    let internal = cluster.internal_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, rows) = http.rows(groups).await;
        let mut served = Vec::new();
        for rm in &cluster.cluster.resource_managers {
            let view: Value = internal.get(&rm.url, flotilla_proto::cluster::CLUSTER_VIEW_PATH).await.unwrap();
            served.push(view["warehouses"][1]["workerGroups"][0]["sharedFrom"]["workerGroup"].clone());
        }
        if rows.last().is_some_and(|r| r[3] == "a.g2") && served.iter().all(|g| g == "g2") {
            break;
        }
        assert!(Instant::now() < deadline, "the new definitions never reached everyone: {rows:?} {served:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let used = run_in_bi().await;
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["worker-2"], "bi's shared group is a's g2 now");

    // Every resource manager down: the coordinator schedules from the last view it got.
    for rm in &mut cluster.cluster.resource_managers {
        rm.kill();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = run_in_bi().await;
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["worker-2"], "placed from the last view");
    drop(cluster);
}

/// Writes run in their table's write warehouse (the catalog's `files.write-warehouse`),
/// reads in its read warehouse (the table's `read_warehouse`, else the catalog's), the
/// session coming first; compaction runs where writes do; a warehouse's
/// `maxConcurrentQueries` and `maxQueued` hold for its queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_run_in_the_write_warehouse_and_warehouse_limits_hold() {
    let root = crate::harness::TempDir::new("flotilla-lake");
    let etc = crate::files::lake_etc(&root.path);
    let lake = format!(
        "connector.name=files\nfiles.root={}\nfiles.write-warehouse=etl\nfiles.read-warehouse=bi\n",
        root.path.display()
    );
    std::fs::write(etc.path.join("catalog/lake.properties"), lake).unwrap();
    std::fs::write(
        etc.path.join("warehouses.json"),
        r#"{"warehouses": [
            {"name": "etl", "type": "write", "workerGroups": [{"name": "g1"}]},
            {"name": "bi", "type": "read", "workerGroups": [{"name": "g1"}], "maxConcurrentQueries": 1, "maxQueued": 1},
            {"name": "adhoc", "type": "read", "workerGroups": [{"name": "g1"}]}
        ]}"#,
    )
    .unwrap();
    let cluster = ProcessCluster::builder()
        .workers(3)
        .worker_labels(&[("etl", "g1"), ("bi", "g1"), ("adhoc", "g1")])
        .etc_dir(&etc.path)
        .start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 5).await;
    // Where a statement ran: its warehouse and the workers of its tasks.
    let ran = |request: reqwest::RequestBuilder| async {
        let responses = http.run_with(request).await;
        let last = responses.last().unwrap();
        assert!(last.get("error").is_none(), "{}", last["error"]);
        let id = responses[0]["id"].as_str().unwrap().to_string();
        let warehouse = get_json(&http, &format!("{}/v1/query/{id}", http.base)).await["warehouse"].clone();
        (warehouse, task_nodes(&http, &id).await.into_iter().collect::<Vec<_>>(), crate::collect(&responses).1)
    };
    http.rows("CREATE SCHEMA lake.s").await;
    let (warehouse, nodes, _) = ran(http.post("CREATE TABLE lake.s.t AS SELECT * FROM tpch.tiny.lineitem")).await;
    assert_eq!((warehouse, nodes), (Value::from("etl"), vec!["worker-1".to_string()]), "CTAS writes in etl");
    let (warehouse, nodes, _) = ran(http.post("INSERT INTO lake.s.t SELECT * FROM tpch.tiny.lineitem")).await;
    assert_eq!((warehouse, nodes), (Value::from("etl"), vec!["worker-1".to_string()]), "INSERT writes in etl");
    // (Joined with a generated table, so a stage runs on workers: a small files scan alone
    // runs in the coordinator.)
    let read = "SELECT count(*) FROM lake.s.t JOIN tpch.tiny.lineitem USING (l_orderkey, l_linenumber)";
    let (warehouse, nodes, rows) = ran(http.post(read)).await;
    assert_eq!((warehouse, nodes), (Value::from("bi"), vec!["worker-2".to_string()]), "reads run in bi");
    assert_eq!(rows, vec![vec![Value::from(2 * 60175)]]);
    let (warehouse, nodes, _) = ran(in_warehouse(&http, read, "adhoc")).await;
    assert_eq!((warehouse, nodes), (Value::from("adhoc"), vec!["worker-3".to_string()]), "the session comes first");
    let create = "CREATE TABLE lake.s.u WITH (read_warehouse = 'adhoc') AS SELECT * FROM tpch.tiny.lineitem";
    assert_eq!(ran(http.post(create)).await.1, ["worker-1"]);
    let (warehouse, nodes, _) = ran(http.post(&read.replace("lake.s.t", "lake.s.u"))).await;
    assert_eq!((warehouse, nodes), (Value::from("adhoc"), vec!["worker-3".to_string()]), "the table's own first");
    let (_, shown) = http.rows("SHOW CREATE TABLE lake.s.u").await;
    assert!(shown[0][0].as_str().unwrap().contains("read_warehouse = 'adhoc'"), "{shown:?}");
    let (warehouse, nodes, _) =
        ran(http.post("ALTER TABLE lake.s.t EXECUTE optimize(file_size_threshold => '1GB')")).await;
    // (A compaction of a few MB is one task, which datafusion-distributed keeps in the
    // coordinator like any small stage; a larger one runs on etl's workers.)
    assert_eq!(warehouse, "etl", "compaction is placed in etl");
    assert!(nodes.iter().all(|n| n == "worker-1"), "compaction ran in etl: {nodes:?}");
    assert_eq!(http.rows("SELECT count(*) FROM lake.s.t").await.1, vec![vec![Value::from(2 * 60175)]]);
    let bad = "CREATE TABLE lake.s.x (a bigint) WITH (write_warehouse = 'no where')";
    assert_eq!(http.error(bad).await["errorName"], "INVALID_TABLE_PROPERTY");

    // bi runs one query at a time and queues one: a third fails, the queued one runs once
    // the first is gone.
    let slow = crate::blackhole::paced_table(&http, "slow", 2, 300, "100ms").await;
    let first: Value = in_warehouse(&http, &slow, "bi").send().await.unwrap().json().await.unwrap();
    let first = first["id"].as_str().unwrap().to_string();
    http.wait_for_state(&first, &["RUNNING"], Duration::from_secs(10)).await;
    let second: Value = in_warehouse(&http, &slow, "bi").send().await.unwrap().json().await.unwrap();
    let second = second["id"].as_str().unwrap().to_string();
    http.wait_for_state(&second, &["QUEUED"], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get_json(&http, &format!("{}/v1/query/{second}", http.base)).await["state"], "QUEUED");
    let third = http.error_with(in_warehouse(&http, &slow, "bi")).await;
    assert_eq!(third["errorName"], "QUERY_QUEUE_FULL", "{third}");
    let (_, rows) = http.rows("SELECT queued_queries, running_queries, max_concurrent_queries, max_queued FROM system.runtime.warehouses WHERE warehouse = 'bi'").await;
    assert_eq!(rows, vec![vec![Value::from(1), Value::from(1), Value::from(1), Value::from(1)]]);
    // Another warehouse is not held up.
    assert_eq!(
        ran(in_warehouse(&http, "SELECT count(*) FROM tpch.tiny.nation", "adhoc")).await.2,
        vec![vec![Value::from(25)]]
    );
    http.kill(&first).await;
    http.wait_for_state(&second, &["RUNNING"], Duration::from_secs(20)).await;
    http.kill(&second).await;
    drop(cluster);
}

/// `warehouse.lending-enabled`: a burst on bi (more running tasks per worker than the
/// threshold) makes the admission leader lend etl's idle group to bi, whose next query may
/// run there; once the burst is over the group is returned. Every lend and return is in the
/// view (`system.runtime.worker_groups`, kind `lent`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_is_lent_to_a_busy_warehouse_and_returned() {
    let etc = crate::blackhole::blackhole_etc();
    std::fs::write(
        etc.path.join("warehouses.json"),
        r#"{"warehouses": [
            {"name": "bi", "type": "read", "workerGroups": [{"name": "g1"}]},
            {"name": "etl", "type": "write", "workerGroups": [{"name": "g1"}]}
        ]}"#,
    )
    .unwrap();
    std::fs::write(
        etc.path.join("config.properties"),
        "warehouse.lending-enabled=true\nwarehouse.lending-busy-tasks-per-worker=3\nwarehouse.lending-busy-time=1s\n\
         warehouse.lending-idle-time=1s\nwarehouse.lending-min-time=2s\n",
    )
    .unwrap();
    let cluster =
        ProcessCluster::builder().workers(2).worker_labels(&[("bi", "g1"), ("etl", "g1")]).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 4).await;
    let lent = "SELECT warehouse, worker_group, referenced_group FROM system.runtime.worker_groups WHERE kind = 'lent'";
    let wait_for = |want_lent: bool| {
        let http = &http;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, rows) = http.rows(lent).await;
                if rows.is_empty() != want_lent {
                    return rows;
                }
                assert!(Instant::now() < deadline, "lent = {want_lent} never came: {rows:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(wait_for(false).await.is_empty());
    // The burst: 3 slow queries of 2 tasks each on bi's one worker (6 tasks > 3).
    let slow = crate::blackhole::paced_table(&http, "slow", 2, 400, "100ms").await;
    let mut burst = Vec::new();
    for _ in 0..3 {
        let (id, _) = start_until_placed(&http, in_warehouse(&http, &slow, "bi")).await;
        assert_eq!(task_nodes(&http, &id).await.into_iter().collect::<Vec<_>>(), ["worker-1"]);
        burst.push(id);
    }
    let rows = wait_for(true).await;
    assert_eq!(rows, vec![vec![Value::from("bi"), Value::from("lent.etl.g1"), Value::from("etl.g1")]]);
    // A lent (shared) group reports the load of the group it references.
    let loads = "SELECT kind, workers, running_tasks, memory_pool_bytes, memory_reserved_bytes FROM \
                 system.runtime.worker_groups WHERE worker_group = 'lent.etl.g1' OR warehouse = 'etl' ORDER BY kind";
    let (_, rows) = http.rows(loads).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][1..], rows[1][1..], "{rows:?}");
    // bi's next query goes to the lent group: etl's worker is idle, bi's is loaded.
    let (next, _) = start_until_placed(&http, in_warehouse(&http, &slow, "bi")).await;
    assert_eq!(task_nodes(&http, &next).await.into_iter().collect::<Vec<_>>(), ["worker-2"]);
    burst.push(next);
    // The burst ends: the loan ends after its minimum time.
    for id in &burst {
        http.kill(id).await;
    }
    assert!(wait_for(false).await.is_empty());
    let (_, rows) = http.rows("SELECT count(*) FROM system.runtime.worker_groups WHERE warehouse = 'bi'").await;
    assert_eq!(rows, vec![vec![Value::from(1)]], "bi has its own group only");
    drop(cluster);
}

/// TPC-H q18 over `tiny` Parquet files (a lower threshold, so it finds orders).
fn q18_over(catalog: &str) -> String {
    q18_with(catalog, 250)
}

/// TPC-H q18 over `tiny` Parquet files, for the orders of more than `quantity` items (250: 66
/// orders; 200: about 830, more than DataFusion lists in a join's filter).
fn q18_with(catalog: &str, quantity: u32) -> String {
    format!(
        "SELECT c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice, sum(l_quantity) \
         FROM {catalog}.tiny.customer, {catalog}.tiny.orders, {catalog}.tiny.lineitem \
         WHERE o_orderkey IN (SELECT l_orderkey FROM {catalog}.tiny.lineitem GROUP BY l_orderkey \
                              HAVING sum(l_quantity) > {quantity}) \
           AND c_custkey = o_custkey AND o_orderkey = l_orderkey \
         GROUP BY c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice \
         ORDER BY o_totalprice DESC, o_orderdate, o_orderkey LIMIT 100"
    )
}

/// The `output_rows` of a line of EXPLAIN ANALYZE.
fn rows_read(line: &str) -> u64 {
    let count = line.split("output_rows=").nth(1).and_then(|rest| rest.split([',', ']']).next()).unwrap_or("0");
    let count = count.trim();
    match count.strip_suffix(" K") {
        Some(thousands) => (thousands.parse::<f64>().unwrap() * 1000.0) as u64,
        None => count.parse::<u64>().unwrap_or_else(|_| panic!("rows: {count}")),
    }
}

/// A hash join's dynamic filter reaches the scans it prunes in other stages: in TPC-H q18
/// over Parquet on two workers, the IN-subquery's join (its build side broadcast) runs a
/// stage above the scan of `orders`, and the join of orders and lineitem (partitioned) a
/// stage above the scan of `lineitem`; both filters are sent to those scans, which start
/// once they have them. The answer is the one the `tpch` catalog gives (no filters there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_filters_reach_scans_in_other_stages_and_change_no_answer() {
    let etc = crate::harness::TempDir::new("flotilla-etc");
    let catalog = etc.path.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    crate::plans::tiny_lake(&catalog);
    let cluster = ProcessCluster::builder().workers(2).etc_dir(&etc.path).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 4).await;
    // Splits of 64kB spread the tiny files over both workers and several stages.
    let small_splits = |sql: String| http.post(&sql).header("X-Trino-Session", "max_split_size=64kB");
    for bad in ["0B", "1B", "2TB", "lots", "-1MB", &"9".repeat(4096)] {
        let request = http.post("SELECT 1").header("X-Trino-Session", format!("max_split_size={bad}"));
        let error = http.error_with(request).await;
        assert_eq!(error["errorName"], "INVALID_SESSION_PROPERTY", "{bad}: {error}");
    }
    let (_, expected) = http.rows(&q18_over("tpch")).await;
    assert!(!expected.is_empty());
    let started = Instant::now();
    let (_, rows) = http.rows_with(small_splits(q18_over("lake"))).await;
    assert_eq!(rows, expected);
    // No scan hangs on its filters.
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    let (_, plan) = http.rows_with(small_splits(format!("EXPLAIN {}", q18_over("lake")))).await;
    let plan = crate::plan_text(&plan);
    assert!(plan.contains("JoinFilterExportExec: workers=2\n"), "{plan}");
    assert!(plan.contains("JoinFilterWaitExec"), "{plan}");

    let (_, analyzed) = http.rows_with(small_splits(format!("EXPLAIN ANALYZE {}", q18_over("lake")))).await;
    let analyzed = crate::plan_text(&analyzed);
    // The scan of orders under the wait read the few orders the subquery keeps, not 15,000.
    let waited = analyzed.lines().skip_while(|line| !line.contains("JoinFilterWaitExec")).nth(1).unwrap_or_default();
    assert!(waited.contains("orders.parquet") || waited.contains("DistributedLeafExec"), "{analyzed}");
    let read = rows_read(waited);
    assert!(read > 0 && read < 1_000, "{read} orders read\n{analyzed}");

    // 838 orders: too many for DataFusion to list (it publishes a lookup into the hash table,
    // which cannot travel, and their key range spans all orders), so the joining tasks list
    // the keys they read. The scan of `orders` waiting for the IN-subquery's join reads those
    // orders, not all 15,000.
    let (_, expected) = http.rows(&q18_with("tpch", 200)).await;
    let (_, rows) = http.rows_with(small_splits(q18_with("lake", 200))).await;
    assert_eq!(rows, expected);
    assert_eq!(expected.len(), 100);
    let (_, analyzed) = http.rows_with(small_splits(format!("EXPLAIN ANALYZE {}", q18_with("lake", 200)))).await;
    let analyzed = crate::plan_text(&analyzed);
    assert!(analyzed.contains("JoinKeysExec"), "{analyzed}");
    let lines: Vec<&str> = analyzed.lines().collect();
    let orders_read: Vec<u64> = (0..lines.len().saturating_sub(3))
        .filter(|&i| {
            lines[i].contains("JoinFilterWaitExec") && lines[i + 1..i + 4].iter().any(|l| l.contains("orders"))
        })
        .map(|i| rows_read(lines[i + 1]))
        .collect();
    assert!(orders_read.iter().any(|&read| read > 150 && read < 1_000), "{orders_read:?}\n{analyzed}");
}

/// The filter service on a worker's data port refuses calls without the internal token and
/// malformed filters, and the worker keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_filter_service_refuses_strangers_and_bad_filters() {
    use flotilla_sql::cross_stage_filters::{PublishedFilter, MAX_FILTER_BYTES};
    use flotilla_worker::filters::PUBLISH_PATH;
    let cluster = ProcessCluster::builder().workers(1).start();
    let http = Http::new(&cluster.coordinator_url());
    wait_for_nodes(&http, 3).await;
    let status = worker_status(&http, &cluster.cluster.workers[0].url).await;
    let data_url = status["dataUri"].as_str().unwrap_or_else(|| panic!("{status}")).to_string();
    let channel = tonic::transport::Endpoint::from_shared(data_url).unwrap().connect().await.unwrap();
    let call = |filter: PublishedFilter, token: Option<String>| {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready().await.unwrap();
            let mut request = tonic::Request::new(filter);
            if let Some(token) = token {
                request.metadata_mut().insert("x-trino-internal-bearer", token.parse().unwrap());
            }
            let codec = tonic_prost::ProstCodec::<PublishedFilter, ()>::default();
            grpc.unary(request, http::uri::PathAndQuery::from_static(PUBLISH_PATH), codec).await.map(|_| ())
        }
    };
    let filter = PublishedFilter { query_id: "q".into(), expression_id: 1, ..Default::default() };
    let refused = call(filter.clone(), None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let token = Some(cluster.internal_token());
    let bad = PublishedFilter { query_id: String::new(), ..filter.clone() };
    assert_eq!(call(bad, token.clone()).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let bad = PublishedFilter { task: 5, tasks: 2, ..filter.clone() };
    assert_eq!(call(bad, token.clone()).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let huge = PublishedFilter { query_id: "q".repeat(MAX_FILTER_BYTES + 8192), ..filter.clone() };
    assert_eq!(call(huge, token.clone()).await.unwrap_err().code(), tonic::Code::OutOfRange);
    // A filter for no query here is kept for a while (a scan may register later), harmlessly.
    call(filter, token).await.unwrap();
    let (_, rows) = http.rows("SELECT count(*) FROM tpch.tiny.nation").await;
    assert_eq!(rows, vec![vec![Value::from(25)]]);
}
