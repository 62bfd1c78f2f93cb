//! Resource managers with real processes: discovery through peers, failure detection, no
//! flapping, restarts, and the shared-secret check on every internal endpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_node::InternalClient;
use flotilla_proto::cluster::{ClusterView, NodeState, CLUSTER_VIEW_PATH, HEARTBEAT_PATH, PEER_SYNC_PATH};
use serde_json::{json, Value};

use crate::harness::{ProcessCluster, TestCluster};
use crate::Http;

/// Default failure timeout (resource-manager.node-status-timeout) plus slack for a loaded
/// test machine.
const DEAD_WITHIN: Duration = Duration::from_secs(5 + 4);

async fn view(client: &InternalClient, rm: &str) -> Result<ClusterView, flotilla_proto::CallError> {
    client.get::<ClusterView>(rm, CLUSTER_VIEW_PATH).await
}

/// node id -> state, as one resource manager sees it.
async fn node_states(client: &InternalClient, rm: &str) -> BTreeMap<String, NodeState> {
    let view = view(client, rm).await.unwrap_or_else(|e| panic!("view from {rm}: {e}"));
    view.nodes.into_iter().map(|n| (n.node.node_id, n.state)).collect()
}

/// Polls until every listed resource manager sees exactly `expected`, or panics with what
/// they saw.
async fn wait_for(client: &InternalClient, rms: &[String], expected: &BTreeMap<String, NodeState>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for rm in rms {
            seen.push(node_states(client, rm).await);
        }
        if seen.iter().all(|s| s == expected) {
            return;
        }
        assert!(Instant::now() < deadline, "within {within:?} expected {expected:?} on every RM, saw {seen:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn all_active(cluster: &ProcessCluster) -> BTreeMap<String, NodeState> {
    let local = &cluster.cluster;
    local
        .resource_managers
        .iter()
        .chain(&local.coordinators)
        .chain(&local.workers)
        .map(|p| (p.spec.node_id.clone(), NodeState::Active))
        .collect()
}

async fn live_nodes(http: &Http) -> usize {
    let nodes: Vec<Value> =
        http.client.get(format!("{}/v1/node", http.base)).send().await.unwrap().json().await.unwrap();
    nodes.len()
}

/// The coordinator's count of live nodes; `/v1/node` and `system.runtime.nodes` must agree
/// whenever the view did not change between the reads.
async fn coordinator_node_count(http: &Http) -> usize {
    loop {
        let before = live_nodes(http).await;
        let (_, rows) = http.rows("SELECT count(*) FROM system.runtime.nodes WHERE state = 'active'").await;
        if before == live_nodes(http).await {
            assert_eq!(rows[0][0].as_u64().unwrap() as usize, before, "/v1/node and system.runtime.nodes agree");
            return before;
        }
    }
}

/// The coordinator refreshes its view about once a second: wait for it to catch up.
async fn wait_for_coordinator_count(http: &Http, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let count = coordinator_node_count(http).await;
        if count == expected {
            return;
        }
        assert!(Instant::now() < deadline, "the coordinator lists {count} live nodes, expected {expected}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_managers_share_every_node_survive_failures_and_never_flap() {
    let mut cluster =
        ProcessCluster::builder().resource_managers(3).coordinators(1).workers(3).one_resource_manager_each().start();
    let client = cluster.internal_client();
    let rm_urls: Vec<String> = cluster.cluster.resource_managers.iter().map(|p| p.url.clone()).collect();
    let mut expected = all_active(&cluster);
    assert_eq!(expected.len(), 7);

    // Every node was given a single, different resource manager; each RM still lists all 7.
    wait_for(&client, &rm_urls, &expected, Duration::from_secs(15)).await;

    // Once settled, the node list never changes: 50 samples over 10 s, every RM.
    for _ in 0..50 {
        for rm in &rm_urls {
            assert_eq!(node_states(&client, rm).await, expected, "node list changed on {rm}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let http = Http::new(&cluster.coordinator_url());
    wait_for_coordinator_count(&http, 7).await;
    let cluster_stats: Value =
        http.client.get(format!("{}/v1/cluster", http.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(cluster_stats["activeWorkers"], 3, "{cluster_stats}");
    assert_eq!(cluster_stats["activeResourceManagers"], 3, "{cluster_stats}");

    // The coordinator's queries reach every resource manager (in full once, then as deltas).
    let responses = http.run("SELECT 'reported' AS marker").await;
    let query_id = responses[0]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    for rm in &rm_urls {
        loop {
            let view = view(&client, rm).await.unwrap();
            let found = view.queries.iter().find(|q| q.identity.query_id == query_id);
            if let Some(query) = found.filter(|q| q.progress.state == "FINISHED") {
                assert_eq!(query.identity.user, "test");
                assert_eq!(query.identity.query, "SELECT 'reported' AS marker");
                assert_eq!(query.coordinator, "coordinator-1");
                assert!(query.progress.end_time_ms.is_some());
                break;
            }
            assert!(Instant::now() < deadline, "{rm} never saw {query_id} finish: {found:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Kill the resource manager the coordinator was configured with: the coordinator keeps
    // answering from the others, and the others mark it dead.
    let killed = cluster.cluster.resource_managers[0].spec.node_id.clone();
    cluster.cluster.resource_managers[0].kill();
    let survivors = rm_urls[1..].to_vec();
    let deadline = Instant::now() + DEAD_WITHIN;
    while Instant::now() < deadline {
        let count = coordinator_node_count(&http).await;
        assert!(count == 7 || count == 6, "the coordinator lists {count} live nodes");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    expected.insert(killed.clone(), NodeState::Dead);
    wait_for(&client, &survivors, &expected, Duration::from_secs(2)).await;
    wait_for_coordinator_count(&http, 6).await;

    // Restarted, it knows every node again within a few heartbeat intervals.
    let restart_started = Instant::now();
    let mut rm0 = cluster.cluster.resource_managers.remove(0);
    cluster.cluster.restart(&mut rm0).unwrap();
    let restarted = rm0.url.clone();
    cluster.cluster.resource_managers.insert(0, rm0);
    assert_eq!(restarted, rm_urls[0], "restarted in place, on the same port");
    expected.insert(killed, NodeState::Active);
    // Until it has heard from every node (or a peer sent it all), it says its view is not
    // complete, so coordinators and gateways take another's; once it says complete, every
    // node is in it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut partial_views = 0;
    loop {
        match view(&client, &restarted).await {
            Ok(view) if view.complete => {
                let listed: Vec<&str> = view.nodes.iter().map(|n| n.node.node_id.as_str()).collect();
                assert!(expected.keys().all(|id| listed.contains(&id.as_str())), "complete, yet lists only {listed:?}");
                break;
            }
            Ok(_) => partial_views += 1,
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "the restarted resource manager never said its view was complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("restarted resource manager served {partial_views} partial views before a complete one");
    wait_for(&client, &[restarted.clone()], &expected, Duration::from_secs(5)).await;
    eprintln!("restarted resource manager rebuilt its view in {:?}", restart_started.elapsed());

    // A killed worker is marked dead within the timeout on every resource manager.
    let worker = cluster.cluster.workers[1].spec.node_id.clone();
    cluster.cluster.workers[1].kill();
    expected.insert(worker, NodeState::Dead);
    let mut all = survivors.clone();
    all.push(restarted);
    wait_for(&client, &all, &expected, DEAD_WITHIN).await;
    wait_for_coordinator_count(&http, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_refuse_calls_without_the_shared_secret() {
    let cluster = ProcessCluster::builder().resource_managers(1).coordinators(0).workers(0).start();
    let in_process = TestCluster::start_default().await;
    let rm = cluster.cluster.resource_managers[0].url.clone();
    let http = reqwest::Client::new();
    let wrong = flotilla_proto::InternalAuth::new("not-the-cluster-secret", "intruder").unwrap();
    let right = flotilla_proto::InternalAuth::new(&cluster.cluster.secret, "test").unwrap();
    let endpoints = [("POST", HEARTBEAT_PATH), ("POST", PEER_SYNC_PATH), ("GET", CLUSTER_VIEW_PATH)];
    for base in [rm.as_str(), in_process.url().as_str()] {
        for (method, path) in endpoints {
            for token in [None, Some(wrong.token()), Some("not.a.token".to_string())] {
                let url = format!("{base}{path}");
                let mut request = if method == "POST" { http.post(&url).json(&json!({})) } else { http.get(&url) };
                if let Some(token) = &token {
                    request = request.header(flotilla_proto::INTERNAL_BEARER_HEADER, token);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 401, "{method} {url} with {token:?}");
            }
        }
    }
    // The right secret gets through (to the process whose secret the harness holds).
    let response = http
        .get(format!("{rm}{CLUSTER_VIEW_PATH}"))
        .header(flotilla_proto::INTERNAL_BEARER_HEADER, right.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    in_process.shutdown().await;
}

/// `flotilla up` itself (the harness starts nodes with the same launcher, but this checks the
/// command a newcomer runs): every process serves, and SIGTERM stops all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_a_cluster_and_sigterm_stops_every_process() {
    use std::io::{BufRead, BufReader};
    let data_dir = crate::harness::TempDir::new("flotilla-up");
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--port", "0", "--resource-managers", "2", "--workers", "2", "--data-dir"])
        .arg(&data_dir.path)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = up.stderr.take().unwrap();
    let (lines_sender, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_sender.send(line);
        }
    });
    let mut node_urls = Vec::new();
    let gateway = loop {
        let line = lines.recv_timeout(Duration::from_secs(90)).expect("flotilla up reports its endpoints");
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            if line.contains("serving Trino clients") {
                break url.to_string();
            }
            node_urls.push(url.to_string());
        }
    };
    assert_eq!(node_urls.len(), 7, "2 resource managers, 2 coordinators, 2 workers, a gateway: {node_urls:?}");
    assert_eq!(&gateway, node_urls.last().unwrap(), "clients are sent to the gateway");
    let http = Http::new(&gateway);
    // The gateway is not a member of the cluster: 6 nodes.
    let (_, rows) = http.rows("SELECT count(*) FROM system.runtime.nodes WHERE state = 'active'").await;
    assert_eq!(rows[0][0], 6);

    let status = std::process::Command::new("kill").args(["-TERM", &up.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "flotilla up did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    for url in &node_urls {
        let answer = client.get(format!("{url}/v1/info")).send().await;
        assert!(answer.is_err(), "{url} still answers after flotilla up stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coordinator_lists_the_queries_of_every_coordinator() {
    let cluster = ProcessCluster::builder().resource_managers(1).coordinators(2).start();
    let first = Http::new(&cluster.cluster.coordinators[0].url);
    let second = Http::new(&cluster.cluster.coordinators[1].url);
    let responses = first.run("SELECT count(*) FROM tpch.tiny.nation").await;
    let id = responses[0]["id"].as_str().unwrap().to_string();
    // The second coordinator learns of it from the resource managers' view.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sql = format!("SELECT state, \"user\", query FROM system.runtime.queries WHERE query_id = '{id}'");
        let (_, rows) = second.rows(&sql).await;
        if rows.first().is_some_and(|r| r[0] == "FINISHED") {
            assert_eq!(rows[0][1], "test");
            assert_eq!(rows[0][2], "SELECT count(*) FROM tpch.tiny.nation");
            break;
        }
        assert!(Instant::now() < deadline, "the second coordinator never listed {id}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `/v1/query` on the second coordinator lists it too, with its owner.
    let listed: Vec<Value> =
        second.client.get(format!("{}/v1/query", second.base)).send().await.unwrap().json().await.unwrap();
    let entry = listed.iter().find(|q| q["queryId"] == id.as_str()).expect("listed by the other coordinator");
    assert_eq!(entry["state"], "FINISHED", "{entry}");
    assert_eq!(entry["coordinator"], "coordinator-1", "{entry}");
    // Each query is listed once (a coordinator's own come from its registry, not twice).
    let (_, rows) = second.rows("SELECT count(*), count(DISTINCT query_id) FROM system.runtime.queries").await;
    assert_eq!(rows[0][0], rows[0][1], "no query listed twice");
    assert!(rows[0][0].as_u64().unwrap() >= 3, "both coordinators' queries: {rows:?}");
}
