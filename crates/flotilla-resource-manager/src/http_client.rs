//! The one HTTP client for internal calls: signs every request with the shared secret and
//! bounds every call with a timeout.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::{InternalAuth, INTERNAL_BEARER_HEADER};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A signed, time-limited JSON client.
#[derive(Debug, Clone)]
pub struct InternalClient {
    http: reqwest::Client,
    auth: Arc<InternalAuth>,
    timeout: Duration,
}

impl InternalClient {
    pub fn new(auth: Arc<InternalAuth>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            // Building fails only when the TLS backend cannot start; we use none.
            .expect("a plain HTTP client builds");
        Self { http, auth, timeout }
    }

    /// POSTs `body` as JSON to `base` + `path` and decodes the JSON answer.
    pub async fn post<B: Serialize, R: DeserializeOwned>(&self, base: &str, path: &str, body: &B) -> Result<R, String> {
        let request = self.http.post(format!("{base}{path}")).json(body);
        self.send(base, request).await
    }

    /// POSTs `body` as JSON and returns the status and body whatever the status (for calls
    /// whose non-success answers carry information).
    pub async fn post_raw<B: Serialize>(
        &self,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<(u16, bytes::Bytes), String> {
        let response = self
            .http
            .post(format!("{base}{path}"))
            .json(body)
            .header(INTERNAL_BEARER_HEADER, self.auth.token())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("failed to reach {base}: {e}"))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| format!("unreadable answer from {base}: {e}"))?;
        Ok((status, body))
    }

    /// GETs `base` + `path` and decodes the JSON answer.
    pub async fn get<R: DeserializeOwned>(&self, base: &str, path: &str) -> Result<R, String> {
        let request = self.http.get(format!("{base}{path}"));
        self.send(base, request).await
    }

    async fn send<R: DeserializeOwned>(&self, base: &str, request: reqwest::RequestBuilder) -> Result<R, String> {
        let response = request
            .header(INTERNAL_BEARER_HEADER, self.auth.token())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("failed to reach {base}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{base} answered {status}: {}", text.trim()));
        }
        response.json().await.map_err(|e| format!("unreadable answer from {base}: {e}"))
    }
}
