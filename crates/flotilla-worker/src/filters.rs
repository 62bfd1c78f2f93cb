//! Join filters between workers (see `flotilla_sql::cross_stage_filters`): a small gRPC
//! service next to the worker service, on the same port and behind the same internal
//! authentication, that receives a join's filter for the scans waiting for it here; and the
//! client side that sends one, over the cached worker channels.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::common::{DataFusionError, Result};
use flotilla_sql::cross_stage_filters::{
    FilterInbox, FilterPublisher, InboxError, PublishedFilter, MAX_FILTER_BYTES, PUBLISH_TIMEOUT,
};
use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use tonic::server::NamedService;
use url::Url;

use crate::flight::FlightChannels;

/// The service's name, as routed.
pub const SERVICE: &str = "flotilla.FilterExchange";
/// Its one method.
pub const PUBLISH_PATH: &str = "/flotilla.FilterExchange/Publish";

/// Receives published filters into the worker's inbox.
#[derive(Debug, Clone)]
pub struct FilterExchangeService {
    inbox: Arc<FilterInbox>,
}

impl FilterExchangeService {
    pub fn new(inbox: Arc<FilterInbox>) -> Self {
        Self { inbox }
    }
}

impl NamedService for FilterExchangeService {
    const NAME: &'static str = SERVICE;
}

struct Publish(Arc<FilterInbox>);

impl tonic::server::UnaryService<PublishedFilter> for Publish {
    type Response = ();
    type Future = BoxFuture<'static, std::result::Result<tonic::Response<()>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<PublishedFilter>) -> Self::Future {
        let result = match self.0.deliver(request.into_inner()) {
            Ok(()) => Ok(tonic::Response::new(())),
            Err(error @ InboxError::Full) => Err(tonic::Status::resource_exhausted(error.to_string())),
            Err(error) => Err(tonic::Status::invalid_argument(error.to_string())),
        };
        Box::pin(async move { result })
    }
}

impl<B> tower::Service<http::Request<B>> for FilterExchangeService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != PUBLISH_PATH {
            let status = tonic::Status::unimplemented(format!("no method {} here", request.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let inbox = self.inbox.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), PublishedFilter>::default())
                .apply_max_message_size_config(Some(MAX_FILTER_BYTES + 4096), None);
            Ok(grpc.unary(Publish(inbox), request).await)
        })
    }
}

/// Sends filters over the worker channels (authenticated, cached per worker).
#[derive(Debug)]
pub struct ChannelPublisher {
    channels: Arc<FlightChannels>,
}

impl ChannelPublisher {
    pub fn new(channels: Arc<FlightChannels>) -> Self {
        Self { channels }
    }
}

impl FilterPublisher for ChannelPublisher {
    fn publish(&self, url: &str, filter: PublishedFilter) -> BoxFuture<'static, Result<()>> {
        let channel = Url::parse(url)
            .map_err(|e| DataFusionError::Configuration(format!("invalid worker URL '{url}': {e}")))
            .and_then(|url| self.channels.channel(&url));
        Box::pin(async move {
            let mut grpc = tonic::client::Grpc::new(channel?);
            let ready = tokio::time::timeout(PUBLISH_TIMEOUT, grpc.ready()).await;
            ready
                .map_err(|_| DataFusionError::Execution("worker not ready for a join filter".into()))?
                .map_err(|e| DataFusionError::External(e.into()))?;
            let mut request = tonic::Request::new(filter);
            request.set_timeout(PUBLISH_TIMEOUT);
            let codec = tonic_prost::ProstCodec::<PublishedFilter, ()>::default();
            grpc.unary(request, PathAndQuery::from_static(PUBLISH_PATH), codec)
                .await
                .map(|_| ())
                .map_err(|status| DataFusionError::External(Box::new(status)))
        })
    }
}
