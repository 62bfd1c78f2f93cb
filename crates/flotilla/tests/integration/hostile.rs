//! Hostile input, as an attacker or a careless tool sends it: statements that recursed
//! until a coordinator's stack overflowed, views that reach themselves or what was
//! dropped, control endpoints without credentials, paths that change meaning when a relay
//! normalises them, huge headers, absurd session values, connections that never finish
//! their headers. Every case must end in a clear answer (a Trino error, a 4xx) with every
//! node still alive.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use flotilla_gateway::RoutingPolicy;
use serde_json::Value;

use crate::coordinators::{coordinator_ids, raw_request, wait_gateway_sees};
use crate::distributed::wait_for_nodes;
use crate::files::lake_etc;
use crate::harness::{ProcessCluster, TempDir};
use crate::Http;

/// Every node of the cluster answers `/v1/info/state` with `ACTIVE`.
async fn all_alive(cluster: &ProcessCluster, after: &str) {
    let http = Http::new("");
    let nodes = cluster
        .cluster
        .resource_managers
        .iter()
        .chain(&cluster.cluster.coordinators)
        .chain(&cluster.cluster.workers)
        .map(|node| node.url.clone());
    for url in nodes {
        let state = http.client.get(format!("{url}/v1/info/state")).send().await;
        let state: Value = match state {
            Ok(response) => response.json().await.unwrap(),
            Err(error) => panic!("{url} is gone after {after}: {error}"),
        };
        assert_eq!(state, "ACTIVE", "{url} after {after}");
    }
}

/// Every file under `dir` (none when it does not exist).
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                _ => found.push(entry.path()),
            }
        }
    }
    found
}

/// A statement that fails with `name` (and a message), through `http`.
async fn fails_with(http: &Http, request: reqwest::RequestBuilder, name: &str, what: &str) -> Value {
    let error = http.error_with(request).await;
    assert_eq!(error["errorName"], name, "{what}: {error}");
    assert!(!error["message"].as_str().unwrap_or_default().is_empty(), "{what}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_inputs_through_the_gateway_leave_both_coordinators_alive() {
    let cluster =
        ProcessCluster::builder().resource_managers(1).coordinators(2).gateways(1, RoutingPolicy::RoundRobin).start();
    let gateway = Http::new(&cluster.gateway_url());
    coordinator_ids(&gateway, 2).await;
    wait_gateway_sees(&gateway, 2).await;

    let terms = |n: usize, term: &str, joint: &str| vec![term; n].join(joint);
    let cases: Vec<(String, Vec<(&str, String)>, &str)> = vec![
        // EXECUTE of itself, by PREPARE and by the header.
        ("PREPARE p FROM EXECUTE p".into(), vec![], "NOT_SUPPORTED"),
        // Found by fuzzing: nothing after FROM parsed the whole statement again, forever.
        ("PREPARE p FROM".into(), vec![], "SYNTAX_ERROR"),
        ("PREPARE p FROM -- nothing".into(), vec![], "SYNTAX_ERROR"),
        ("EXECUTE p".into(), vec![("X-Trino-Prepared-Statement", "p=EXECUTE+p".into())], "NOT_SUPPORTED"),
        ("EXECUTE IMMEDIATE 'EXECUTE IMMEDIATE ''SELECT 1'''".into(), vec![], "NOT_SUPPORTED"),
        (format!("{}SELECT 1", "PREPARE a FROM ".repeat(20_000)), vec![], "NOT_SUPPORTED"),
        (format!("CREATE VIEW lake.s.v {}AS SELECT 1", "SECURITY DEFINER ".repeat(20_000)), vec![], "SYNTAX_ERROR"),
        // Deep trees sqlparser builds without recursion.
        (format!("SELECT {}", terms(100_000, "1", "+")), vec![], "SYNTAX_ERROR"),
        (terms(20_000, "SELECT 1", " UNION ALL "), vec![], "SYNTAX_ERROR"),
        (format!("SELECT 1{}", "::integer".repeat(50_000)), vec![], "SYNTAX_ERROR"),
        (format!("SELECT x FROM (SELECT 1 x) t WHERE {}", terms(50_000, "x = 1", " OR ")), vec![], "SYNTAX_ERROR"),
        // Deep trees it builds recursively (its own limit).
        (format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000)), vec![], "SYNTAX_ERROR"),
        (format!("SELECT {}true", "NOT ".repeat(100_000)), vec![], "SYNTAX_ERROR"),
        (
            format!("SELECT * FROM {}(SELECT 1) t{}", "(SELECT * FROM ".repeat(10_000), ") t".repeat(10_000)),
            vec![],
            "SYNTAX_ERROR",
        ),
        // A parameter bound deep into a prepared statement: each under the limit, together
        // over it.
        (
            format!("EXECUTE q USING {}", terms(600, "1", "+")),
            vec![(
                "X-Trino-Prepared-Statement",
                format!("q={}", flotilla_protocol::headers::url_encode(&format!("SELECT ?{}", "+1".repeat(600)))),
            )],
            "SYNTAX_ERROR",
        ),
        ("SET SESSION task_concurrency = 4294967295".into(), vec![], "INVALID_SESSION_PROPERTY"),
        (
            "SELECT 1".into(),
            vec![("X-Trino-Session", "task_concurrency=4294967295".into())],
            "INVALID_SESSION_PROPERTY",
        ),
    ];
    for (sql, headers, expected) in &cases {
        let what = format!("{}... ({} bytes)", sql.chars().take(60).collect::<String>(), sql.len());
        let mut request = gateway.post(sql);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        fails_with(&gateway, request, expected, &what).await;
        all_alive(&cluster, &what).await;
    }

    // Patterns that recursed once per character or backtracked exponentially: answered.
    for sql in [
        format!("SHOW CATALOGS LIKE '{}'", "%".repeat(200_000)),
        format!("SHOW FUNCTIONS LIKE '{}#'", "%".repeat(64)),
        format!("SHOW SESSION LIKE '{}x'", "%_".repeat(5_000)),
    ] {
        let responses = gateway.run(&sql).await;
        let last = responses.last().unwrap();
        assert!(last.get("error").is_none(), "{}: {}", &sql[..30], last["error"]);
        all_alive(&cluster, &sql[..30]).await;
    }

    // A user name of 190 KB would have been copied into every heartbeat.
    let huge = "u".repeat(190_000);
    let refused = gateway.client.post(format!("{}/v1/statement", gateway.base)).header("X-Trino-User", &huge);
    let refused = refused.body("SELECT 1").send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("X-Trino-User is longer than 256"));
    let refused = gateway.post("SELECT 1").header("X-Trino-Source", &huge).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    all_alive(&cluster, "huge headers").await;

    // Still serving, both of them.
    for _ in 0..4 {
        let (_, rows) = gateway.rows("SELECT count(*) FROM tpch.tiny.nation").await;
        assert_eq!(rows, vec![vec![Value::from(25)]]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_that_reach_themselves_or_dropped_tables_are_refused_and_listed() {
    let root = TempDir::new("flotilla-lake");
    let etc = lake_etc(&root.path);
    let cluster = ProcessCluster::builder().coordinators(2).etc_dir(&etc.path).start();
    let [a, b] = [0, 1].map(|i| Http::new(&cluster.cluster.coordinators[i].url));
    wait_for_nodes(&a, 3).await;
    a.rows("CREATE SCHEMA lake.s").await;

    // Refused at creation, directly and through another view; the old definition stays.
    a.rows("CREATE VIEW lake.s.v AS SELECT 1 x").await;
    let error = fails_with(
        &a,
        a.post("CREATE OR REPLACE VIEW lake.s.v AS SELECT * FROM lake.s.v"),
        "VIEW_IS_RECURSIVE",
        "self",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("lake.s.v"), "{error}");
    a.rows("CREATE VIEW lake.s.w AS SELECT x + 1 y FROM lake.s.v").await;
    let cycle = a.post("CREATE OR REPLACE VIEW lake.s.v AS SELECT y x FROM lake.s.w");
    fails_with(&a, cycle, "VIEW_IS_RECURSIVE", "through w").await;
    assert_eq!(b.rows("SELECT y FROM lake.s.w").await.1, vec![vec![Value::from(2)]]);

    // A cycle stored anyway (two racing replacements could make one; written directly
    // here): refused when planned, on every coordinator, and listings still work.
    for (name, reads) in [("c1", "c2"), ("c2", "c1")] {
        let dir = root.path.join("s").join(name).join("_flotilla");
        std::fs::create_dir_all(&dir).unwrap();
        let entry = serde_json::json!({
            "kind": "view", "id": format!("{name}00000000000000"), "sql": format!("SELECT * FROM lake.s.{reads}"),
            "catalog": "lake", "schema": "s",
        });
        std::fs::write(dir.join("table"), entry.to_string()).unwrap();
    }
    for http in [&a, &b] {
        fails_with(http, http.post("SELECT * FROM lake.s.c1"), "VIEW_IS_RECURSIVE", "stored cycle").await;
        let (_, tables) = http
            .rows(
                "SELECT table_name, table_type FROM lake.information_schema.tables WHERE table_schema = 's' ORDER BY 1",
            )
            .await;
        assert!(tables.contains(&vec![Value::from("c1"), Value::from("VIEW")]), "{tables:?}");
        http.rows("SELECT * FROM lake.information_schema.columns").await;
    }
    all_alive(&cluster, "a stored cycle of views").await;

    // Views within views: 16 levels are planned, more are refused.
    a.rows("CREATE VIEW lake.s.n0 AS SELECT 1 x").await;
    for level in 1..16 {
        a.rows(&format!("CREATE VIEW lake.s.n{level} AS SELECT x FROM lake.s.n{}", level - 1)).await;
    }
    assert_eq!(b.rows("SELECT x FROM lake.s.n15").await.1, vec![vec![Value::from(1)]]);
    fails_with(&a, a.post("CREATE VIEW lake.s.n16 AS SELECT x FROM lake.s.n15"), "INVALID_VIEW", "17 levels").await;

    // A view over a dropped table: listed by information_schema (which dbt and BI tools
    // read), and reading it says why.
    a.rows("CREATE TABLE lake.s.t AS SELECT 1 a").await;
    a.rows("CREATE VIEW lake.s.dangling AS SELECT a FROM lake.s.t").await;
    a.rows("DROP TABLE lake.s.t").await;
    for http in [&a, &b] {
        let (_, tables) = http
            .rows("SELECT table_name, table_type FROM lake.information_schema.tables WHERE table_name = 'dangling'")
            .await;
        assert_eq!(tables, vec![vec![Value::from("dangling"), Value::from("VIEW")]]);
        let (_, views) =
            http.rows("SELECT view_definition FROM lake.information_schema.views WHERE table_name = 'dangling'").await;
        assert!(views[0][0].as_str().unwrap().contains("lake.s.t"), "{views:?}");
        http.rows("SELECT count(*) FROM lake.information_schema.columns").await;
        http.rows("SELECT * FROM system.jdbc.tables").await;
        let error = fails_with(http, http.post("SELECT * FROM lake.s.dangling"), "TABLE_NOT_FOUND", "dangling").await;
        assert!(error["message"].as_str().unwrap().contains("Failed analyzing stored view"), "{error}");
    }
    all_alive(&cluster, "views").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_drops_lose_nothing_acknowledged() {
    let root = TempDir::new("flotilla-lake");
    let etc = lake_etc(&root.path);
    let cluster = ProcessCluster::builder().coordinators(2).workers(1).etc_dir(&etc.path).start();
    let [a, b] = [0, 1].map(|i| Http::new(&cluster.cluster.coordinators[i].url));
    wait_for_nodes(&a, 4).await;
    a.rows("CREATE SCHEMA lake.r").await;

    // INSERTs through both coordinators while the table is dropped: each either landed
    // before the drop (and went with the table) or fails; none leaves an acknowledged
    // manifest behind in the dropped table's directory.
    for round in 0..5u64 {
        a.rows("CREATE TABLE lake.r.t (round integer, n integer)").await;
        let inserts: Vec<_> = (0..6)
            .map(|n| {
                let http = if n % 2 == 0 { Http::new(&a.base) } else { Http::new(&b.base) };
                tokio::spawn(async move {
                    let responses = http.run(&format!("INSERT INTO lake.r.t VALUES ({round}, {n})")).await;
                    responses.last().unwrap().get("error").cloned()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30 * round)).await;
        a.rows("DROP TABLE lake.r.t").await;
        for insert in inserts {
            if let Some(error) = insert.await.unwrap() {
                assert_eq!(error["errorType"], "USER_ERROR", "round {round}: {error}");
            }
        }
        let left = files_under(&root.path.join("r/t"));
        assert!(left.is_empty(), "round {round}: a dropped table's files outlived it: {left:?}");
    }

    // COMMENT racing DROP never brings the table back.
    for _ in 0..5 {
        a.rows("CREATE TABLE lake.r.c (x integer)").await;
        let comment = tokio::spawn({
            let b = Http::new(&b.base);
            async move { b.run("COMMENT ON TABLE lake.r.c IS 'hello'").await.last().unwrap().get("error").cloned() }
        });
        a.rows("DROP TABLE lake.r.c").await;
        if let Some(error) = comment.await.unwrap() {
            assert_eq!(error["errorName"], "TABLE_NOT_FOUND", "{error}");
        }
        let (_, found) = a.rows("SHOW TABLES FROM lake.r LIKE 'c'").await;
        assert!(found.is_empty(), "a comment revived the dropped table: {found:?}");
    }

    // DROP SCHEMA while a CREATE TABLE AS writes into it: either the schema stays (the
    // table made it) or the table is taken back; never a table in a dropped schema.
    a.rows("CREATE SCHEMA lake.d").await;
    let ctas = tokio::spawn({
        let b = Http::new(&b.base);
        async move { b.run("CREATE TABLE lake.d.big AS SELECT * FROM tpch.sf1.orders").await.last().unwrap().clone() }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !root.path.join("d/big").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = a.run("DROP SCHEMA lake.d").await.last().unwrap().clone();
    let created = ctas.await.unwrap();
    match (dropped.get("error"), created.get("error")) {
        (None, Some(_)) => {
            // The table was taken back: the schema does not come back with it.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (_, schemas) = a.rows("SHOW SCHEMAS FROM lake LIKE 'd'").await;
                if schemas.is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "the dropped schema is back: {schemas:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        (Some(error), None) => {
            assert_eq!(error["errorName"], "SCHEMA_NOT_EMPTY", "{error}");
            let (_, rows) = a.rows("SELECT count(*) FROM lake.d.big").await;
            assert_eq!(rows, vec![vec![Value::from(1_500_000)]]);
        }
        other => panic!("exactly one of DROP SCHEMA and CREATE TABLE AS succeeds: {other:?}"),
    }
    all_alive(&cluster, "writes racing drops").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_endpoints_check_who_asks_and_relays_cannot_be_steered() {
    let etc = TempDir::new("flotilla-etc");
    std::fs::write(etc.path.join("config.properties"), "access-control.admin-users=root\n").unwrap();
    let cluster = ProcessCluster::builder()
        .resource_managers(1)
        .coordinators(2)
        .workers(2)
        .gateways(1, RoutingPolicy::RoundRobin)
        .etc_dir(&etc.path)
        .start();
    let gateway = Http::new(&cluster.gateway_url());
    let ids = coordinator_ids(&gateway, 2).await;
    wait_gateway_sees(&gateway, 2).await;
    wait_for_nodes(&gateway, 5).await;
    let coordinator = cluster.coordinator_url();

    // Node state: nobody without the secret or an admin name, on any role.
    let put_state = |url: &str, user: Option<&str>| {
        let request = gateway.client.put(format!("{url}/v1/info/state")).json(&"SHUTTING_DOWN");
        match user {
            Some(user) => request.header("X-Trino-User", user),
            None => request,
        }
    };
    let nodes = [&cluster.cluster.resource_managers[0], &cluster.cluster.coordinators[0], &cluster.cluster.workers[0]];
    for node in nodes {
        for user in [None, Some("mallory")] {
            assert_eq!(put_state(&node.url, user).send().await.unwrap().status(), 403, "{} as {user:?}", node.url);
        }
    }
    all_alive(&cluster, "refused state changes").await;

    // Dot segments and encoded separators never reach a relay decision.
    let owned_by_a = format!("20260101_000000_00000_{}", ids["coordinator-1"]);
    let host = cluster.gateway_url().trim_start_matches("http://").to_string();
    for (method, path) in [
        ("GET", format!("/v1/query/{owned_by_a}/../../status")),
        ("GET", format!("/v1/query/{owned_by_a}/%2e%2e/%2E%2E/status")),
        ("PUT", format!("/v1/query/{owned_by_a}/../../info/state")),
        ("GET", "/v1/resourceGroupState/..%5C..%5Cview".to_string()),
    ] {
        for base in [&cluster.gateway_url(), &coordinator] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n\"SHUTTING_DOWN\""
            );
            let answer = raw_request(base, &request);
            // Refused (400) where a relay could follow it; a coordinator's own router has no
            // such route (404). Never the relayed endpoint's answer.
            assert!(answer.starts_with("HTTP/1.1 4"), "{method} {path} via {base}: {answer}");
            if base == &cluster.gateway_url() {
                assert!(answer.starts_with("HTTP/1.1 400"), "{method} {path} via the gateway: {answer}");
            }
        }
    }
    // A trailing slash is no ambiguity: the UI's root still answers (with its login).
    for base in [&cluster.gateway_url(), &coordinator] {
        let answer = raw_request(base, &format!("GET /ui/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
        assert!(answer.starts_with("HTTP/1.1 303"), "/ui/ via {base}: {answer}");
    }
    // The group path is one segment of the internal URL: no other endpoint is reached.
    let answer = gateway.client.get(format!("{coordinator}/v1/resourceGroupState/global")).send().await.unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    // Without a resource group configuration the group has nothing to report (404); a
    // relay that reached another endpoint would answer something else.
    assert_eq!(status, 404, "{body}");
    assert!(body.starts_with("Resource group not found: global"), "{body}");
    all_alive(&cluster, "steered relays").await;

    // X-Forwarded-* from a client do not steer nextUri (http-server.process-forwarded is off).
    let steered = |http: &Http| {
        http.post("SELECT 1").header("X-Forwarded-Host", "evil.example").header("X-Forwarded-Proto", "https")
    };
    let first = gateway.first(steered(&gateway)).await;
    let next = first["nextUri"].as_str().unwrap();
    assert!(next.starts_with(&cluster.gateway_url()), "{next}");
    let direct = Http::new(&coordinator);
    let first = direct.first(steered(&direct)).await;
    assert!(first["nextUri"].as_str().unwrap().starts_with(&coordinator), "{first}");

    // The login redirect with a CR/LF in it: a redirect to the UI, not a server error.
    let form = "username=alice&password=&redirect=%2Fui%2Fx%0d%0aSet-Cookie%3A%20a%3Db";
    let answer = raw_request(
        &coordinator,
        &format!(
            "POST /ui/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("location: /ui/\r\n"), "{answer}");
    let login = gateway.client.get(format!("{coordinator}/ui/login.html")).send().await.unwrap();
    assert_eq!(login.headers()["x-frame-options"], "DENY");
    assert!(login.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));

    // Connections that never finish their headers are closed (they were kept forever).
    let address = coordinator.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            stream.write_all(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n").unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            stream
        })
        .collect();
    let (_, rows) = gateway.rows("SELECT 1").await;
    assert_eq!(rows, vec![vec![Value::from(1)]], "served while they hang");
    let closed = tokio::task::spawn_blocking(move || {
        idle.into_iter()
            .filter(|mut stream| {
                let mut buffer = Vec::new();
                // Closed by the server: the read ends (or the connection is reset); still
                // open: the read times out.
                match stream.read_to_end(&mut buffer) {
                    Ok(_) => true,
                    Err(error) => {
                        !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                    }
                }
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 40, "every half-open connection was closed by the server");
    all_alive(&cluster, "half-open connections").await;

    // An admin may drain a node (the first worker drains and exits).
    assert_eq!(put_state(&cluster.cluster.workers[0].url, Some("root")).send().await.unwrap().status(), 200);
}
