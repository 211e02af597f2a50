//! Wiring: bind every socket first, load the first snapshot, start the transports,
//! the refresh loop and the HTTP side; reload on request; stop on request.
//!
//! [`Server::start`] returns a handle with the addresses actually bound, so tests
//! start the whole app on port 0 and read them back. Every long-running task is
//! supervised: if one dies while the server is not stopping, [`Server::crashed`]
//! resolves and [`run`] exits non-zero. [`run`] is what the binary does: start,
//! reload on SIGHUP, drain and exit 0 on SIGTERM or SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::aws::Ec2Discovery;
use crate::config::{Config, HttpConfig};
use crate::discovery::{self, BoxedSource};
use crate::http::{self, HttpLimits, HttpState};
use crate::metrics::Metrics;
use crate::notify;
use crate::refresh::{self, LastGood, RefreshStats, Refresher};
use crate::server::{self, ServeContext, TcpLimits};
use crate::snapshot::{self, Served, Snapshot, SnapshotStore};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bound {proto} {addr}, but cannot read the socket's address: {source}")]
    LocalAddr {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot start thread {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    #[error("a critical task stopped; exiting so a supervisor restarts us")]
    Crashed,
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Makes the discovery source for a config (`None`: the config has no AWS part).
pub type SourceFactory = Arc<
    dyn Fn(Arc<Config>) -> Pin<Box<dyn Future<Output = Option<BoxedSource>> + Send>> + Send + Sync,
>;

/// The production source: the EC2 API.
pub fn ec2_sources() -> SourceFactory {
    Arc::new(|config: Arc<Config>| {
        Box::pin(async move {
            let source: BoxedSource = Box::new(Ec2Discovery::for_config(&config).await?);
            Some(source)
        })
    })
}

/// What a reload changed, and what it could not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys whose new values only take effect after a restart.
    pub restart_needed: Vec<&'static str>,
}

/// A running server.
pub struct Server {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    /// The certificate pair new DNS-over-TLS handshakes use, when `tls-listen` is set.
    certificates: Option<Arc<crate::tls::Certificates>>,
    /// The `[tls]` files the poll watches: the current config's (a reload may name
    /// others).
    tls_files: Arc<std::sync::Mutex<Option<(PathBuf, PathBuf)>>>,
    http_addr: Option<SocketAddr>,
    store: Arc<SnapshotStore>,
    stats: Arc<RefreshStats>,
    metrics: Arc<Metrics>,
    serve: Arc<ServeContext>,
    config: Mutex<Arc<Config>>,
    sources: SourceFactory,
    last_inventory: Arc<std::sync::Mutex<Option<LastGood>>>,
    refresh: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    /// The follower (`[follow]`), with the config it follows.
    follower: Mutex<
        Option<(
            CancellationToken,
            JoinHandle<()>,
            crate::config::FollowConfig,
        )>,
    >,
    shutdown: CancellationToken,
    crashed: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Binds every listen address (UDP and TCP on each, and HTTP if configured),
    /// loads the first snapshot, and starts serving. A port of 0 picks one free port
    /// used for both UDP and TCP.
    ///
    /// With AWS configured, the first discovery (or, failing it, the cache file) is
    /// loaded before the first query is answered.
    pub async fn start(config: &Config) -> Result<Self, AppError> {
        Self::start_with(config, ec2_sources()).await
    }

    /// [`Server::start`] with another discovery source (unit tests use fakes).
    pub async fn start_with(config: &Config, sources: SourceFactory) -> Result<Self, AppError> {
        Self::start_shared(Arc::new(config.clone()), sources).await
    }

    /// [`Server::start_with`] on a config the caller gives away: the server keeps this
    /// one copy (a config of 100,000 names is tens of MB).
    pub async fn start_shared(
        config: Arc<Config>,
        sources: SourceFactory,
    ) -> Result<Self, AppError> {
        let mut sockets = Vec::with_capacity(config.server.listen.len());
        for addr in &config.server.listen {
            let (udp, tcp) = bind_pair(*addr)?;
            sockets.push((*addr, udp, tcp));
        }
        let mut tls_listeners = Vec::with_capacity(config.server.tls_listen.len());
        for addr in &config.server.tls_listen {
            let listener = server::bind_tcp(*addr).map_err(|source| AppError::Bind {
                proto: "tls",
                addr: *addr,
                source,
            })?;
            tls_listeners.push((*addr, listener));
        }
        let http_listener = match &config.http {
            Some(h) => Some(server::bind_tcp(h.listen).map_err(|source| AppError::Bind {
                proto: "http",
                addr: h.listen,
                source,
            })?),
            None => None,
        };
        let mut server = Self::new(config.clone(), sources);
        if let Some(dir) = &config.server.state_dir {
            // Before the first publication: no serial is served below the last one.
            let serials = crate::state::Serials::open(dir)?;
            server.store.persist_serials(serials);
        }
        server.load(config.clone(), false).await;
        server.follow(config.follow.as_ref()).await;
        if config.server.state_dir.is_none() {
            let snap = server.store.load();
            if snap
                .zones()
                .any(|z| !z.transfer().allow.is_empty() || !z.transfer().notify.is_empty())
            {
                warn!(
                    "zones are transferred but [server] state-dir is not set: after a restart that follows a burst of changes, a zone's serial can go down and secondaries keep stale data; set state-dir to a persistent directory"
                );
            }
        }

        let budget = FdBudget::for_config(&config);
        // One set of slots for every TCP and TLS listener: one descriptor budget.
        let limits = TcpLimits::new(
            config.server.tcp_idle_timeout,
            budget.dns_tcp,
            per_source(config.server.max_tcp_per_source, budget.dns_tcp),
        );
        for (asked, udp, tcp) in sockets {
            server.serve_dns(&config, asked, udp, tcp, limits.clone())?;
        }
        if let Some(tls) = &config.tls
            && !tls_listeners.is_empty()
        {
            let certificates = Arc::new(crate::tls::Certificates::new(tls));
            server.certificates = Some(certificates.clone());
            server.metrics.tls_not_after(tls.not_after);
            for (asked, listener) in tls_listeners {
                server.serve_tls(asked, listener, limits.clone(), certificates.clone())?;
            }
            server.watch_certificates(tls.clone());
        }
        if let (Some(listener), Some(http)) = (http_listener, &config.http) {
            server.serve_http(http, listener, budget.http)?;
        }
        let notify = notify::run(
            server.store.clone(),
            server.metrics.clone(),
            config.server.max_notify_in_flight,
            server.shutdown.clone(),
        );
        server.supervise(
            "notify",
            notify.instrument(info_span!("notify")),
            server.shutdown.clone(),
        );
        let snap = server.store.load();
        info!(
            zones = snap.zone_count(),
            records = snap.record_count(),
            "serving"
        );
        Ok(server)
    }

    /// A server with an empty snapshot, serving nothing yet.
    fn new(config: Arc<Config>, sources: SourceFactory) -> Self {
        let store = Arc::new(SnapshotStore::default());
        let stats = Arc::new(RefreshStats::default());
        let metrics = Arc::new(Metrics::new(stats.clone(), store.clone()));
        let serve = Arc::new(
            ServeContext::new(store.clone(), metrics.clone(), config.log.query_log_every)
                .with_max_transfers(config.server.max_transfers),
        );
        Self {
            udp_addrs: Vec::new(),
            tcp_addrs: Vec::new(),
            tls_addrs: Vec::new(),
            certificates: None,
            tls_files: Arc::default(),
            http_addr: None,
            store,
            stats,
            metrics,
            serve,
            config: Mutex::new(config),
            sources,
            last_inventory: Arc::default(),
            refresh: Mutex::new(None),
            follower: Mutex::new(None),
            shutdown: CancellationToken::new(),
            crashed: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Serves DNS on one listen address (`asked`): `udp-workers` UDP threads, each on
    /// its own SO_REUSEPORT socket, and the TCP accept loop.
    fn serve_dns(
        &mut self,
        config: &Config,
        asked: SocketAddr,
        udp: std::net::UdpSocket,
        tcp: TcpListener,
        limits: TcpLimits,
    ) -> Result<(), AppError> {
        let u = bound_addr(udp.local_addr(), "udp", asked)?;
        let t = bound_addr(tcp.local_addr(), "tcp", asked)?;
        info!(udp = %u, tcp = %t, "listening");
        self.udp_addrs.push(u);
        self.tcp_addrs.push(t);
        let mut workers = vec![udp];
        for _ in 1..config.server.udp_workers {
            let socket = server::bind_udp(u).map_err(|source| AppError::Bind {
                proto: "udp",
                addr: u,
                source,
            })?;
            workers.push(socket);
        }
        for (i, socket) in workers.into_iter().enumerate() {
            // Half the grace for draining: the rest is the margin within which every
            // worker has returned when the shutdown stops waiting for them.
            let drain_for = config.server.shutdown_grace / 2;
            let fut = self.spawn_udp_worker(socket, u, i, drain_for)?;
            self.supervise("udp", fut, self.shutdown.clone());
        }
        let span = info_span!("tcp", addr = %t);
        let fut = server::serve_tcp(tcp, self.serve.clone(), limits, self.shutdown.clone());
        self.supervise("tcp", fut.instrument(span), self.shutdown.clone());
        Ok(())
    }

    /// Serves DNS over TLS (and XoT) on one `tls-listen` address.
    fn serve_tls(
        &mut self,
        asked: SocketAddr,
        listener: TcpListener,
        limits: TcpLimits,
        certificates: Arc<crate::tls::Certificates>,
    ) -> Result<(), AppError> {
        let addr = bound_addr(listener.local_addr(), "tls", asked)?;
        info!(tls = %addr, "listening");
        self.tls_addrs.push(addr);
        let span = info_span!("tls", addr = %addr);
        let fut = server::serve_tls(
            listener,
            self.serve.clone(),
            limits,
            certificates,
            self.shutdown.clone(),
        );
        self.supervise("tls", fut.instrument(span), self.shutdown.clone());
        Ok(())
    }

    /// Reloads the certificate pair when either file changes, without a SIGHUP: their
    /// modification time and size are polled every [`CERTIFICATE_POLL`] (renewers
    /// such as cert-manager replace the files in place; a watch on the directory
    /// would miss a Kubernetes Secret's symlink swap on some volumes, a poll does
    /// not). A pair that fails to load keeps the previous one.
    fn watch_certificates(&mut self, tls: crate::tls::TlsConfig) {
        let Some(certificates) = self.certificates.clone() else {
            return;
        };
        *self.tls_files.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((tls.certificate.clone(), tls.key.clone()));
        let files = self.tls_files.clone();
        let metrics = self.metrics.clone();
        let shutdown = self.shutdown.clone();
        let fut = async move {
            let current = || files.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut seen =
                current().map(|(c, k)| (c.clone(), k.clone(), crate::tls::stamp(&c, &k)));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(CERTIFICATE_POLL) => {}
                }
                let Some((cert, key)) = current() else {
                    continue;
                };
                let now = (cert.clone(), key.clone(), crate::tls::stamp(&cert, &key));
                if seen.as_ref() == Some(&now) {
                    continue;
                }
                // New files (a reload named others, and loaded them): only remember them.
                let renamed = seen
                    .as_ref()
                    .is_some_and(|(c, k, _)| (c, k) != (&cert, &key));
                seen = Some(now);
                if renamed {
                    continue;
                }
                let loaded =
                    tokio::task::spawn_blocking(move || crate::tls::TlsConfig::load(&cert, &key))
                        .await;
                match loaded {
                    Ok(Ok(pair)) => {
                        certificates.replace(&pair);
                        metrics.tls_not_after(pair.not_after);
                        metrics.tls_reload("ok");
                        info!(certificate = %pair.certificate.display(), "tls certificate reloaded (the files changed)");
                    }
                    Ok(Err(error)) => {
                        metrics.tls_reload("failed");
                        warn!(%error, "tls certificate files changed but do not load; the previous pair stays");
                    }
                    Err(_) => {}
                }
            }
        };
        self.supervise(
            "tls-watch",
            fut.instrument(info_span!("tls")),
            self.shutdown.clone(),
        );
    }

    /// The DNS-over-TLS listeners' addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// Serves `/healthz`, `/readyz` and `/metrics`.
    fn serve_http(
        &mut self,
        http: &HttpConfig,
        listener: TcpListener,
        max_connections: usize,
    ) -> Result<(), AppError> {
        let addr = bound_addr(listener.local_addr(), "http", http.listen)?;
        info!(%addr, "http listening: /healthz /readyz /metrics");
        self.http_addr = Some(addr);
        let state = HttpState {
            metrics: self.metrics.clone(),
            stats: self.stats.clone(),
            store: self.store.clone(),
        };
        let limits = HttpLimits {
            max_connections,
            max_per_source: per_source(http.max_per_source, max_connections),
            header_timeout: http.header_timeout,
        };
        let fut = http::serve(listener, state, limits, self.shutdown.clone());
        let fut = async move {
            if let Err(error) = fut.await {
                error!(%error, "http server failed");
            }
        };
        self.supervise(
            "http",
            fut.instrument(info_span!("http")),
            self.shutdown.clone(),
        );
        Ok(())
    }

    /// Starts a UDP worker on a thread of its own (named `udp-ADDR-N`: they never
    /// end while serving, so they stay off tokio's blocking pool). Returns a future
    /// that ends when the thread does, and panics if it panicked.
    fn spawn_udp_worker(
        &self,
        socket: std::net::UdpSocket,
        addr: SocketAddr,
        i: usize,
        drain_for: Duration,
    ) -> Result<impl Future<Output = ()> + Send + 'static, AppError> {
        let (cx, stop) = (self.serve.clone(), self.shutdown.clone());
        let span = info_span!("udp", %addr, worker = i);
        let (done, finished) = tokio::sync::oneshot::channel::<bool>();
        let name = format!("udp-{addr}-{i}");
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let run =
                    || span.in_scope(|| server::serve_udp_worker(socket, cx, stop, drain_for));
                let returned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
                let _ = done.send(returned.is_ok());
            })
            .map_err(|source| AppError::Thread { name, source })?;
        Ok(async move {
            if let Ok(false) = finished.await {
                panic!("udp worker {addr} #{i} panicked");
            }
        })
    }

    /// Runs `fut` as a critical task: if it ends (or panics) before `stop` is
    /// cancelled, [`Server::crashed`] resolves.
    fn supervise<F>(&self, name: &'static str, fut: F, stop: CancellationToken) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = tokio::spawn(fut);
        let crashed = self.crashed.clone();
        self.tasks.spawn(async move {
            let result = inner.await;
            if stop.is_cancelled() {
                return;
            }
            match result {
                Err(e) if e.is_panic() => error!(task = name, "critical task panicked"),
                _ => error!(task = name, "critical task stopped"),
            }
            crashed.cancel();
        })
    }

    /// Loads `config`: the first discovery (or the last known / cached data), then
    /// the refresh loop. With `immediate`, keeps serving the last known data with the
    /// new config while the refresh runs.
    async fn load(&self, config: Arc<Config>, immediate: bool) {
        if let Some((token, handle)) = self.refresh.lock().await.take() {
            token.cancel();
            let _ = handle.await;
        }
        match (self.sources)(config.clone()).await {
            Some(source) => {
                let mut refresher =
                    Refresher::new(source, config, self.store.clone(), self.stats.clone())
                        .with_last_inventory(self.last_inventory.clone());
                if immediate {
                    refresher = refresher.applying_removals();
                    refresher.publish_last();
                }
                refresher
                    .initial_load()
                    .instrument(info_span!("refresh"))
                    .await;
                let token = self.shutdown.child_token();
                let fut = refresher
                    .run(token.clone())
                    .instrument(info_span!("refresh"));
                let handle = self.supervise("refresh", fut, token.clone());
                *self.refresh.lock().await = Some((token, handle));
            }
            None => {
                let what = refresh::served(&config, None);
                self.store
                    .update(|previous| build_snapshot(&config, Some(previous)).with_served(what));
            }
        }
    }

    /// Applies a new, already validated config: zones, AWS settings, the query log.
    /// Listen addresses and TCP limits need a restart; the report names them.
    pub async fn reload(&self, new: Config) -> ReloadReport {
        let old = self.config.lock().await.clone();
        let mut report = ReloadReport::default();
        if old.server.listen != new.server.listen {
            report.restart_needed.push("server.listen");
        }
        if old.http != new.http {
            report.restart_needed.push("http.listen");
        }
        if old.server.tcp_idle_timeout != new.server.tcp_idle_timeout {
            report.restart_needed.push("server.tcp-idle-timeout");
        }
        if old.server.max_tcp_connections != new.server.max_tcp_connections {
            report.restart_needed.push("server.max-tcp-connections");
        }
        if old.server.shutdown_grace != new.server.shutdown_grace {
            report.restart_needed.push("server.shutdown-grace");
        }
        if old.server.max_tcp_per_source != new.server.max_tcp_per_source {
            report
                .restart_needed
                .push("server.max-tcp-connections-per-source");
        }
        if old.server.state_dir != new.server.state_dir {
            report.restart_needed.push("server.state-dir");
        }
        if old.server.max_notify_in_flight != new.server.max_notify_in_flight {
            report.restart_needed.push("server.max-notify-in-flight");
        }
        if old.server.tls_listen != new.server.tls_listen {
            report.restart_needed.push("server.tls-listen");
        }
        // The pair was loaded (and checked) with the config: new handshakes use it.
        if let (Some(certificates), Some(tls)) = (&self.certificates, &new.tls) {
            certificates.replace(tls);
            *self.tls_files.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((tls.certificate.clone(), tls.key.clone()));
            self.metrics.tls_not_after(tls.not_after);
            self.metrics.tls_reload("ok");
        }
        self.serve
            .query_log_every
            .store(new.log.query_log_every, Ordering::Relaxed);
        let new = Arc::new(new);
        *self.config.lock().await = new.clone();
        // The old config is freed before the new snapshot is published, so the memory
        // it held goes back to the OS with the old snapshot's (see SnapshotStore::update).
        drop(old);
        self.load(new.clone(), true).await;
        self.follow(new.follow.as_ref()).await;
        report
    }

    /// Starts, keeps or stops the follower for `follow`. One that follows the same
    /// primary the same way keeps running (and its zones keep serving); otherwise
    /// the old one stops and a new one starts from `cache-dir`.
    async fn follow(&self, follow: Option<&crate::config::FollowConfig>) {
        let mut current = self.follower.lock().await;
        if let (Some((_, _, running)), Some(new)) = (current.as_ref(), follow)
            && running.same_source(new)
        {
            // The new config's peers learn the addresses the follower resolved.
            new.peers.set_primaries(running.peers.primaries());
            if let Some(c) = current.as_mut() {
                c.2 = new.clone();
            }
            return;
        }
        if let Some((token, handle, _)) = current.take() {
            token.cancel();
            let _ = handle.await;
            self.serve.set_follower(None);
        }
        let Some(follow) = follow else {
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(crate::follow::NOTIFY_QUEUE);
        self.serve.set_follower(Some(tx));
        let follower = crate::follow::Follower::new(
            follow.clone(),
            self.store.clone(),
            self.metrics.follow_status().clone(),
            rx,
        );
        let token = self.shutdown.child_token();
        let handle = self.supervise(
            "follow",
            follower.run(token.clone()).instrument(info_span!("follow")),
            token.clone(),
        );
        *current = Some((token, handle, follow.clone()));
    }

    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The HTTP listener's address, if `[http]` is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The snapshot store: what is being answered (publishing is the refresh's job).
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// What the current snapshot serves, and where its data came from.
    pub fn served(&self) -> Served {
        self.store.load().served.clone()
    }

    /// Discovery counters; all zero without AWS.
    pub fn stats(&self) -> &Arc<RefreshStats> {
        &self.stats
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Resolves when a critical task has died.
    pub async fn crashed(&self) {
        self.crashed.cancelled().await;
    }

    /// Stops accepting, lets in-flight answers finish (within `shutdown-grace`), returns.
    pub async fn shutdown(self) {
        let grace = self.config.lock().await.server.shutdown_grace;
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "connections still open after the grace period; closing"
            );
        }
    }
}

impl Drop for Server {
    /// A server dropped without [`Server::shutdown`] (a panicking test, an early
    /// return) still stops its tasks, so the UDP worker threads do not keep the
    /// runtime from shutting down.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Builds a snapshot of the configured zones alone (no discovered data); `previous`
/// keeps unchanged serials.
pub fn build_snapshot(config: &Config, previous: Option<&Snapshot>) -> Snapshot {
    let zones = discovery::assemble(config, None).zones;
    let now = snapshot::unix_now();
    snapshot::build(&zones, config.server.settings.clone(), previous, now)
}

/// How often the `[tls]` files are checked for a change (see `watch_certificates`).
pub const CERTIFICATE_POLL: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGINT or SIGTERM; SIGHUP reloads `config_path`.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), AppError> {
    run_with(config, config_path, ec2_sources()).await
}

/// [`run`] with another discovery source. `Err(AppError::Crashed)` when a critical
/// task died: the binary then exits 1, so that a supervisor restarts it.
pub async fn run_with(
    config: Config,
    config_path: Option<PathBuf>,
    sources: SourceFactory,
) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AppError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AppError::Signal)?;
    // The first discovery may stall on the API: a stop request during it wins.
    let server = tokio::select! {
        server = Server::start_shared(Arc::new(config), sources) => server?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = term.recv() => {
            info!("SIGTERM received while starting; stopping");
            return Ok(());
        }
    };
    // A reload in progress runs here, beside the signals: SIGTERM, SIGINT and a crashed
    // task are seen during it, and dropping it (on a stop, or for a newer SIGHUP)
    // cancels it. Nothing half-applied is served: a dropped reload stops at an await.
    let mut reloading: Option<Pin<Box<dyn Future<Output = ReloadReport> + '_>>> = None;
    // The new config is read and checked on a blocking thread, also beside the
    // signals: a large file or a slow disk must not keep SIGTERM waiting. A newer
    // SIGHUP replaces it (the older read finishes unseen).
    let mut loading: Option<tokio::task::JoinHandle<Result<Config, crate::config::ConfigError>>> =
        None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                info!(during_reload = reloading.is_some(), "SIGINT received; stopping");
                break;
            }
            _ = term.recv() => {
                if loading.is_some() {
                    info!("SIGTERM received while a new config is read; stopping");
                } else if reloading.is_some() {
                    info!("SIGTERM received during a reload; stopping");
                } else {
                    info!("SIGTERM received; stopping");
                }
                break;
            }
            _ = hup.recv() => {
                let Some(path) = &config_path else {
                    warn!("SIGHUP received, but there is no --config file to reload (built-in demo)");
                    continue;
                };
                if loading.is_some() {
                    info!("SIGHUP while a new config is read: the file is read again");
                }
                let path = path.clone();
                loading = Some(tokio::task::spawn_blocking(move || Config::load(&path)));
            }
            loaded = async { loading.as_mut().expect("guarded by is_some").await }, if loading.is_some() => {
                loading = None;
                match loaded {
                    Ok(Ok(new)) => {
                        if reloading.is_some() {
                            info!("SIGHUP during a reload: the newer config replaces it");
                        }
                        reloading = Some(Box::pin(server.reload(new)));
                    }
                    Ok(Err(error)) => {
                        if error.to_string().contains("key `tls.") {
                            server.metrics.tls_reload("failed");
                        }
                        error!(%error, "reload refused: the new config is invalid; the previous one keeps serving");
                    }
                    Err(error) => {
                        error!(%error, "reload refused: reading the new config failed; the previous one keeps serving");
                    }
                }
            }
            report = async { reloading.as_mut().expect("guarded by is_some").await }, if reloading.is_some() => {
                reloading = None;
                let config = config_path.as_ref().map_or(String::new(), |p| p.display().to_string());
                if report.restart_needed.is_empty() {
                    info!(%config, "config reloaded");
                } else {
                    warn!(
                        %config,
                        restart_needed = ?report.restart_needed,
                        "config reloaded; these changes take effect only after a restart"
                    );
                }
            }
            () = server.crashed() => {
                drop(reloading);
                server.shutdown().await;
                return Err(AppError::Crashed);
            }
        }
    }
    drop(reloading);
    server.shutdown().await;
    info!("stopped");
    Ok(())
}

/// How the process's file descriptors are shared, so that HTTP clients can never
/// take those that DNS-over-TCP needs (nor DNS those of the cache file and the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// RLIMIT_NOFILE after raising the soft limit to the hard one.
    pub limit: usize,
    /// Kept for listeners, UDP sockets, the cache file, API connections, the runtime.
    pub reserved: usize,
    /// DNS TCP connections: `max-tcp-connections`, or less if the budget is smaller.
    pub dns_tcp: usize,
    /// HTTP connections: `[http] max-connections`, at most an eighth of the budget.
    pub http: usize,
}

impl FdBudget {
    /// Raises the soft limit as far as the hard one allows, then splits it; logs the
    /// split, and warns when a configured cap does not fit.
    pub fn for_config(config: &Config) -> FdBudget {
        let budget = Self::split(config, raise_nofile_limit());
        let (dns_want, http_want) = (
            config.server.max_tcp_connections,
            config.http.as_ref().map_or(0, |h| h.max_connections),
        );
        if budget.dns_tcp < dns_want || budget.http < http_want {
            warn!(
                nofile = budget.limit,
                reserved = budget.reserved,
                dns_tcp = budget.dns_tcp,
                dns_tcp_configured = dns_want,
                http = budget.http,
                http_configured = http_want,
                "file descriptor limit too low for the configured connection caps; caps lowered"
            );
        } else {
            info!(
                nofile = budget.limit,
                reserved = budget.reserved,
                dns_tcp = budget.dns_tcp,
                http = budget.http,
                "file descriptor budget"
            );
        }
        budget
    }

    /// The split of `limit` descriptors for `config`.
    pub fn split(config: &Config, limit: usize) -> FdBudget {
        let sockets = config.server.listen.len() * (config.server.udp_workers + 1)
            + config.server.tls_listen.len();
        let reserved = 64 + sockets + usize::from(config.http.is_some()) + crate::notify::SOCKETS;
        let available = limit.saturating_sub(reserved).max(2);
        let http = config
            .http
            .as_ref()
            .map_or(0, |h| h.max_connections.min((available / 8).max(1)));
        let dns_tcp = config
            .server
            .max_tcp_connections
            .min(available.saturating_sub(http).max(1));
        FdBudget {
            limit,
            reserved,
            dns_tcp,
            http,
        }
    }
}

/// Connections one source may hold of `cap` (the cap after the descriptor budget):
/// as configured, else a quarter; never more than the cap, never 0.
pub fn per_source(configured: Option<usize>, cap: usize) -> usize {
    configured.unwrap_or(cap / 4).clamp(1, cap.max(1))
}

/// RLIMIT_NOFILE's soft limit, raised to the hard limit first (best effort).
fn raise_nofile_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

fn bind_pair(addr: SocketAddr) -> Result<(std::net::UdpSocket, TcpListener), AppError> {
    let udp_err = |source| AppError::Bind {
        proto: "udp",
        addr,
        source,
    };
    let tcp_err = |source| AppError::Bind {
        proto: "tcp",
        addr,
        source,
    };
    if addr.port() != 0 {
        return Ok((
            server::bind_udp(addr).map_err(udp_err)?,
            server::bind_tcp(addr).map_err(tcp_err)?,
        ));
    }
    // Port 0: let the kernel pick a UDP port, then take the same TCP port.
    let mut last = None;
    for _ in 0..20 {
        let udp = server::bind_udp(addr).map_err(udp_err)?;
        let port = bound_addr(udp.local_addr(), "udp", addr)?.port();
        match server::bind_tcp(SocketAddr::new(addr.ip(), port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(tcp_err(
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

/// The address a socket bound to `asked` has (its port, when 0 was asked).
fn bound_addr(
    found: std::io::Result<SocketAddr>,
    proto: &'static str,
    asked: SocketAddr,
) -> Result<SocketAddr, AppError> {
    found.map_err(|source| AppError::LocalAddr {
        proto,
        addr: asked,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_address_that_cannot_be_read_is_not_called_a_bind_failure() {
        let asked: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let found = Err(std::io::Error::other("EBADF"));
        let message = bound_addr(found, "udp", asked).unwrap_err().to_string();
        assert_eq!(
            message,
            "bound udp 127.0.0.1:0, but cannot read the socket's address: EBADF"
        );
    }

    #[test]
    fn fd_budget_keeps_dns_and_http_apart() {
        let config = |extra: &str| {
            Config::from_toml(
                &format!(
                    "[server]\nlisten = [\"127.0.0.1:53\"]\nudp-workers = 3\n{extra}\n\
                     [http]\nlisten = \"127.0.0.1:9153\"\nmax-connections = 64\n"
                ),
                "t",
            )
            .unwrap()
        };
        // (limit, max-tcp-connections, DNS TCP, HTTP): 64 + 4 sockets + 1 + the two
        // NOTIFY sockets reserved.
        let rows = [
            (1 << 20, 1024, 1024, 64),
            (1024, 1024, 889, 64),
            (256, 1024, 162, 23),
            (256, 100, 100, 23),
            (60, 1024, 1, 1),
        ];
        for (limit, max_tcp, dns_tcp, http) in rows {
            let c = config(&format!("max-tcp-connections = {max_tcp}"));
            let b = FdBudget::split(&c, limit);
            assert_eq!((b.dns_tcp, b.http), (dns_tcp, http), "{limit} {max_tcp}");
            assert_eq!(b.reserved, 71);
        }
    }
}
