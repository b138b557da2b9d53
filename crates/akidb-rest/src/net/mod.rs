//! Accepting and serving client connections, with the bounds axum's own `serve` leaves open:
//!
//! - at most `max_connections` open at once; further clients wait in the listen backlog;
//! - a client must send each request's headers within the client timeout (an idle
//!   keep-alive connection waiting for its next request included), else the connection is
//!   closed: trickled headers and idle sockets cannot hold a connection for ever;
//! - a client must take response bytes within the client timeout ([`TimedStream`]), else the
//!   connection is closed: a client that stops reading cannot pin a response in memory;
//! - while the service drains ([`Lifecycle`]), every answer carries
//!   `Connection: close`, so a client never sends another request on a connection the
//!   service is about to close;
//! - on shutdown, no new connections are accepted, in-flight requests finish, idle
//!   connections close, and after `shutdown_timeout` whatever is still open is dropped;
//!   connections opened during a drain are not idle but waiting for their first request,
//!   which is answered (closing them), and so are those the kernel had already queued when
//!   the listener closed, instead of being reset;
//! - a connection the service closes after answering is half-closed first, and what the
//!   client still sends is read and dropped for a moment ([`linger`]): a client still
//!   sending a body the service refused (413 from its `Content-Length`, 401) reads the answer
//!   instead of a connection reset.
//!
//! The body's own deadline (408) is enforced where it is read, in `ApiJson` (the HTTP layer).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tower::ServiceExt;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::Metrics;

/// What the connection layer needs of the service: whether it drains (every answer then
/// closes its connection) and where connections are counted.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// The service's metrics (open and accepted connections).
    pub metrics: Arc<Metrics>,
    /// Set once the service drains.
    pub draining: Arc<AtomicBool>,
}

impl Lifecycle {
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Longest a closing connection keeps reading what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes a closing connection reads and drops (a refused body is at most this big in
/// practice: the default body limit plus slack).
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// The future of one request: boxed, so the connection can be polled without being pinned
/// (which [`http1::Connection::poll_without_shutdown`] needs).
type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The connection bounds, from the [`crate::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers and for the client to take response bytes.
    pub client_timeout: Duration,
    /// Longest a graceful shutdown waits for open connections.
    pub shutdown_timeout: Duration,
}

impl From<&crate::Config> for ConnectionLimits {
    fn from(config: &crate::Config) -> Self {
        Self {
            max_connections: config.max_connections,
            client_timeout: config.client_timeout(),
            shutdown_timeout: config.shutdown_timeout(),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then shuts down gracefully within
/// `limits.shutdown_timeout`. `state` counts the connections in its metrics.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: Lifecycle,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors, for one: wait instead of spinning.
                        tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        // A connection opened during a drain is served its first request even if the
        // listener closes before that request arrives: a client that connected to a replica
        // still accepting connections has a request on the way, and its answer closes the
        // connection anyway. Closing it as idle would drop that request.
        let closing = (!state.is_draining()).then(|| closing_seen.clone());
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            state.clone(),
            limits.client_timeout,
            closing,
            permit,
        ));
    }
    // Clients whose connection the kernel already completed, but the loop had not accepted,
    // would be reset when the listener closes, losing a request they may have sent already
    // (a balancer still routing to this replica sees "upstream prematurely closed"). In a
    // drain, take them and answer their first request; drain answers close the connection.
    let queued = if state.is_draining() {
        accept_queued(listener)
    } else {
        drop(listener);
        Vec::new()
    };
    for stream in queued {
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!("connection limit reached; a queued connection is closed unanswered");
            break;
        };
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            state.clone(),
            limits.client_timeout,
            None,
            permit,
        ));
    }
    let closed_at = std::time::Instant::now();
    let open = connections.len();
    tracing::info!(
        open,
        timeout_ms = limits.shutdown_timeout.as_millis() as u64,
        "no longer accepting connections; waiting for open ones"
    );
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown timeout reached; closing the connections still open"
        );
        connections.shutdown().await;
    }
    tracing::info!(
        elapsed_ms = closed_at.elapsed().as_millis() as u64,
        "every connection closed"
    );
}

/// Takes the connections waiting in `listener`'s accept queue right now, without waiting
/// for more, and closes the listener. (The runtime's readiness for the listener may not have
/// seen them yet, so they are taken through the socket itself.)
fn accept_queued(listener: TcpListener) -> Vec<TcpStream> {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::debug!(%error, "cannot take the queued connections");
            return Vec::new();
        }
    };
    let mut queued = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                match stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream))
                {
                    Ok(stream) => queued.push(stream),
                    Err(error) => tracing::debug!(%error, "cannot serve a queued connection"),
                }
            }
            Err(error) if is_connection_error(&error) => {}
            // `WouldBlock` (the listener is non-blocking): the queue is empty.
            Err(_) => return queued,
        }
    }
}

/// Errors of one incoming connection (the peer gave up), not of the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until the client or the server closes it. `closing` turning true
/// closes it once idle; without it, the connection is served until its client closes it or
/// an answer does (every answer in a drain does).
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    state: Lifecycle,
    client_timeout: Duration,
    mut closing: Option<watch::Receiver<bool>>,
    _permit: OwnedSemaphorePermit,
) {
    let _counted = CountedConnection::new(state.clone());
    // Small requests and answers: send them at once rather than waiting to fill a segment.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(TimedStream::new(stream, client_timeout));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (app, state) = (app.clone(), state.clone());
        Box::pin(async move {
            let mut response = app.oneshot(request.map(Body::new)).await?;
            if state.is_draining() {
                // hyper closes the connection once this answer is written.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }) as Answer
    });
    let mut connection = builder.serve_connection(io, service);
    let mut shutting_down = false;
    let finished = loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                break result;
            }
            changed = closing_changed(&mut closing), if !shutting_down => {
                // A closed channel means the server is gone: shut down too.
                if changed.is_err() || closing.as_ref().is_some_and(|closing| *closing.borrow()) {
                    Pin::new(&mut connection).graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    };
    match finished {
        Ok(()) => linger(connection.into_parts().io.into_inner()).await,
        Err(error) => tracing::debug!(%error, "connection ended with an error"),
    }
}

/// The next change of `closing`; never, without one.
async fn closing_changed(
    closing: &mut Option<watch::Receiver<bool>>,
) -> Result<(), watch::error::RecvError> {
    match closing {
        Some(closing) => closing.changed().await,
        None => std::future::pending().await,
    }
}

/// Closes a connection the service is done with gently: half-closes it (the client sees the
/// end of the answer), then reads and drops what the client still sends, until it closes,
/// for at most [`LINGER_TIME`] and [`LINGER_BYTES`]. Closing at once with unread bytes
/// would reset the connection, and a client still sending its body could lose the answer.
async fn linger(mut stream: TimedStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buffer = vec![0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    let deadline = tokio::time::sleep(LINGER_TIME);
    tokio::pin!(deadline);
    while left > 0 {
        tokio::select! {
            () = &mut deadline => return,
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(count) => left = left.saturating_sub(count),
            },
        }
    }
}

/// Counts a connection in the metrics while it is open.
struct CountedConnection(Lifecycle);

impl CountedConnection {
    fn new(state: Lifecycle) -> Self {
        state.metrics().connection_opened();
        Self(state)
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
    }
}

/// A TCP stream whose writes fail with [`io::ErrorKind::TimedOut`] when the peer takes no
/// bytes for `write_timeout`: a client that stops reading its answer loses the connection
/// instead of holding it, and the answer's memory, for ever.
#[derive(Debug)]
pub struct TimedStream {
    inner: TcpStream,
    write_timeout: Duration,
    /// Running while a write is blocked; reset by every write that makes progress.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl TimedStream {
    /// Wraps `inner`, bounding each stalled write by `write_timeout`.
    pub fn new(inner: TcpStream, write_timeout: Duration) -> Self {
        Self {
            inner,
            write_timeout,
            stalled_since: None,
        }
    }

    /// Passes a write's outcome on; when it is blocked, fails it once the peer has taken no
    /// bytes for the write timeout.
    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled_since = None;
            return outcome;
        }
        let timeout = self.write_timeout;
        let stall = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stall.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took no response bytes for {} ms",
                timeout.as_millis()
            ),
        )))
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.bound(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.bound(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_flush(cx);
        this.bound(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.bound(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_takes_fails_after_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (server_side, _) = listener.accept().await.unwrap();
        // The peer holds the socket open and never reads.
        let _peer = client.await.unwrap();
        let mut stream = TimedStream::new(server_side, Duration::from_millis(200));
        let chunk = vec![0u8; 1 << 20];
        let started = std::time::Instant::now();
        let error = loop {
            if let Err(error) = stream.write_all(&chunk).await {
                break error;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "never timed out"
            );
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    }
    #[test]
    fn the_accept_queue_is_taken_without_waiting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        runtime.block_on(async {
            let empty = TcpListener::bind("127.0.0.1:0").await.unwrap();
            assert!(accept_queued(empty).is_empty(), "nothing queued");
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // The kernel completes these connections before anyone accepts them.
            let _clients: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            assert_eq!(accept_queued(listener).len(), 3);
            // The listener is closed: new clients are refused.
            assert!(std::net::TcpStream::connect(addr).is_err());
        });
    }

    /// A client that connected during the drain and sends its request only after the listener
    /// closed still gets its answer: its connection was not idle, its request was on the way.
    #[tokio::test]
    async fn a_connection_opened_in_the_drain_gets_its_first_request_answered() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Lifecycle {
            metrics: Arc::new(Metrics::default()),
            draining: Arc::new(AtomicBool::new(true)),
        };
        let app = Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        let limits = ConnectionLimits {
            max_connections: 16,
            client_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, state.clone(), limits, async move {
            let _ = stopped.await;
        }));
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Accepted: the service counts it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.metrics().connections_open() == 0 {
            assert!(std::time::Instant::now() < deadline, "never accepted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(()).unwrap();
        // The listener closes; the request comes after.
        let refused = async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("the listener closes");
        client
            .write_all(b"GET /ping HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("an answer within 10 s")
            .expect("read the answer");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("pong"), "{answer:?}");
        server.await.unwrap();
    }

    /// Clients that connected and sent a request just before a drain closes the listener get
    /// their answer (with `Connection: close`), not a reset. Here five of them are queued
    /// before the server runs at all, and its shutdown is already due, so the accept loop
    /// takes few or none of them: without taking the backlog's connections before closing the
    /// listener, the kernel would reset most.
    #[tokio::test]
    async fn connections_queued_when_a_drain_closes_the_listener_are_answered() {
        use std::io::{Read as _, Write as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Lifecycle {
            metrics: Arc::new(Metrics::default()),
            draining: Arc::new(AtomicBool::new(true)),
        };
        let clients: Vec<std::net::TcpStream> = (0..5)
            .map(|_| {
                let mut client = std::net::TcpStream::connect(addr).unwrap();
                client
                    .write_all(b"GET /ping HTTP/1.1\r\nhost: test\r\n\r\n")
                    .unwrap();
                client
            })
            .collect();
        let app = Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        let limits = ConnectionLimits {
            max_connections: 16,
            client_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        };
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                std::thread::spawn(move || {
                    client
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut answer = Vec::new();
                    let read = client.read_to_end(&mut answer);
                    (
                        read.map_err(|e| e.kind()),
                        String::from_utf8_lossy(&answer).into_owned(),
                    )
                })
            })
            .collect();
        serve(listener, app, state, limits, std::future::ready(())).await;
        for reader in readers {
            let (read, answer) = tokio::task::spawn_blocking(move || reader.join().unwrap())
                .await
                .unwrap();
            assert!(read.is_ok(), "{read:?}: {answer:?}");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
            assert!(
                answer.to_ascii_lowercase().contains("connection: close"),
                "{answer:?}"
            );
            assert!(answer.ends_with("pong"), "{answer:?}");
        }
    }
}
