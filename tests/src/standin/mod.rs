//! The Ollama stand-in: an HTTP/1.1 server on Ollama's routes that replays recorded Ollama
//! responses (or synthesises them per docs/ollama-wire.md where nothing was recorded) with the
//! real server's framing and pacing, and logs what it sent as ground truth.
//!
//! - Framing: Go `net/http` + gin, via [`crate::wire`]: handler headers sorted, `Date`, then
//!   `Content-Length` (body done within 2048 bytes before a flush) or chunked; one HTTP chunk
//!   per NDJSON line / SSE event, OpenAI's finish + usage + `[DONE]` in one flush; the head goes
//!   out with the first chunk (so header arrival = TTFT); no `Server` header.
//! - Connections: keep-alive, pipelined requests answered serially in order, `Expect:
//!   100-continue` answered with `100 Continue` when a body-reading handler reads, chunked or
//!   Content-Length request bodies, HTTP/1.0 (no chunking: body until close), HEAD.
//! - Each call picks a fitting fixture ([`catalog`]): same route, streaming as asked (native
//!   default `stream:true`, `/v1` default false), a tool-call answer when tools are offered (a
//!   text answer to a tool result), the usage chunk iff `stream_options.include_usage`, thinking
//!   when asked; the response `model` echoes the request's. Routes with no recording
//!   (`/v1/responses`, `/v1/messages`, `/v1/completions`, `/api/ps`, `/api/version`, ...) and
//!   all error scenarios are synthesised ([`native`], [`openai`], [`anthropic`], [`responses`]),
//!   with Go-style JSON ([`gojson`]) and token counts / durations consistent with what streams.
//! - Timing: TTFT (default 50 ms), then one step per inter-token gap (default 15 ms); a
//!   non-streamed answer leaves when generation would have ended (capped for fixtures).
//! - Scenarios ([`scenario`], listed there and in `ollama-standin --help`) per request, by the
//!   `X-Standin-Scenario` header or a `@<scenario>/<model>` model name: fixture replay,
//!   mid-stream error / RST / FIN, HTTP errors, slow TTFT, cheap synthetic load streams, load
//!   answers, thinking, tools.
//! - Ground truth ([`truth`]): one JSONL record per call with what was sent and when.

pub mod anthropic;
pub mod api;
pub mod catalog;
pub mod compose;
pub mod gojson;
pub mod http;
pub mod native;
pub mod openai;
pub mod prompt_cache;
pub mod reply;
pub mod residency;
pub mod responses;
pub mod route;
pub mod scenario;
pub mod stream;
pub mod tls;
pub mod truth;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use compose::{App, DEFAULT_VERSION, Timing};
pub use scenario::{SCENARIO_HELP, Scenario};
pub use truth::{Truth, TruthLog};

#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error("loading fixtures: {0}")]
    Fixtures(#[from] crate::fixtures::FixtureError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening truth log {path}: {source}")]
    Truth {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub truth: Option<PathBuf>,
    pub timing: Timing,
    pub version: String,
    /// On shutdown, how long calls in progress may take to finish.
    pub drain: Duration,
    /// Serve TLS (every listener) with this configuration ([`tls::server_config`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 11434))],
            truth: None,
            timing: Timing::default(),
            version: DEFAULT_VERSION.into(),
            drain: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// State every connection shares.
pub struct Shared {
    pub app: App,
    truth: TruthLog,
    seq: AtomicU64,
    conns: AtomicU64,
    shutdown_started: watch::Receiver<bool>,
}

impl Shared {
    fn shutting_down(&self) -> bool {
        *self.shutdown_started.borrow()
    }

    fn record(&self, mut t: Truth) {
        t.seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.truth.record(t);
    }
}

/// A bound, not yet running stand-in.
pub struct Server {
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    truth_task: Option<tokio::task::JoinHandle<()>>,
    drain: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Load the fixtures, open the truth log and bind every address (port 0 picks a free one).
    /// Must run inside a tokio runtime.
    pub async fn bind(config: Config) -> Result<Server, StandinError> {
        let catalog = catalog::Catalog::load()?;
        let (truth, truth_task) = match &config.truth {
            Some(path) => {
                let (log, task) =
                    TruthLog::open(path).map_err(|source| StandinError::Truth { path: path.clone(), source })?;
                (log, Some(task))
            }
            None => (TruthLog::disabled(), None),
        };
        let mut listeners = Vec::new();
        for &addr in &config.listen {
            listeners.push(listen(addr).map_err(|source| StandinError::Bind { addr, source })?);
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        Ok(Server {
            listeners,
            shared: Arc::new(Shared {
                app: App::new(catalog, config.timing, config.version),
                truth,
                seq: AtomicU64::new(0),
                conns: AtomicU64::new(0),
                shutdown_started: shutdown_rx,
            }),
            shutdown_tx,
            truth_task,
            drain: config.drain,
            tls: config.tls.map(tokio_rustls::TlsAcceptor::from),
        })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// Serve until `shutdown` completes, then stop accepting, close idle connections, give
    /// calls in progress `drain` to finish, and flush the truth log.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Server { listeners, shared, shutdown_tx, truth_task, drain, tls } = self;
        let mut accept_loops = JoinSet::new();
        for listener in listeners {
            let tls = tls.clone();
            accept_loops.spawn(accept_loop(listener, Arc::clone(&shared), shutdown_tx.subscribe(), drain, tls));
        }
        shutdown.await;
        let _ = shutdown_tx.send(true);
        while accept_loops.join_next().await.is_some() {}
        drop(shared);
        if let Some(task) = truth_task {
            let _ = task.await;
        }
    }
}

/// Resolves once shutdown has started (the watch guard is dropped at once: it is not `Send`).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A listener with a backlog fit for load tests (1000 clients connecting at once).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let local = listener.local_addr().ok();
    let mut conns = JoinSet::new();
    // Connections get their own receiver; this one is borrowed by the select below.
    let for_conns = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let id = shared.conns.fetch_add(1, Ordering::Relaxed);
                    let local = stream.local_addr().ok().or(local).unwrap_or(peer);
                    let (shared, stop, tls) = (Arc::clone(&shared), for_conns.clone(), tls.clone());
                    conns.spawn(async move {
                        let stream = match tls {
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(s) => stream::Stream::Tls(Box::new(s)),
                                // A client that gave up on the handshake: no call.
                                Err(_) => return,
                            },
                            None => stream::Stream::Plain(stream),
                        };
                        http::serve(stream, peer, local, id, shared, stop).await
                    });
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let deadline = tokio::time::sleep(drain);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = conns.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                conns.abort_all();
                while conns.join_next().await.is_some() {}
                break;
            }
        }
    }
}
