//! The data plane's connections: `datafusion-distributed`'s worker service (gRPC; task
//! output as Arrow Flight data) behind our internal authentication, and the client side
//! every coordinator and worker uses to reach workers.
//!
//! - Every call carries the same short-lived JWT as the control plane
//!   (`X-Trino-Internal-Bearer`), added by a tower layer on the client channel and checked
//!   by a tonic interceptor on the server; a call without a valid token is refused
//!   (`UNAUTHENTICATED`) before it reaches the worker.
//! - Channels are cached per worker URL and connect lazily with a connect timeout, TCP and
//!   HTTP/2 keep-alives, so a worker that dies is noticed within seconds, not at the next
//!   TCP timeout.
//! - Transport failures (connection refused or reset, a dead stream) become
//!   `REMOTE_HOST_GONE` errors whose `remote_host` is the worker's URL, carried in their
//!   wire form so the code survives every hop; errors the worker itself raised (a division
//!   by zero in its task) pass through unchanged.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_distributed::grpc::{create_worker_client, BoxCloneSyncChannel};
use datafusion_distributed::{
    ChannelResolver, CoordinatorToWorkerMsg, ExecuteTaskRequest, GetWorkerInfoRequest, GetWorkerInfoResponse,
    SetPlanRequest, WorkerChannel, WorkerToCoordinatorMsg,
};
use flotilla_proto::internal_auth::INTERNAL_BEARER_HEADER;
use flotilla_proto::{ErrorCode, FlotillaError, InternalAuth};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use tonic::transport::Endpoint;
use url::Url;

/// How long connecting to a worker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on idle and busy connections; a worker that stops answering them for
/// [`KEEPALIVE_TIMEOUT`] is treated as gone.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps query errors raised on the worker; turns transport failures into
/// `REMOTE_HOST_GONE` naming the worker (carried, so the code and the worker survive every
/// further hop).
fn name_transport_failure(url: &Url, error: DataFusionError) -> DataFusionError {
    let transport = match error.find_root() {
        DataFusionError::External(inner) => {
            inner.is::<tonic::Status>()
                || inner.is::<arrow_flight::error::FlightError>()
                || inner.is::<tonic::transport::Error>()
        }
        _ => false,
    };
    if !transport {
        return error;
    }
    let cause = error.find_root().to_string();
    let gone = FlotillaError::new(ErrorCode::RemoteHostGone, format!("Worker {url} is unreachable or gone: {cause}"))
        .with_remote_host(url.as_str());
    flotilla_sql::error::carry(gone)
}

/// Authenticated, cached channels to workers.
pub struct FlightChannels {
    auth: Arc<InternalAuth>,
    channels: Mutex<HashMap<Url, BoxCloneSyncChannel>>,
}

impl fmt::Debug for FlightChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightChannels").field("open", &self.channels.lock().len()).finish()
    }
}

impl FlightChannels {
    pub fn new(auth: Arc<InternalAuth>) -> Arc<Self> {
        Arc::new(Self { auth, channels: Mutex::new(HashMap::new()) })
    }

    /// The authenticated channel to the worker at `url` (opened lazily, then cached).
    pub fn channel(&self, url: &Url) -> Result<BoxCloneSyncChannel> {
        if let Some(channel) = self.channels.lock().get(url) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| DataFusionError::Configuration(format!("invalid worker URL '{url}': {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let auth = self.auth.clone();
        let channel = tower::ServiceBuilder::new()
            .map_request(move |mut request: http::Request<tonic::body::Body>| {
                if let Ok(value) = HeaderValue::from_str(&auth.token()) {
                    request.headers_mut().insert(INTERNAL_BEARER_HEADER, value);
                }
                request
            })
            .service(endpoint.connect_lazy());
        let channel = BoxCloneSyncChannel::new(channel);
        self.channels.lock().insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

#[async_trait]
impl ChannelResolver for FlightChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let inner = create_worker_client(self.channel(url)?);
        Ok(Box::new(NamedWorkerChannel { url: url.clone(), inner }))
    }
}

/// A worker client whose transport failures name the worker.
struct NamedWorkerChannel {
    url: Url,
    inner: Box<dyn WorkerChannel>,
}

#[async_trait]
impl WorkerChannel for NamedWorkerChannel {
    async fn coordinator_channel(
        &mut self,
        headers: HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<WorkerToCoordinatorMsg>>> {
        let url = self.url.clone();
        let stream = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(|e| name_transport_failure(&url, e))?;
        Ok(stream.map_err(move |e| name_transport_failure(&url, e)).boxed())
    }

    async fn execute_task(
        &mut self,
        headers: HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Vec<BoxStream<'static, Result<RecordBatch>>>> {
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(|e| name_transport_failure(&self.url, e))?;
        Ok(streams
            .into_iter()
            .map(|stream| {
                let url = self.url.clone();
                stream.map_err(move |e| name_transport_failure(&url, e)).boxed()
            })
            .collect())
    }

    async fn get_worker_info(&mut self, request: GetWorkerInfoRequest) -> Result<GetWorkerInfoResponse> {
        self.inner.get_worker_info(request).await.map_err(|e| name_transport_failure(&self.url, e))
    }
}

/// The server side's check: a valid internal token, or `UNAUTHENTICATED`.
pub fn authenticate(
    auth: Arc<InternalAuth>,
) -> impl FnMut(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        let header = request.metadata().get(INTERNAL_BEARER_HEADER).and_then(|v| v.to_str().ok());
        match auth.verify(header) {
            Ok(_) => Ok(request),
            Err(error) => {
                tracing::warn!(%error, "refused a data-plane call");
                Err(tonic::Status::unauthenticated(error.to_string()))
            }
        }
    }
}
