//! Query completion events (Trino's event listeners): when a query ends, its coordinator
//! builds one event with the field names of Trino's `QueryCompletedEvent` as Trino's
//! http-event-listener sends it (`metadata`, `context`, `statistics`, `failureInfo`, times)
//! plus Flotilla's warehouse and coordinator, and hands it to the configured sinks:
//! `file` appends it as one JSON line, `http` POSTs it (Trino's `http-event-listener.*`
//! names), trying again after growing waits. Events wait in a bounded queue; when it is
//! full (a sink far behind) new events are dropped and counted, never the query slowed.
//! Finished queries thereby outlive the coordinator, in the operator's own store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::config::{parse_duration_value, parse_value, ConfigError};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::query::Query;

/// Events waiting for the sinks, at most.
const QUEUE: usize = 10_000;
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// `event-listener.*` and `http-event-listener.*`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventListenerConfig {
    pub file: bool,
    pub http: bool,
    pub file_path: Option<PathBuf>,
    pub ingest_uri: Option<String>,
    pub headers: Vec<(String, String)>,
    pub retry_count: Option<u32>,
    pub retry_delay: Option<Duration>,
}

impl EventListenerConfig {
    /// Applies one property; `Ok(false)` when it is not an event listener setting.
    pub fn apply(&mut self, file: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        let invalid = |message: &str| ConfigError::invalid(file, key, value, message);
        match key {
            "event-listener.name" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match name {
                        "file" => self.file = true,
                        "http" => self.http = true,
                        _ => return Err(invalid("known listeners: file, http")),
                    }
                }
            }
            "event-listener.file.path" => match value.trim() {
                "" => return Err(invalid("give the file's path")),
                path => self.file_path = Some(path.into()),
            },
            "http-event-listener.connect-ingest-uri" => {
                let uri = value.trim();
                if uri.starts_with("https://") {
                    return Err(invalid("https is not supported for the event listener yet: use http://"));
                }
                if !uri.starts_with("http://") || uri.len() <= "http://".len() {
                    return Err(invalid("an http:// URL"));
                }
                self.ingest_uri = Some(uri.to_string());
            }
            "http-event-listener.connect-http-headers" => {
                let mut headers = Vec::new();
                for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let Some((name, header_value)) = pair.split_once(':') else {
                        return Err(invalid("Name:value pairs, comma-separated"));
                    };
                    let name = name.trim();
                    let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                        && http::HeaderValue::from_str(header_value.trim()).is_ok();
                    if !valid {
                        return Err(invalid("Name:value pairs, comma-separated"));
                    }
                    headers.push((name.to_string(), header_value.trim().to_string()));
                }
                self.headers = headers;
            }
            "http-event-listener.connect-retry-count" => self.retry_count = Some(parse_value(file, key, value)?),
            "http-event-listener.connect-retry-delay" => {
                self.retry_delay = Some(parse_duration_value(file, key, value)?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks that each listener named has what it needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.file && self.file_path.is_none() {
            return Err(ConfigError::Inconsistent("event-listener.name=file needs event-listener.file.path".into()));
        }
        if self.http && self.ingest_uri.is_none() {
            return Err(ConfigError::Inconsistent(
                "event-listener.name=http needs http-event-listener.connect-ingest-uri".into(),
            ));
        }
        Ok(())
    }
}

/// The configured sinks, fed through a bounded queue.
#[derive(Debug)]
pub struct EventListener {
    queue: mpsc::Sender<Value>,
    dropped: AtomicU64,
}

impl EventListener {
    /// `None` when no listener is configured.
    pub fn start(config: &EventListenerConfig, shutdown: CancellationToken) -> Option<(Arc<Self>, JoinHandle<()>)> {
        if !config.file && !config.http {
            return None;
        }
        let (queue, mut events) = mpsc::channel::<Value>(QUEUE);
        let file = config.file.then(|| config.file_path.clone()).flatten();
        let http = config.http.then(|| config.ingest_uri.clone()).flatten();
        let headers = config.headers.clone();
        let retries = config.retry_count.unwrap_or(3);
        let delay = config.retry_delay.unwrap_or(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(POST_TIMEOUT).build().ok();
            loop {
                let event = tokio::select! {
                    event = events.recv() => match event { Some(event) => event, None => return },
                    // Events still queued at shutdown are written first.
                    _ = shutdown.cancelled() => match events.try_recv() { Ok(event) => event, Err(_) => return },
                };
                let line = event.to_string();
                if let Some(path) = &file {
                    if let Err(error) = append_line(path, &line).await {
                        tracing::warn!(path = %path.display(), %error, "could not write a query event");
                    }
                }
                if let (Some(uri), Some(client)) = (&http, &client) {
                    post(client, uri, &headers, &line, retries, delay).await;
                }
            }
        });
        Some((Arc::new(Self { queue, dropped: AtomicU64::new(0) }), task))
    }

    /// Hands a query that ended to the sinks (dropped, and counted, when they are far behind).
    pub fn query_completed(&self, query: &Query, local: &flotilla_node::LocalNode) {
        let event = completed_event(query, local);
        if self.queue.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "query events dropped: the event listener is behind");
            }
        }
    }
}

/// One JSON line, written with one call (so lines of concurrent writers do not interleave
/// on a local file opened for appending).
async fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
    file.write_all(format!("{line}\n").as_bytes()).await?;
    file.flush().await
}

async fn post(
    client: &reqwest::Client,
    uri: &str,
    headers: &[(String, String)],
    body: &str,
    retries: u32,
    delay: Duration,
) {
    let mut wait = delay;
    for attempt in 0..=retries {
        let mut request = client.post(uri).header("content-type", "application/json").body(body.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::debug!(%uri, status = %response.status(), attempt, "event POST refused"),
            Err(error) => tracing::debug!(%uri, %error, attempt, "event POST failed"),
        }
        if attempt < retries {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(Duration::from_secs(60));
        }
    }
    tracing::warn!(%uri, retries, "a query event was dropped: the ingest endpoint did not take it");
}

/// An ISO-8601 duration, as Trino's events carry them.
fn iso_duration(millis: u64) -> String {
    format!("PT{}.{:03}S", millis / 1000, millis % 1000)
}

/// The event of a query that ended, with Trino's `QueryCompletedEvent` field names.
fn completed_event(query: &Query, local: &flotilla_node::LocalNode) -> Value {
    let server_uri = local.http_uri.as_str();
    let stats = query.stats();
    let status = query.status();
    let failure = status.error.as_ref().map(|error| {
        json!({
            "errorCode": {"code": error.code.code(), "name": error.code.name(), "type": error.code.error_type().as_str()},
            "failureType": error.code.name(),
            "failureMessage": error.message,
        })
    });
    json!({
        "metadata": {
            "queryId": query.id.to_string(),
            "query": query.sql,
            "queryState": status.state.as_str(),
            "uri": format!("{server_uri}/v1/query/{}", query.id),
            "updateType": status.update_type,
        },
        "statistics": {
            "cpuTime": iso_duration(stats.cpu_time_millis),
            "wallTime": iso_duration(stats.elapsed_time_millis),
            "queuedTime": iso_duration(stats.queued_time_millis),
            "peakUserMemoryBytes": stats.peak_memory_bytes,
            "totalRows": stats.processed_rows,
            "outputRows": status.output_rows,
            "completedSplits": stats.completed_splits,
        },
        "context": {
            "user": query.session.user,
            "source": query.session.source,
            "catalog": query.session.catalog,
            "schema": query.session.schema,
            "clientTags": query.session.client_tags,
            "resourceGroupId": status.resource_group.as_ref().map(|g| g.split('.').collect::<Vec<_>>()),
            "sessionProperties": query.session.properties,
            "serverAddress": server_uri,
            "serverVersion": flotilla_proto::FLOTILLA_VERSION,
            "environment": local.environment,
            "queryType": flotilla_protocol::query_type(&query.sql),
            "warehouse": query.warehouse(),
            "coordinator": local.node_id,
        },
        "failureInfo": failure,
        "createTime": query.created_at.to_rfc3339(),
        "executionStartTime": status.started_at.map(|t| t.to_rfc3339()),
        "endTime": status.ended_at.map(|t| t.to_rfc3339()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let mut config = EventListenerConfig::default();
        config.apply("f", "event-listener.name", "file, http").unwrap();
        assert!(config.validate().is_err(), "file needs a path, http a URL");
        config.apply("f", "event-listener.file.path", "/tmp/q.jsonl").unwrap();
        config.apply("f", "http-event-listener.connect-ingest-uri", "http://collector:8080/e").unwrap();
        config.apply("f", "http-event-listener.connect-http-headers", "Authorization:Bearer x, X-A:b").unwrap();
        assert_eq!(config.headers.len(), 2);
        config.validate().unwrap();
        for (key, bad) in [
            ("event-listener.name", "kafka"),
            ("event-listener.file.path", " "),
            ("http-event-listener.connect-ingest-uri", "https://collector/e"),
            ("http-event-listener.connect-ingest-uri", "collector:8080"),
            ("http-event-listener.connect-http-headers", "no-colon"),
            ("http-event-listener.connect-http-headers", "Bad Name:x"),
            ("http-event-listener.connect-http-headers", "X:bad\u{7f}value"),
            ("http-event-listener.connect-retry-count", "-1"),
            ("http-event-listener.connect-retry-delay", "soon"),
        ] {
            assert!(config.clone().apply("f", key, bad).is_err(), "{key}={bad}");
        }
        assert!(!config.apply("f", "event-listener.unknown", "x").unwrap());
        assert_eq!(iso_duration(1234), "PT1.234S");
        assert_eq!(iso_duration(5), "PT0.005S");
    }
}
