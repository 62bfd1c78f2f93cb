//! The one HTTP client for internal calls: signs every request with the shared secret and
//! bounds every call with a timeout.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::{CallError, InternalAuth, INTERNAL_BEARER_HEADER};
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
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &B,
    ) -> Result<R, CallError> {
        let request = self.http.post(format!("{base}{path}")).json(body);
        self.send(base, request).await
    }

    /// GETs `base` + `path` and decodes the JSON answer.
    pub async fn get<R: DeserializeOwned>(&self, base: &str, path: &str) -> Result<R, CallError> {
        let request = self.http.get(format!("{base}{path}"));
        self.send(base, request).await
    }

    async fn send<R: DeserializeOwned>(&self, base: &str, request: reqwest::RequestBuilder) -> Result<R, CallError> {
        let response = request
            .header(INTERNAL_BEARER_HEADER, self.auth.token())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| CallError::Unreachable { base: base.to_string(), cause: e.to_string() })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable { base: base.to_string(), cause: format!("answer cut: {e}") })?;
        if !status.is_success() {
            return Err(CallError::Refused { base: base.to_string(), status: status.as_u16(), body: body.to_vec() });
        }
        serde_json::from_slice(&body).map_err(|e| CallError::BadAnswer { base: base.to_string(), cause: e.to_string() })
    }
}
