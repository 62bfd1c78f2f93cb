//! Integration tests: real roles on loopback, driven over HTTP. One test binary for the
//! whole workspace.

mod adoption;
mod blackhole;
mod cli;
mod cluster;
mod coordinators;
mod distributed;
mod docs;
mod files;
mod harness;
mod hostile;
mod memory;
mod multihost;
mod plans;
mod protocol;
mod resource_groups;
mod security;
mod sql_surface;
mod sqllogic;

use serde_json::Value;

/// A raw protocol client for tests that look at individual requests.
pub struct Http {
    pub client: reqwest::Client,
    pub base: String,
}

impl Http {
    pub fn new(base: &str) -> Self {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap();
        Self { client, base: base.to_string() }
    }

    /// GETs `url` and parses the JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> T {
        self.client.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Polls `/v1/query/{id}` until its state is one of `states`; returns the document.
    pub async fn wait_for_state(&self, id: &str, states: &[&str], within: std::time::Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let info: Value = self.get_json(&format!("{}/v1/query/{id}", self.base)).await;
            if states.iter().any(|s| info["state"] == *s) {
                return info;
            }
            assert!(std::time::Instant::now() < deadline, "{id} never reached {states:?}: {info}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Sends a statement and returns the first response document (no follow-ups).
    pub async fn first(&self, request: reqwest::RequestBuilder) -> Value {
        request.send().await.unwrap().json().await.unwrap()
    }

    pub fn post(&self, sql: &str) -> reqwest::RequestBuilder {
        self.post_as("test", sql)
    }

    pub fn post_as(&self, user: &str, sql: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}/v1/statement", self.base)).header("X-Trino-User", user).body(sql.to_string())
    }

    /// Submits and follows `nextUri` to the end; returns every response document.
    pub async fn run_with(&self, request: reqwest::RequestBuilder) -> Vec<Value> {
        let first: Value = request.send().await.unwrap().json().await.unwrap();
        let mut responses = vec![first];
        while let Some(next) = responses.last().unwrap().get("nextUri").and_then(Value::as_str).map(str::to_string) {
            let response = self.client.get(&next).send().await.unwrap();
            assert_eq!(response.status(), 200, "GET {next}");
            responses.push(response.json().await.unwrap());
            assert!(responses.len() < 10_000, "query never ended");
        }
        responses
    }

    /// Submits and follows `nextUri` to the end; returns the last response's headers, which
    /// carry the session changes a statement made.
    pub async fn final_headers(&self, request: reqwest::RequestBuilder) -> reqwest::header::HeaderMap {
        let first: Value = request.send().await.unwrap().json().await.unwrap();
        let mut next = first["nextUri"].as_str().expect("a statement has at least one follow-up").to_string();
        for _ in 0..10_000 {
            let response = self.client.get(&next).send().await.unwrap();
            assert_eq!(response.status(), 200, "GET {next}");
            let headers = response.headers().clone();
            let body: Value = response.json().await.unwrap();
            match body.get("nextUri").and_then(Value::as_str) {
                Some(uri) => next = uri.to_string(),
                None => return headers,
            }
        }
        panic!("query never ended");
    }

    /// Kills a query of user `test` (`DELETE /v1/query/{id}`), which must be accepted.
    pub async fn kill(&self, id: &str) {
        let request = self.client.delete(format!("{}/v1/query/{id}", self.base)).header("X-Trino-User", "test");
        let status = request.send().await.unwrap().status();
        assert!(status.is_success(), "killing {id}: {status}");
    }

    pub async fn run(&self, sql: &str) -> Vec<Value> {
        self.run_with(self.post(sql)).await
    }

    /// Runs a query that must succeed; returns (column names, rows).
    pub async fn rows(&self, sql: &str) -> (Vec<String>, Vec<Vec<Value>>) {
        let responses = self.run(sql).await;
        let last = responses.last().unwrap();
        assert!(last.get("error").is_none(), "{sql}: {}", last["error"]);
        collect(&responses)
    }

    pub async fn rows_with(&self, request: reqwest::RequestBuilder) -> (Vec<String>, Vec<Vec<Value>>) {
        let responses = self.run_with(request).await;
        let last = responses.last().unwrap();
        assert!(last.get("error").is_none(), "{}", last["error"]);
        collect(&responses)
    }

    /// Runs a query that must fail; returns its error object.
    pub async fn error(&self, sql: &str) -> Value {
        self.error_with(self.post(sql)).await
    }

    pub async fn error_with(&self, request: reqwest::RequestBuilder) -> Value {
        let sql = "request";
        let responses = self.run_with(request).await;
        let last = responses.last().unwrap().clone();
        assert!(last.get("error").is_some(), "{sql} did not fail");
        last["error"].clone()
    }
}

/// The text of an EXPLAIN's rows (one line per row).
pub fn plan_text(rows: &[Vec<Value>]) -> String {
    rows.iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")
}

pub fn collect(responses: &[Value]) -> (Vec<String>, Vec<Vec<Value>>) {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for response in responses {
        if let Some(data) = response.get("data") {
            assert!(response.get("columns").is_some(), "data without columns: {response}");
            rows.extend(data.as_array().unwrap().iter().map(|r| r.as_array().unwrap().clone()));
        }
        if let Some(found) = response.get("columns") {
            columns = found.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect();
        }
    }
    (columns, rows)
}
