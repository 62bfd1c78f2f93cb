//! The HTTP server every role runs, with the limits a server facing untrusted clients needs:
//! a bound on open connections ([`MAX_CONNECTIONS`]; past it, new connections wait in the
//! kernel's accept queue), a deadline for a request's headers ([`HEADER_READ_TIMEOUT`]: a
//! client that opens a connection and sends nothing, or dribbles its headers, is cut off),
//! and a bound on the header block (hyper's buffer, [`MAX_HEADER_BYTES`]). The same server
//! speaks TLS ([`serve_https`], rustls) on a client-facing port; requests that came over
//! TLS carry the `X-Flotilla-Client-Tls` header (set here, and removed from every request
//! that came in plain), so the URIs handed back to their clients say `https`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use flotilla_protocol::uris::CLIENT_TLS_HEADER;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Connections served at once by one node; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client has to send a request's headers (from the connection's start, or
/// from the end of the previous request on a kept-alive connection).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest header block read (session properties and prepared statements travel in
/// headers; Trino's default is 64 kB per header line, ours allows a few such lines).
pub const MAX_HEADER_BYTES: usize = 512 << 10;
/// How long a stopping server waits for requests in flight before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown`, with the limits above.
pub fn serve_http(listener: TcpListener, router: Router, shutdown: CancellationToken) -> JoinHandle<()> {
    serve_with_header_deadline(listener, router, shutdown, HEADER_READ_TIMEOUT, None)
}

/// Serves `router` over TLS on `listener` until `shutdown`, with the limits above (a client
/// has [`HEADER_READ_TIMEOUT`] for its handshake too).
pub fn serve_https(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    serve_with_header_deadline(listener, router, shutdown, HEADER_READ_TIMEOUT, Some(TlsAcceptor::from(tls)))
}

fn serve_with_header_deadline(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
    tls: Option<TlsAcceptor>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait a little, never spin.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let over_tls = tls.is_some();
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                // Whether the client used TLS is this server's to say, never the client's.
                let headers = request.headers_mut();
                headers.remove(CLIENT_TLS_HEADER);
                if over_tls {
                    headers.insert(CLIENT_TLS_HEADER, http::HeaderValue::from_static("1"));
                }
                router.clone().call(request)
            });
            let Some(tls) = tls.clone() else {
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    // A client that goes away mid-request is not the server's error.
                    let _ = connection.await;
                    drop(permit);
                });
                continue;
            };
            let (builder, watcher) = (builder.clone(), graceful.watcher());
            tokio::spawn(async move {
                // The handshake happens here, so a slow client holds up only its own
                // connection, and only until the header deadline.
                let stream = match tokio::time::timeout(header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                let _ = watcher.watch(connection).await;
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("http connections still open after {SHUTDOWN_GRACE:?}; closing them");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const DEADLINE: Duration = Duration::from_millis(300);

    async fn server() -> (std::net::SocketAddr, CancellationToken, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let task = serve_with_header_deadline(listener, router, shutdown.clone(), DEADLINE, None);
        (address, shutdown, task)
    }

    #[tokio::test]
    async fn serves_and_stops() {
        let (address, shutdown, task) = server().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_tls_client_that_never_finishes_its_handshake_is_cut_off() {
        let path = std::env::temp_dir().join(format!("flotilla-tls-test-{}.pem", std::process::id()));
        std::fs::write(&path, crate::tls::tests::TEST_KEYSTORE).unwrap();
        let tls = crate::tls::server_config(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let task =
            serve_with_header_deadline(listener, router, shutdown.clone(), DEADLINE, Some(TlsAcceptor::from(tls)));
        // Silence, then garbage instead of a ClientHello: both connections are closed.
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut garbage = tokio::net::TcpStream::connect(address).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        for stream in [&mut silent, &mut garbage] {
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
            assert!(read.is_ok(), "the connection was closed");
            assert!(!String::from_utf8_lossy(&answer).contains("ok"), "no plain answer over the TLS port");
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_sends_no_headers_is_cut_off() {
        let (address, shutdown, task) = server().await;
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        // The rest of the headers never comes: the server closes the connection once the
        // deadline passes.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the connection was closed");
        shutdown.cancel();
        task.await.unwrap();
    }
}
