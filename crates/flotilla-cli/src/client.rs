//! A Trino protocol client: submits a statement, follows `nextUri` to the end, keeps the
//! session state the server changes through `X-Trino-Set-*` headers, and can cancel.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_protocol::headers::url_decode;
use flotilla_protocol::{ClientSession, Column, QueryError, QueryResults, StatementStats};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a request that failed at the transport or with 502/503/504.
const RETRIES: usize = 5;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not usable.
    #[error("invalid server URL '{0}'")]
    InvalidServer(String),
    /// The request did not complete.
    #[error("failed to reach {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    /// The server answered with an HTTP error.
    #[error("server returned HTTP {status}: {body}")]
    Http { status: u16, body: String },
    /// The response was not the protocol's JSON.
    #[error("invalid response from server: {0}")]
    Protocol(String),
    /// The query failed.
    #[error("Query {query_id} failed: {}", error.message)]
    Query { query_id: String, error: Box<QueryError> },
}

/// The result of one statement.
#[derive(Debug, Clone, Default)]
pub struct QueryOutcome {
    pub query_id: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub update_type: Option<String>,
    pub update_count: Option<i64>,
    pub stats: StatementStats,
}

/// A connection to one server.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    /// The session sent with every request, as the server last changed it.
    pub session: ClientSession,
    /// `nextUri` of the statement running now, for cancel.
    current: Option<String>,
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
}

impl Client {
    pub fn new(server: &str, user: &str) -> Result<Self, ClientError> {
        let server = server.trim_end_matches('/').to_string();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ClientError::InvalidServer(server));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| ClientError::Transport { url: server.clone(), source })?;
        Ok(Self {
            http,
            server,
            session: ClientSession { user: user.to_string(), ..Default::default() },
            current: None,
        })
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        put("x-trino-user", &self.session.user);
        if let Some(source) = &self.session.source {
            put("x-trino-source", source);
        }
        if let Some(catalog) = &self.session.catalog {
            put("x-trino-catalog", catalog);
        }
        if let Some(schema) = &self.session.schema {
            put("x-trino-schema", schema);
        }
        if let Some(zone) = &self.session.time_zone {
            put("x-trino-time-zone", zone);
        }
        if !self.session.client_tags.is_empty() {
            put("x-trino-client-tags", &self.session.client_tags.join(","));
        }
        put("x-trino-client-capabilities", "PARAMETRIC_DATETIME");
        let join = |map: &BTreeMap<String, String>| {
            map.iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        flotilla_protocol::headers::url_encode(k),
                        flotilla_protocol::headers::url_encode(v)
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        if !self.session.properties.is_empty() {
            put("x-trino-session", &join(&self.session.properties));
        }
        if !self.session.prepared_statements.is_empty() {
            put("x-trino-prepared-statement", &join(&self.session.prepared_statements));
        }
        put("x-trino-transaction-id", self.session.transaction_id.as_deref().unwrap_or("NONE"));
        headers
    }

    fn apply_session_headers(&mut self, headers: &HeaderMap) {
        if let Some(catalog) = header_values(headers, "x-trino-set-catalog").pop() {
            self.session.catalog = Some(catalog);
        }
        if let Some(schema) = header_values(headers, "x-trino-set-schema").pop() {
            self.session.schema = Some(schema);
        }
        for pair in header_values(headers, "x-trino-set-session") {
            if let Some((name, value)) = pair.split_once('=') {
                self.session.properties.insert(name.trim().to_string(), url_decode(value.trim()));
            }
        }
        for name in header_values(headers, "x-trino-clear-session") {
            self.session.properties.remove(name.trim());
        }
        for pair in header_values(headers, "x-trino-added-prepare") {
            if let Some((name, sql)) = pair.split_once('=') {
                self.session.prepared_statements.insert(url_decode(name.trim()), url_decode(sql.trim()));
            }
        }
        for name in header_values(headers, "x-trino-deallocated-prepare") {
            self.session.prepared_statements.remove(&url_decode(name.trim()));
        }
        if let Some(id) = header_values(headers, "x-trino-started-transaction-id").pop() {
            self.session.transaction_id = Some(id);
        }
        if headers.contains_key("x-trino-clear-transaction-id") {
            self.session.transaction_id = None;
        }
    }

    async fn send(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = request().send().await;
            let retryable = match &outcome {
                Ok(response) => matches!(response.status().as_u16(), 502..=504),
                Err(error) => error.is_connect() || error.is_timeout(),
            };
            if !retryable || attempt > RETRIES {
                return outcome.map_err(|source| ClientError::Transport { url: url.to_string(), source });
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
        }
    }

    async fn decode(&mut self, response: reqwest::Response) -> Result<QueryResults, ClientError> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !status.is_success() {
            return Err(ClientError::Http {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        self.apply_session_headers(&headers);
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Runs one statement to its end, calling `progress` with each response's stats.
    pub async fn run(
        &mut self,
        sql: &str,
        mut progress: impl FnMut(&StatementStats),
    ) -> Result<QueryOutcome, ClientError> {
        let url = format!("{}/v1/statement", self.server);
        let headers = self.headers();
        let body = sql.to_string();
        let response = self.send(|| self.http.post(&url).headers(headers.clone()).body(body.clone()), &url).await?;
        let mut results = self.decode(response).await?;
        let mut outcome = QueryOutcome { query_id: results.id.clone(), ..Default::default() };
        loop {
            progress(&results.stats);
            if let Some(columns) = results.columns.take() {
                outcome.columns = columns;
            }
            outcome.rows.extend(results.rows().map_err(|e| ClientError::Protocol(e.to_string()))?);
            outcome.update_type = results.update_type.clone().or(outcome.update_type);
            outcome.update_count = results.update_count.or(outcome.update_count);
            outcome.stats = results.stats.clone();
            if let Some(error) = results.error.take() {
                self.current = None;
                return Err(ClientError::Query { query_id: results.id, error: Box::new(error) });
            }
            let Some(next) = results.next_uri.take() else { break };
            self.current = Some(next.clone());
            let response = self.send(|| self.http.get(&next).headers(headers.clone()), &next).await?;
            results = self.decode(response).await?;
        }
        self.current = None;
        Ok(outcome)
    }

    /// Cancels the statement in flight, if any.
    pub async fn cancel_current(&mut self) {
        if let Some(next) = self.current.take() {
            let _ = self.http.delete(&next).headers(self.headers()).timeout(Duration::from_secs(5)).send().await;
        }
    }
}
