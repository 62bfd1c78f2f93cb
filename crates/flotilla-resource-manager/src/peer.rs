//! Pushing changed records to peers. The transport is a trait so tests can cut links.

use std::future::Future;
use std::pin::Pin;

use flotilla_proto::cluster::{PeerSync, PeerSyncAck, PEER_SYNC_PATH};
use flotilla_proto::CallError;

use flotilla_node::InternalClient;

/// How a push reaches a peer.
pub trait PeerTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `sync` from `from` to the peer `peer_id` at `peer_uri`.
    fn push<'a>(
        &'a self,
        peer_id: &'a str,
        peer_uri: &'a str,
        sync: &'a PeerSync,
    ) -> Pin<Box<dyn Future<Output = Result<PeerSyncAck, CallError>> + Send + 'a>>;
}

/// The real transport: signed HTTP.
#[derive(Debug, Clone)]
pub struct HttpPeerTransport {
    client: InternalClient,
}

impl HttpPeerTransport {
    pub fn new(client: InternalClient) -> Self {
        Self { client }
    }
}

impl PeerTransport for HttpPeerTransport {
    fn push<'a>(
        &'a self,
        _peer_id: &'a str,
        peer_uri: &'a str,
        sync: &'a PeerSync,
    ) -> Pin<Box<dyn Future<Output = Result<PeerSyncAck, CallError>> + Send + 'a>> {
        Box::pin(self.client.post(peer_uri, PEER_SYNC_PATH, sync))
    }
}
