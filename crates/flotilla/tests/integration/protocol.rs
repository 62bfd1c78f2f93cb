//! The client protocol at the HTTP level: every endpoint, its error paths, idempotent
//! re-fetch, cancel, bad headers and bodies.

use serde_json::Value;

use crate::harness::TestCluster;
use crate::Http;

#[tokio::test]
async fn info_endpoints_describe_the_node() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let info: Value = http.client.get(format!("{}/v1/info", cluster.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["starting"], false);
    assert_eq!(info["coordinator"], true);
    assert!(info["nodeVersion"]["version"].is_string());
    assert!(info["environment"].is_string());
    assert!(info["uptime"].is_string());
    let state: Value =
        http.client.get(format!("{}/v1/info/state", cluster.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(state, "ACTIVE");
    let status: Value =
        http.client.get(format!("{}/v1/status", cluster.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["coordinator"], true);
    assert!(status["nodeId"].is_string());
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_query_goes_from_queued_to_executing_and_ends() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let responses = http.run("SELECT 1 AS one, 'x' AS two").await;
    let first = &responses[0];
    let id = first["id"].as_str().unwrap();
    assert!(first["nextUri"].as_str().unwrap().contains(&format!("/v1/statement/queued/{id}/")));
    assert_eq!(first["stats"]["state"], "QUEUED");
    assert!(first["infoUri"].as_str().unwrap().ends_with(&format!("/v1/query/{id}")));
    let parts: Vec<&str> = id.split('_').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[3].len(), 5);
    let last = responses.last().unwrap();
    assert_eq!(last["stats"]["state"], "FINISHED");
    assert!(last.get("nextUri").is_none());
    for response in &responses {
        assert!(response["id"].is_string() && response["infoUri"].is_string() && response["stats"].is_object());
        for key in [
            "queued",
            "scheduled",
            "nodes",
            "totalSplits",
            "queuedSplits",
            "runningSplits",
            "completedSplits",
            "cpuTimeMillis",
            "wallTimeMillis",
            "queuedTimeMillis",
            "elapsedTimeMillis",
            "processedRows",
            "processedBytes",
            "peakMemoryBytes",
        ] {
            assert!(response["stats"].get(key).is_some(), "stats.{key} missing");
        }
    }
    let (columns, rows) = crate::collect(&responses);
    assert_eq!(columns, vec!["one", "two"]);
    assert_eq!(rows, vec![vec![Value::from(1), Value::from("x")]]);
    let executing =
        responses.iter().filter_map(|r| r.get("nextUri")).filter_map(Value::as_str).any(|u| u.contains("/executing/"));
    assert!(executing || responses.len() == 2, "no executing/ URI in {responses:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_same_token_returns_the_same_page_and_old_tokens_are_gone() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    // Many pages (8192-row batches), so token 1 is never the final response.
    let first: Value = http.post("SELECT * FROM tpch.tiny.lineitem").send().await.unwrap().json().await.unwrap();
    let next1 = first["nextUri"].as_str().unwrap().to_string();
    let a = http.client.get(&next1).send().await.unwrap().text().await.unwrap();
    let b = http.client.get(&next1).send().await.unwrap().text().await.unwrap();
    assert_eq!(a, b, "a retried token must return the identical response");
    let parsed_a: Value = serde_json::from_str(&a).unwrap();
    // Move on until the cursor has passed token 1, then token 1 is gone. Token 0 (the POST's
    // page) is older than the current token as soon as token 1 was served.
    let token0 = next1.rsplit_once('/').map(|(prefix, _)| format!("{prefix}/0")).unwrap();
    let gone = http.client.get(&token0).send().await.unwrap();
    assert_eq!(gone.status(), 410);
    let next2 = parsed_a["nextUri"].as_str().expect("a multi-page result has a second page");
    assert_eq!(http.client.get(next2).send().await.unwrap().status(), 200);
    assert_eq!(http.client.get(&next1).send().await.unwrap().status(), 410);
    cluster.shutdown().await;
}

#[tokio::test]
async fn unknown_queries_bad_slugs_and_bad_tokens_are_404() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let base = cluster.url();
    let first: Value = http.post("SELECT 1").send().await.unwrap().json().await.unwrap();
    let next = first["nextUri"].as_str().unwrap();
    let id = first["id"].as_str().unwrap();
    // This coordinator's own id: an unknown query of its own is simply not found.
    let own = id.rsplit('_').next().unwrap();
    for path in [
        format!("/v1/statement/executing/20260101_000000_00000_{own}/yslug/1"),
        "/v1/statement/queued/not-an-id/yslug/1".to_string(),
        format!("/v1/statement/other/20260101_000000_00000_{own}/yslug/1"),
        format!("/v1/query/20260101_000000_00000_{own}"),
        "/v1/query/../../etc/passwd".to_string(),
    ] {
        let status = http.client.get(format!("{base}{path}")).send().await.unwrap().status();
        assert_eq!(status, 404, "{path}");
    }
    // A query of a coordinator the cluster does not have: the poll fails the query with a
    // Trino error that says so; the query API answers 404.
    let stranger = if own == "zzzzz" { "yyyyy" } else { "zzzzz" };
    let poll = format!("{base}/v1/statement/executing/20260101_000000_00000_{stranger}/yslug/1");
    let lost: Value = http.client.get(&poll).send().await.unwrap().json().await.unwrap();
    assert_eq!(lost["error"]["errorName"], "REMOTE_HOST_GONE", "{lost}");
    assert!(lost["error"]["message"].as_str().unwrap().contains(&format!("coordinator {stranger} is gone")));
    let info = http.client.get(format!("{base}/v1/query/20260101_000000_00000_{stranger}")).send().await.unwrap();
    assert_eq!(info.status(), 404);
    let bad_slug = next.replace(&format!("/{id}/y"), &format!("/{id}/z"));
    assert_eq!(http.client.get(&bad_slug).send().await.unwrap().status(), 404);
    let bad_token = format!("{}/x", next.rsplit_once('/').unwrap().0);
    assert_eq!(http.client.get(&bad_token).send().await.unwrap().status(), 404);
    let future_token = format!("{}/99", next.rsplit_once('/').unwrap().0);
    assert_eq!(http.client.get(&future_token).send().await.unwrap().status(), 404);
    cluster.shutdown().await;
}

#[tokio::test]
async fn delete_next_uri_cancels_the_query() {
    let cluster = crate::blackhole::with_blackhole().await;
    let http = Http::new(&cluster.url());
    // Still running when the cancel arrives: an hour of pages.
    let slow = crate::blackhole::slow_table(&http, "slow", 3600).await;
    let first: Value = http.post(&slow).send().await.unwrap().json().await.unwrap();
    let next = first["nextUri"].as_str().unwrap().to_string();
    let deleted = http.client.delete(&next).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let responses = http.run_with(http.client.get(&next)).await;
    let last = responses.last().unwrap();
    assert_eq!(last["error"]["errorName"], "USER_CANCELED", "{last}");
    assert_eq!(last["stats"]["state"], "FAILED");
    cluster.shutdown().await;
}

#[tokio::test]
async fn query_resource_supports_get_head_and_delete() {
    let cluster = crate::blackhole::with_blackhole().await;
    let http = Http::new(&cluster.url());
    let slow = crate::blackhole::slow_table(&http, "slow", 3600).await;
    let first: Value = http.post(&slow).send().await.unwrap().json().await.unwrap();
    let info_uri = first["infoUri"].as_str().unwrap().to_string();
    let info: Value = http.client.get(&info_uri).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["queryId"], first["id"]);
    assert_eq!(info["session"]["user"], "test");
    assert_eq!(http.client.head(&info_uri).send().await.unwrap().status(), 200);
    let list: Value =
        http.client.get(format!("{}/v1/query", cluster.url())).send().await.unwrap().json().await.unwrap();
    assert!(list.as_array().unwrap().iter().any(|q| q["queryId"] == first["id"]));
    assert_eq!(http.client.delete(&info_uri).send().await.unwrap().status(), 403, "no user: not the query's");
    let delete = http.client.delete(&info_uri).header("X-Trino-User", "test");
    assert_eq!(delete.send().await.unwrap().status(), 204);
    let responses = http.run_with(http.client.get(first["nextUri"].as_str().unwrap())).await;
    assert_eq!(responses.last().unwrap()["error"]["errorName"], "USER_CANCELED");
    let unknown = format!("{}/v1/query/20260101_000000_00000_zzzzz", cluster.url());
    assert_eq!(http.client.head(&unknown).send().await.unwrap().status(), 404);
    assert_eq!(http.client.delete(&unknown).send().await.unwrap().status(), 404);
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_400_and_the_server_keeps_serving() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let url = format!("{}/v1/statement", cluster.url());
    let no_user = http.client.post(&url).body("SELECT 1").send().await.unwrap();
    assert_eq!(no_user.status(), 400);
    assert!(no_user.text().await.unwrap().contains("X-Trino-User"));
    let empty = http.post("").send().await.unwrap();
    assert_eq!(empty.status(), 400);
    let blank = http.post("  \n ").send().await.unwrap();
    assert_eq!(blank.status(), 400);
    let bad_session = http.post("SELECT 1").header("X-Trino-Session", "no_equals_sign").send().await.unwrap();
    assert_eq!(bad_session.status(), 400);
    let bad_utf8 = http.client.post(&url).header("X-Trino-User", "u").body(vec![0xff, 0xfe]).send().await.unwrap();
    assert_eq!(bad_utf8.status(), 400);
    let bad_host = http.post("SELECT 1").header("Host", "evil/path").send().await.unwrap();
    assert_eq!(bad_host.status(), 400);
    // Untrusted X-Forwarded-* (http-server.process-forwarded is off) are ignored, not refused.
    let ignored = http.post("SELECT 1").header("X-Forwarded-Host", "evil/path").send().await.unwrap();
    assert_eq!(ignored.status(), 200);
    let (_, rows) = http.rows("SELECT 42").await;
    assert_eq!(rows, vec![vec![Value::from(42)]]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_megabyte_of_sql_is_refused_with_a_trino_error_and_just_under_the_limit_runs() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let filler = "x".repeat(1 << 20);
    let error = http.error(&format!("SELECT '{filler}'")).await;
    assert_eq!(error["errorName"], "QUERY_TEXT_TOO_LARGE");
    let fits = "y".repeat(900_000);
    let (_, rows) = http.rows(&format!("SELECT length('{fits}')")).await;
    assert_eq!(rows, vec![vec![Value::from(900_000)]]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_shape_next_uri() {
    let forwarded = |http: &Http| {
        http.post("SELECT 1")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "trino.example.com")
            .header("X-Forwarded-Port", "8443")
    };
    // Trusted only with http-server.process-forwarded, as in Trino.
    let ignored = TestCluster::start_default().await;
    let http = Http::new(&ignored.url());
    let first = http.first(forwarded(&http)).await;
    assert!(first["nextUri"].as_str().unwrap().starts_with(&ignored.url()), "{first}");
    ignored.shutdown().await;
    let cluster = TestCluster::builder().config(|config| config.node.process_forwarded = true).start().await;
    let http = Http::new(&cluster.url());
    let first = http.first(forwarded(&http)).await;
    assert!(first["nextUri"].as_str().unwrap().starts_with("https://trino.example.com:8443/v1/statement/queued/"));
    assert!(first["infoUri"].as_str().unwrap().starts_with("https://trino.example.com:8443/v1/query/"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn errors_carry_trino_names_and_locations() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let syntax = http.error("SELECT (1\nFROM t").await;
    assert_eq!(syntax["errorName"], "SYNTAX_ERROR");
    assert_eq!(syntax["errorType"], "USER_ERROR");
    assert_eq!(syntax["errorCode"], 1);
    assert_eq!(syntax["errorLocation"]["lineNumber"], 2);
    assert!(syntax["errorLocation"]["columnNumber"].as_u64().unwrap() >= 1);
    assert!(syntax["failureInfo"]["message"].is_string());
    assert_eq!(http.error("SELECT * FROM nope.tiny.nation").await["errorName"], "CATALOG_NOT_FOUND");
    assert_eq!(http.error("SELECT * FROM tpch.nope.nation").await["errorName"], "SCHEMA_NOT_FOUND");
    assert_eq!(http.error("SELECT * FROM tpch.tiny.nope").await["errorName"], "TABLE_NOT_FOUND");
    assert_eq!(http.error("SELECT nope FROM tpch.tiny.nation").await["errorName"], "COLUMN_NOT_FOUND");
    assert_eq!(http.error("SELECT * FROM nation").await["errorName"], "MISSING_CATALOG_NAME");
    assert_eq!(http.error("SELECT no_such_function(1)").await["errorName"], "FUNCTION_NOT_FOUND");
    assert_eq!(http.error("CREATE TABLE tpch.tiny.t (a bigint)").await["errorName"], "NOT_SUPPORTED");
    assert_eq!(http.error("CREATE TABLE tpch.tiny.t AS SELECT 1 x").await["errorName"], "NOT_SUPPORTED");
    assert_eq!(http.error("CREATE TABLE t (a bigint)").await["errorName"], "MISSING_CATALOG_NAME");
    assert_eq!(http.error("SELECT 1/0").await["errorName"], "DIVISION_BY_ZERO");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_query_nobody_polls_is_abandoned() {
    let cluster = TestCluster::builder()
        .catalog("blackhole", "connector.name=blackhole\n")
        .config(|c| c.client_timeout = std::time::Duration::from_secs(1))
        .start()
        .await;
    let http = Http::new(&cluster.url());
    let slow = crate::blackhole::slow_table(&http, "slow", 3600).await;
    let first: Value = http.post(&slow).send().await.unwrap().json().await.unwrap();
    // Reading the query's info is not polling it: it is abandoned after the timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let info = loop {
        let info: Value =
            http.client.get(first["infoUri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
        if info["state"] == "FAILED" {
            break info;
        }
        assert!(std::time::Instant::now() < deadline, "never abandoned: {info}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(info["errorCode"]["name"], "ABANDONED_QUERY");
    cluster.shutdown().await;
}

/// Presto clients: `X-Presto-*` request headers are read as their `X-Trino-*` equivalents,
/// and the response's session headers come back as `X-Presto-*`.
#[tokio::test]
async fn presto_clients_speak_with_x_presto_headers() {
    let cluster = TestCluster::start_default().await;
    let http = Http::new(&cluster.url());
    let presto = |request: reqwest::RequestBuilder| {
        request.header("X-Presto-User", "presto").header("X-Presto-Catalog", "tpch").header("X-Presto-Schema", "tiny")
    };
    // Every request of the statement carries the client's headers, as Presto clients send them.
    let run = |sql: &'static str| {
        let (http, presto) = (&http, &presto);
        async move {
            let mut response =
                presto(http.client.post(format!("{}/v1/statement", http.base)).body(sql)).send().await.unwrap();
            let mut rows = Vec::new();
            loop {
                let headers = response.headers().clone();
                let body: Value = response.json().await.unwrap();
                assert!(body.get("error").is_none(), "{sql}: {body}");
                rows.extend(body["data"].as_array().cloned().unwrap_or_default());
                let Some(next) = body["nextUri"].as_str() else { return (headers, rows) };
                response = presto(http.client.get(next)).send().await.unwrap();
            }
        }
    };
    let (_, rows) = run("SELECT count(*) FROM nation").await;
    assert_eq!(rows, vec![serde_json::json!([25])], "catalog and schema from X-Presto-*");
    let (headers, _) = run("SET SESSION query_max_run_time = '1h'").await;
    assert_eq!(headers["x-presto-set-session"], "query_max_run_time=1h");
    assert!(headers.get("x-trino-set-session").is_none());
    // A Trino client on the same coordinator still gets Trino's names.
    let headers = http.final_headers(http.post("SET SESSION query_max_run_time = '1h'")).await;
    assert_eq!(headers["x-trino-set-session"], "query_max_run_time=1h");
    let listed: Value = http.get_json(&format!("{}/v1/query", http.base)).await;
    assert!(
        listed.as_array().unwrap().iter().any(|q| q["session"]["user"] == "presto" || q["user"] == "presto"),
        "{listed}"
    );
    cluster.shutdown().await;
}
