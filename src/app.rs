//! Wiring: bind every socket first, build the first snapshot, start the
//! transports, and stop them on request.
//!
//! [`Server::start`] returns a handle with the addresses actually bound, so tests
//! start the whole app on port 0 and read them back. [`run`] is what the binary
//! does: start, wait for SIGINT/SIGTERM, drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::aws::Ec2Discovery;
use crate::config::{Config, LogFormat};
use crate::discovery::{self, Assembled, Discover, DiscoveryError, Inventory};
use crate::refresh::{RefreshStats, Refresher};
use crate::server::{self, TcpLimits};
use crate::snapshot::{self, Snapshot, SnapshotStore};

/// How long in-flight TCP answers get to finish after a stop is requested.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// A running server.
pub struct Server {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    store: Arc<SnapshotStore>,
    stats: Arc<RefreshStats>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Binds every listen address (UDP and TCP on each), builds the snapshot from
    /// the config, and starts serving. A port of 0 picks one free port used for
    /// both UDP and TCP.
    ///
    /// With AWS configured, the first discovery (or, failing it, the cache file) is
    /// loaded before the first query is answered.
    pub async fn start(config: &Config) -> Result<Self, AppError> {
        match &config.aws {
            Some(aws) => {
                let source = Ec2Discovery::new(aws, config.targets()).await;
                Self::start_with(config, Some(source)).await
            }
            None => Self::start_with(config, None::<Ec2Discovery>).await,
        }
    }

    /// [`Server::start`] with any discovery source (unit tests use fakes).
    pub async fn start_with<D: Discover>(
        config: &Config,
        source: Option<D>,
    ) -> Result<Self, AppError> {
        let mut sockets = Vec::with_capacity(config.server.listen.len());
        for addr in &config.server.listen {
            sockets.push(bind_pair(*addr)?);
        }
        let config = Arc::new(config.clone());
        let store = Arc::new(SnapshotStore::default());
        let stats = Arc::new(RefreshStats::default());
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        match source {
            Some(source) => {
                let mut refresher =
                    Refresher::new(source, config.clone(), store.clone(), stats.clone());
                refresher
                    .initial_load()
                    .instrument(info_span!("refresh"))
                    .await;
                tasks.spawn(
                    refresher
                        .run(shutdown.clone())
                        .instrument(info_span!("refresh")),
                );
            }
            None => {
                store.publish(build_snapshot(&config, None));
                stats.mark_loaded();
            }
        }
        let limits = TcpLimits {
            idle_timeout: config.server.tcp_idle_timeout,
            max_connections: config.server.max_tcp_connections,
        };
        let mut udp_addrs = Vec::new();
        let mut tcp_addrs = Vec::new();
        for (udp, tcp) in sockets {
            let (u, t) = (local_addr(&udp, "udp")?, tcp_local_addr(&tcp)?);
            info!(udp = %u, tcp = %t, "listening");
            udp_addrs.push(u);
            tcp_addrs.push(t);
            tasks.spawn(
                server::serve_udp(Arc::new(udp), store.clone(), shutdown.clone())
                    .instrument(info_span!("udp", addr = %u)),
            );
            tasks.spawn(
                server::serve_tcp(tcp, store.clone(), limits, shutdown.clone())
                    .instrument(info_span!("tcp", addr = %t)),
            );
        }
        tasks.close();
        let snap = store.load();
        info!(
            zones = snap.zones.len(),
            records = snap.record_count(),
            "serving"
        );
        Ok(Self {
            udp_addrs,
            tcp_addrs,
            store,
            stats,
            shutdown,
            tasks,
        })
    }

    /// Discovery counters; all zero without AWS.
    pub fn stats(&self) -> &Arc<RefreshStats> {
        &self.stats
    }

    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The snapshot store, to publish new data into.
    pub fn store(&self) -> &Arc<SnapshotStore> {
        &self.store
    }

    /// Stops accepting, lets in-flight answers finish (bounded), and returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(DRAIN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(grace = ?DRAIN_GRACE, "connections still open after the grace period; closing");
        }
    }
}

/// Builds a snapshot of the configured zones; `previous` keeps unchanged serials.
pub fn build_snapshot(config: &Config, previous: Option<&Snapshot>) -> Snapshot {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let zones = discovery::assemble(config, None).zones;
    snapshot::build(&zones, config.server.settings.clone(), previous, now)
}

/// One discovery run, for `privatelink-dns discover`: what would be served, and from where.
pub async fn discover_once(config: &Config) -> Result<(Inventory, Assembled), DiscoveryError> {
    let Some(aws) = &config.aws else {
        return Ok((Inventory::default(), discovery::assemble(config, None)));
    };
    let source = Ec2Discovery::new(aws, config.targets()).await;
    let inventory = source.discover().await?;
    let assembled = discovery::assemble(config, Some(&inventory));
    Ok((inventory, assembled))
}

/// Renders [`discover_once`]'s result as a table, or as JSON.
pub fn render_discovery(inventory: &Inventory, assembled: &Assembled, json: bool) -> String {
    if json {
        let doc = serde_json::json!({
            "records": assembled.provenance,
            "endpoints": inventory.targets,
            "warnings": assembled.warnings,
        });
        return serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "TYPE".to_string(),
        "ADDRESS".to_string(),
        "ENDPOINT".to_string(),
        "AZ".to_string(),
    ]];
    for p in &assembled.provenance {
        rows.push([
            p.name.clone(),
            p.rtype.to_string(),
            p.address.to_string(),
            p.endpoint.clone(),
            p.availability_zone.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let endpoints: usize = inventory.targets.iter().map(|t| t.endpoints.len()).sum();
    let unavailable: Vec<String> = inventory
        .targets
        .iter()
        .flat_map(|t| &t.endpoints)
        .filter(|e| !e.is_available())
        .map(|e| format!("{} ({})", e.id, e.state))
        .collect();
    out.push_str(&format!(
        "{} addresses from {endpoints} interface endpoints",
        assembled.provenance.len()
    ));
    if !unavailable.is_empty() {
        out.push_str(&format!(
            "; not served (not available): {}",
            unavailable.join(", ")
        ));
    }
    out.push('\n');
    out
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), AppError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AppError::Signal)?;
    let server = Server::start(&config).await?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received; stopping"),
        _ = term.recv() => info!("SIGTERM received; stopping"),
    }
    server.shutdown().await;
    info!("stopped");
    Ok(())
}

/// Sets up logging: `RUST_LOG` wins over the config's level.
pub fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), AppError> {
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
        let port = udp.local_addr().map_err(udp_err)?.port();
        match server::bind_tcp(SocketAddr::new(addr.ip(), port)) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(tcp_err(
        last.unwrap_or_else(|| std::io::Error::other("no free port")),
    ))
}

fn local_addr(udp: &UdpSocket, proto: &'static str) -> Result<SocketAddr, AppError> {
    udp.local_addr().map_err(|source| AppError::Bind {
        proto,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

fn tcp_local_addr(tcp: &TcpListener) -> Result<SocketAddr, AppError> {
    tcp.local_addr().map_err(|source| AppError::Bind {
        proto: "tcp",
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
