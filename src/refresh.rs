//! The refresh loop: discover → assemble → build → publish, on a jittered
//! interval, with exponential backoff after failures.
//!
//! **An error never changes answers**: a failed discovery publishes nothing, so the
//! last good snapshot keeps serving. Failures are counted by reason in
//! [`RefreshStats`] and logged once per change of state (healthy → failing, one
//! reason → another, failing → recovered), not once per attempt.
//!
//! **Nor does a sudden loss.** A successful discovery that would remove more than
//! half of the AWS-backed addresses (or all of them) is held: the last good data
//! keeps serving until the same result has come back for `[aws] removal-hold`, or a
//! reload (SIGHUP) applies it at once. An emptied emulator, an IAM or SCP change, a
//! role in the wrong account all look like that, and each would otherwise blank
//! every name in one refresh.
//!
//! After each applied discovery that serves any AWS-backed address, the inventory
//! goes to the cold-start cache, if configured; at a cold start only the cached
//! targets saved for the same config are used.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cache;
use crate::config::Config;
use crate::discovery::{
    self, Assembled, Discover, DiscoveryError, FailureReason, Inventory, Loss, aws_addresses,
    mass_removal,
};
use crate::snapshot::{self, DataSource, Served, SnapshotStore, unix_now};

/// What `config` serves with `last`.
pub fn served(config: &Config, last: Option<&LastGood>) -> Served {
    let targets = config
        .targets()
        .into_iter()
        .map(|t| {
            let source = last
                .filter(|l| l.inventory.targets.iter().any(|i| i.target == t))
                .map(|l| l.source);
            (t.to_string(), source)
        })
        .collect();
    let endpoints = last.map_or(0, |l| {
        l.inventory
            .targets
            .iter()
            .filter(|i| config.targets().contains(&i.target))
            .map(|i| i.endpoints.len())
            .sum()
    });
    Served {
        published: true,
        targets,
        endpoints,
    }
}

/// Counters and gauges about discovery, read by logs, tests and the metrics endpoint.
#[derive(Debug, Default)]
pub struct RefreshStats {
    pub attempts: AtomicU64,
    pub successes: AtomicU64,
    failures: [AtomicU64; FailureReason::ALL.len()],
    pub consecutive_failures: AtomicU64,
    /// Unix time of the last successful discovery (0: never).
    pub last_success_unix: AtomicU64,
    /// Duration of the last discovery attempt, in milliseconds.
    pub last_duration_ms: AtomicU64,
    /// Cache file writes that failed.
    pub cache_write_failures: AtomicU64,
    /// While a mass removal is held: how many served addresses it would remove (0: none held).
    pub removal_held: AtomicU64,
    /// While a removal is held: how many names would lose addresses.
    pub removal_held_names: AtomicU64,
    /// While a removal is held: since when, and until when (unix seconds; 0: none held).
    pub removal_held_since_unix: AtomicU64,
    pub removal_held_until_unix: AtomicU64,
    /// Private DNS names from the API refused in the data being served.
    pub rejected_names: AtomicU64,
    /// The last discovery error, for /readyz and logs.
    last_error: Mutex<Option<String>>,
}

impl RefreshStats {
    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.failures[reason as usize].load(Ordering::Relaxed)
    }

    pub fn total_failures(&self) -> u64 {
        FailureReason::ALL.iter().map(|r| self.failures(*r)).sum()
    }

    /// Counts a failure; returns the length of the failure streak.
    pub fn record_failure(&self, reason: FailureReason, message: &str) -> u64 {
        self.failures[reason as usize].fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The removal being held, if any: (addresses, names, since, until), unix seconds.
    pub fn held(&self) -> Option<(u64, u64, u64, u64)> {
        let addresses = self.removal_held.load(Ordering::Relaxed);
        (addresses > 0).then(|| {
            (
                addresses,
                self.removal_held_names.load(Ordering::Relaxed),
                self.removal_held_since_unix.load(Ordering::Relaxed),
                self.removal_held_until_unix.load(Ordering::Relaxed),
            )
        })
    }

    /// Records the hold in force: (what it keeps, since, until), or none.
    fn set_held(&self, held: Option<(Loss, u64, u64)>) {
        let (addresses, names, since, until) = held.map_or((0, 0, 0, 0), |(l, s, u)| {
            (l.addresses as u64, l.names as u64, s, u)
        });
        self.removal_held_names.store(names, Ordering::Relaxed);
        self.removal_held_since_unix.store(since, Ordering::Relaxed);
        self.removal_held_until_unix.store(until, Ordering::Relaxed);
        self.removal_held.store(addresses, Ordering::Relaxed);
    }

    /// The last discovery error, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        if self.consecutive_failures.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Unix seconds as an RFC 3339 time, for logs and /readyz.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// How long to wait before the next discovery.
///
/// After a success: the refresh interval ±10%. After `n` consecutive failures:
/// `min(interval, 2s) · 2^(n-1)`, capped at `max_backoff`, ±10%. `jitter` is in
/// [-1, 1] and spreads replicas so they do not call the API in lockstep.
pub fn next_delay(
    consecutive_failures: u32,
    interval: Duration,
    max_backoff: Duration,
    jitter: f64,
) -> Duration {
    let base = if consecutive_failures == 0 {
        interval
    } else {
        let first = interval.min(Duration::from_secs(2));
        let factor = 2u32.saturating_pow(consecutive_failures.saturating_sub(1).min(20));
        first.saturating_mul(factor).min(max_backoff)
    };
    base.mul_f64(1.0 + 0.1 * jitter.clamp(-1.0, 1.0))
}

/// A number in [-1, 1], different on every call and in every process.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() as f64 / u64::MAX as f64) * 2.0 - 1.0
}

/// The last good inventory and where it came from; kept across reloads.
#[derive(Debug, Clone)]
pub struct LastGood {
    pub inventory: Inventory,
    pub source: DataSource,
}

/// A mass removal waiting for its hold to pass.
struct Held {
    /// The addresses the held result serves; a different result starts a new hold.
    addresses: BTreeSet<(String, IpAddr)>,
    since: Instant,
}

/// What one successful discovery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Published (and cached).
    Applied,
    /// A mass removal, held: the previous data keeps serving.
    Held,
}

/// Drives one [`Discover`] source and publishes what it finds.
pub struct Refresher<D> {
    source: D,
    config: Arc<Config>,
    store: Arc<SnapshotStore>,
    stats: Arc<RefreshStats>,
    /// The reason of the current failure streak, to log changes only.
    failing: Option<FailureReason>,
    /// The last good inventory (from AWS or the cache), kept across reloads.
    last: Arc<Mutex<Option<LastGood>>>,
    held: Option<Held>,
    /// Apply the next discovery even if it is a mass removal (a reload asked for it).
    apply_removals: bool,
    /// The assembly warnings of the last publish, logged when they first appear.
    warned: Mutex<BTreeSet<String>>,
    /// The wait before the first EC2 call, when a cold start already serves every
    /// target from the cache file: a random part of `refresh-interval`, so replicas
    /// started together do not call the API together.
    first_delay: Option<Duration>,
}

impl<D: Discover> Refresher<D> {
    pub fn new(
        source: D,
        config: Arc<Config>,
        store: Arc<SnapshotStore>,
        stats: Arc<RefreshStats>,
    ) -> Self {
        // A hold belongs to the refresher that saw it; a new one (a reload) starts without.
        stats.set_held(None);
        Self {
            source,
            config,
            store,
            stats,
            failing: None,
            last: Arc::default(),
            held: None,
            apply_removals: false,
            warned: Mutex::default(),
            first_delay: None,
        }
    }

    /// Shares the last good inventory with the caller (it outlives this refresher on reload).
    pub fn with_last_inventory(mut self, last: Arc<Mutex<Option<LastGood>>>) -> Self {
        self.last = last;
        self
    }

    /// The first discovery is applied even if it removes most addresses: an operator's
    /// reload (SIGHUP) is the way to accept a held removal at once.
    pub fn applying_removals(mut self) -> Self {
        self.apply_removals = true;
        self
    }

    fn last(&self) -> Option<LastGood> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_last(&self, last: LastGood) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }

    fn removal_hold(&self) -> Duration {
        self.config
            .aws
            .as_ref()
            .map_or(Duration::ZERO, |a| a.removal_hold)
    }

    /// Publishes the config with the last good inventory (or none).
    pub fn publish_last(&self) {
        let last = self.last();
        let assembled = discovery::assemble(&self.config, last.as_ref().map(|l| &l.inventory));
        self.publish(&assembled, last.as_ref());
    }

    fn cache_file(&self) -> Option<PathBuf> {
        self.config.aws.as_ref().and_then(|a| a.cache_file.clone())
    }

    /// Builds a snapshot from `assembled` and publishes it; `last` is what it was
    /// assembled from.
    fn publish(&self, assembled: &Assembled, last: Option<&LastGood>) {
        // Each warning once while it lasts, not on every refresh.
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        for warning in &assembled.warnings {
            if warned.contains(warning) {
                debug!(%warning, "discovery");
            } else {
                warn!(%warning, "discovery");
            }
        }
        *warned = assembled.warnings.iter().cloned().collect();
        drop(warned);
        self.stats
            .rejected_names
            .store(assembled.rejected_names as u64, Ordering::Relaxed);
        let settings = &self.config.server.settings;
        let what = served(&self.config, last);
        self.store.update(|previous| {
            snapshot::build(
                &assembled.zones,
                settings.clone(),
                Some(previous),
                unix_now(),
            )
            .with_served(what)
        });
    }

    /// One discovery attempt. On success the new data is served and cached, unless
    /// it is a mass removal still within its hold; on failure nothing changes.
    pub async fn refresh_once(&mut self) -> Result<Outcome, DiscoveryError> {
        let started = Instant::now();
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let result = self.source.discover().await;
        let elapsed = started.elapsed();
        self.stats
            .last_duration_ms
            .store(elapsed.as_millis() as u64, Ordering::Relaxed);
        match result {
            Ok(inventory) => {
                self.stats.successes.fetch_add(1, Ordering::Relaxed);
                self.stats.consecutive_failures.store(0, Ordering::Relaxed);
                self.stats
                    .last_success_unix
                    .store(unix_now(), Ordering::Relaxed);
                if let Some(reason) = self.failing.take() {
                    info!(
                        previous_reason = reason.as_str(),
                        "refresh recovered: the EC2 API answers again"
                    );
                }
                let outcome = self.apply(inventory, elapsed).await;
                self.apply_removals = false;
                Ok(outcome)
            }
            Err(err) => {
                let streak = self.stats.record_failure(err.reason, &err.to_string());
                if self.failing != Some(err.reason) {
                    warn!(error = %err, reason = err.reason.as_str(), "refresh failed; serving the previous snapshot");
                } else {
                    debug!(error = %err, streak, "refresh still failing");
                }
                self.failing = Some(err.reason);
                Err(err)
            }
        }
    }

    /// Serves a discovered inventory, or holds it when it is a mass removal.
    async fn apply(&mut self, inventory: Inventory, elapsed: Duration) -> Outcome {
        let last = self.last();
        let old = discovery::assemble(&self.config, last.as_ref().map(|l| &l.inventory));
        let new = discovery::assemble(&self.config, Some(&inventory));
        let (old_addrs, new_addrs) = (aws_addresses(&old), aws_addresses(&new));
        let hold = self.removal_hold();
        if let Some(loss) =
            mass_removal(&old_addrs, &new_addrs).filter(|_| !hold.is_zero() && !self.apply_removals)
        {
            let addresses: BTreeSet<(String, IpAddr)> =
                new_addrs.iter().map(|(n, a)| (n.to_string(), *a)).collect();
            match &self.held {
                Some(h) if h.addresses == addresses && h.since.elapsed() >= hold => {
                    warn!(
                        removed = loss.addresses,
                        names = loss.names,
                        of = old_addrs.len(),
                        held_for = ?h.since.elapsed(),
                        "the removal persisted for the hold; applying it"
                    );
                }
                Some(h) if h.addresses == addresses => {
                    debug!(removed = loss.addresses, "removal still held");
                    return Outcome::Held;
                }
                _ => {
                    let since = unix_now();
                    let until = since + hold.as_secs();
                    warn!(
                        removed = loss.addresses,
                        names = loss.names,
                        of = old_addrs.len(),
                        remaining = new_addrs.len(),
                        since = %rfc3339(since),
                        until = %rfc3339(until),
                        "removal held: discovery would take most AWS-backed addresses away (names losing addresses, not replaced); the previous data serves until the same result has come back for the hold (SIGHUP applies it now)"
                    );
                    self.held = Some(Held {
                        addresses,
                        since: Instant::now(),
                    });
                    self.stats.set_held(Some((loss, since, until)));
                    return Outcome::Held;
                }
            }
        } else if self.held.is_some() {
            info!("the held removal did not persist; serving the new data");
        }
        self.held = None;
        self.stats.set_held(None);

        let good = LastGood {
            inventory,
            source: DataSource::Aws {
                fetched_at: unix_now(),
            },
        };
        self.publish(&new, Some(&good));
        let endpoints: usize = good
            .inventory
            .targets
            .iter()
            .map(|t| t.endpoints.len())
            .sum();
        debug!(
            endpoints,
            addresses = new_addrs.len(),
            ?elapsed,
            "refresh applied"
        );
        let empty = new_addrs.is_empty();
        self.set_last(good.clone());
        match self.cache_file() {
            Some(_) if empty => {
                debug!("nothing AWS-backed to serve; the cache file keeps its data")
            }
            Some(path) => self.save_cache(path, good.inventory).await,
            None => {}
        }
        Outcome::Applied
    }

    async fn save_cache(&self, path: PathBuf, inventory: Inventory) {
        let (config, now) = (self.config.clone(), unix_now());
        let written =
            tokio::task::spawn_blocking(move || cache::save(&path, &config, &inventory, now)).await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(error) => format!("cache writer failed: {error}"),
        };
        let n = self
            .stats
            .cache_write_failures
            .fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            warn!(%error, "cannot write the cache file; it keeps its previous data");
        } else {
            debug!(%error, "cannot write the cache file");
        }
    }

    /// The cache file's targets saved for this config, as the last good data (not yet
    /// published). Those saved for another config are left out and named.
    /// Read on a blocking thread, so a stop request is seen during it (a stuck
    /// network mount).
    async fn load_cache(&self) {
        let Some(path) = self.cache_file() else {
            return;
        };
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || cache::load(&path)).await
        };
        let cached = match read {
            Ok(Ok(cached)) => cached,
            Ok(Err(error)) => {
                error!(%error, "cannot use the cache file; ignoring it");
                return;
            }
            Err(error) => {
                error!(%error, "cannot use the cache file: its reader failed; ignoring it");
                return;
            }
        };
        let saved_at = cached.saved_at_unix;
        let (inventory, refused) = cached.for_config(&self.config);
        for why in &refused {
            warn!(cache = %path.display(), target = %why, "cached data not used");
        }
        if inventory.targets.is_empty() {
            return;
        }
        let age = unix_now().saturating_sub(saved_at);
        info!(
            age_seconds = age,
            targets = inventory.targets.len(),
            "cached discovery data loaded"
        );
        self.set_last(LastGood {
            inventory,
            source: DataSource::Cache { saved_at },
        });
    }

    /// The first load of a config: discovery; failing that (or while its result is
    /// held) the last good data: that of the previous config after a reload, else the
    /// cache file's targets saved for this config. Targets without data answer NODATA
    /// for their AWS-backed names until discovery works, and /readyz names them.
    ///
    /// A cold start whose cache file has data for every target serves it and makes
    /// the first EC2 call after a random 0 to `refresh-interval` (see `run`): replicas
    /// of a deployment start together, and their calls should not come together out
    /// of one account's EC2 API budget (coredns#2353, coredns#4899).
    pub async fn initial_load(&mut self) {
        if self.last().is_none() {
            // The cache is the baseline a mass removal is measured against.
            self.load_cache().await;
            if self.last().is_some() {
                self.publish_last();
                if self.store.load().served.ready() {
                    let interval = self
                        .config
                        .aws
                        .as_ref()
                        .map_or(Duration::from_secs(30), |a| a.refresh_interval);
                    let delay = interval.mul_f64((jitter() + 1.0) / 2.0);
                    info!(
                        first_call_in_ms = delay.as_millis() as u64,
                        "serving the cache file; the first EC2 call waits a random part of refresh-interval"
                    );
                    self.first_delay = Some(delay);
                    return;
                }
            }
        }
        if let Ok(Outcome::Applied) = self.refresh_once().await {
            return;
        }
        self.publish_last();
        let served = self.store.load().served.clone();
        if served.from_cache() {
            warn!("serving the cached discovery until the EC2 API answers");
        }
        let missing = served.missing();
        if !missing.is_empty() {
            error!(
                ?missing,
                "no discovery data for these targets: their AWS-backed names answer NODATA until the EC2 API answers"
            );
        }
    }

    /// Refreshes until `shutdown`: every interval after a success, with backoff after failures.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (interval, max_backoff) = self
            .config
            .aws
            .as_ref()
            .map_or((Duration::from_secs(30), Duration::from_secs(300)), |a| {
                (a.refresh_interval, a.max_backoff)
            });
        loop {
            let streak = self.stats.consecutive_failures.load(Ordering::Relaxed) as u32;
            let delay = self
                .first_delay
                .take()
                .unwrap_or_else(|| next_delay(streak, interval, max_backoff, jitter()));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            // A discovery stalled on the API must not hold up a shutdown or a reload:
            // cancelled, it publishes nothing.
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = self.refresh_once() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use hickory_proto::rr::Name;

    use super::*;
    use crate::discovery::tests::endpoint;

    #[test]
    fn delays() {
        let (i, cap) = (Duration::from_secs(30), Duration::from_secs(300));
        let s = Duration::from_secs;
        // (consecutive failures, jitter, expected)
        let rows = [
            (0, 0.0, s(30)),
            (0, 1.0, s(33)),
            (0, -1.0, s(27)),
            (1, 0.0, s(2)),
            (2, 0.0, s(4)),
            (3, 0.0, s(8)),
            (8, 0.0, s(256)),
            (9, 0.0, s(300)),
            (1000, 0.0, s(300)),
            (1000, 1.0, s(330)),
        ];
        for (n, j, want) in rows {
            assert_eq!(next_delay(n, i, cap, j), want, "{n} failures, jitter {j}");
        }
        // A short interval is also the first retry delay.
        assert_eq!(
            next_delay(1, Duration::from_millis(500), cap, 0.0),
            Duration::from_millis(500)
        );
        for _ in 0..1000 {
            let j = jitter();
            assert!((-1.0..=1.0).contains(&j));
        }
    }

    /// Plays back scripted results and records when it was called (tokio time).
    struct Script {
        results: Mutex<VecDeque<Result<Inventory, DiscoveryError>>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Discover for Arc<Script> {
        async fn discover(&self) -> Result<Inventory, DiscoveryError> {
            self.calls.lock().unwrap().push(Instant::now());
            self.results
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(error(FailureReason::Other)))
        }
    }

    fn error(reason: FailureReason) -> DiscoveryError {
        DiscoveryError {
            reason,
            target: "t".into(),
            operation: "DescribeVpcEndpoints",
            message: "scripted".into(),
        }
    }

    /// One endpoint, vpce-0aaa, with these addresses.
    pub(super) fn inventory(ips: &[&str]) -> Inventory {
        discovery::tests::inventory(vec![endpoint("vpce-0aaa", "vpc-1", &[], ips)])
    }

    /// Without the removal guard: these tests replace one address with another,
    /// which the guard would hold (see `removal_guard`).
    fn config() -> Arc<Config> {
        config_with("removal-hold = \"0s\"")
    }

    fn config_with(aws_extra: &str) -> Arc<Config> {
        let text = format!(
            r#"
[aws]
region = "ap-northeast-1"
refresh-interval = "30s"
max-backoff = "60s"
{aws_extra}
[[zone]]
origin = "internal.example.com"
[[zone.record]]
name = "@"
vpc-endpoint = "vpce-0aaa"
"#
        );
        Arc::new(Config::from_toml(&text, "t").unwrap())
    }

    pub(super) fn served(store: &SnapshotStore) -> Vec<String> {
        let name = Name::from_ascii("internal.example.com.").unwrap();
        let snap = store.load();
        let node = snap.zone(&name).and_then(|z| z.node(&name)).unwrap();
        node.a_records(&name)
            .iter()
            .map(|r| r.data.to_string())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_backoff_stale_on_error_and_recovery() {
        use FailureReason::*;
        let script = Arc::new(Script {
            results: Mutex::new(VecDeque::from([
                Ok(inventory(&["10.0.1.4"])), // initial load
                Err(error(Throttled)),        // +30s ±10%
                Err(error(Throttled)),        // +2s
                Err(error(ServerError)),      // +4s
                Err(error(Timeout)),          // +8s
                Ok(inventory(&["10.0.1.5"])), // +16s
                Ok(inventory(&["10.0.1.5"])), // +30s
            ])),
            calls: Mutex::new(Vec::new()),
        });
        let store = Arc::new(SnapshotStore::default());
        let stats = Arc::new(RefreshStats::default());
        let mut r = Refresher::new(script.clone(), config(), store.clone(), stats.clone());
        r.initial_load().await;
        assert!(store.load().served.ready());
        assert_eq!(served(&store), ["10.0.1.4"]);
        let serial = |s: &SnapshotStore| s.load().zones().next().unwrap().serial();
        let first_serial = serial(&store);

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(r.run(shutdown.clone()));
        // Calls at about 30, 32, 36, 44 (failures), 60 and 90 s (successes), each
        // ±10%: the second failure comes by 35.2 s, the fourth by 48.4 s, the first
        // success not before 54 s. The next would be at 117 s or later. Answers never
        // change while failing.
        tokio::time::sleep(Duration::from_secs(36)).await;
        assert!(stats.total_failures() >= 2, "{}", stats.total_failures());
        assert_eq!(served(&store), ["10.0.1.4"], "stale on error");
        tokio::time::sleep(Duration::from_secs(14)).await;
        assert_eq!(stats.total_failures(), 4);
        assert_eq!(stats.successes.load(Ordering::Relaxed), 1);
        assert_eq!(served(&store), ["10.0.1.4"], "stale on error");
        tokio::time::sleep(Duration::from_secs(48)).await;
        shutdown.cancel();
        task.await.unwrap();

        assert_eq!(stats.failures(Throttled), 2);
        assert_eq!(stats.failures(ServerError), 1);
        assert_eq!(stats.failures(Timeout), 1);
        assert_eq!(stats.successes.load(Ordering::Relaxed), 3);
        assert_eq!(stats.consecutive_failures.load(Ordering::Relaxed), 0);
        assert_eq!(served(&store), ["10.0.1.5"], "recovered");
        assert!(serial(&store) > first_serial);

        let calls = script.calls.lock().unwrap().clone();
        let gaps: Vec<f64> = calls
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let expect = [30.0, 2.0, 4.0, 8.0, 16.0, 30.0];
        assert_eq!(gaps.len(), expect.len(), "{gaps:?}");
        for (gap, want) in gaps.iter().zip(expect) {
            assert!(
                (gap - want).abs() <= want * 0.1 + 0.001,
                "gap {gap} vs {want}: {gaps:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unchanged_data_keeps_the_serial() {
        let script = Arc::new(Script {
            results: Mutex::new(VecDeque::from([
                Ok(inventory(&["10.0.1.4"])),
                Ok(inventory(&["10.0.1.4"])),
            ])),
            calls: Mutex::new(Vec::new()),
        });
        let store = Arc::new(SnapshotStore::default());
        let mut r = Refresher::new(
            script,
            config(),
            store.clone(),
            Arc::new(RefreshStats::default()),
        );
        r.refresh_once().await.unwrap();
        let before = store.load().zones().next().unwrap().serial();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        r.refresh_once().await.unwrap();
        assert_eq!(store.load().zones().next().unwrap().serial(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn initial_failure_without_cache_serves_static_config() {
        let script = Arc::new(Script {
            results: Mutex::new(VecDeque::new()),
            calls: Mutex::new(Vec::new()),
        });
        let store = Arc::new(SnapshotStore::default());
        let stats = Arc::new(RefreshStats::default());
        let mut r = Refresher::new(script, config(), store.clone(), stats.clone());
        r.initial_load().await;
        assert!(!store.load().served.ready());
        assert!(
            served(&store).is_empty(),
            "the name exists without addresses: NODATA"
        );
        assert_eq!(stats.failures(FailureReason::Other), 1);
    }
}

#[cfg(test)]
mod removal_guard {
    use std::collections::VecDeque;

    use super::tests::{inventory, served};
    use super::*;
    use crate::discovery::tests::endpoint;
    use hickory_proto::rr::Name;

    const TWO: &[&str] = &["10.0.1.4", "10.0.2.4"];

    struct Fixed(Mutex<VecDeque<Inventory>>);

    impl Discover for Arc<Fixed> {
        async fn discover(&self) -> Result<Inventory, DiscoveryError> {
            let mut q = self.0.lock().unwrap();
            let next = if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            };
            Ok(next.unwrap())
        }
    }

    fn config(hold: &str, cache: Option<&std::path::Path>) -> Arc<Config> {
        let cache = cache.map_or(String::new(), |p| {
            format!("cache-file = {:?}", p.display().to_string())
        });
        let text = format!(
            "[aws]\nregion = \"ap-northeast-1\"\nremoval-hold = \"{hold}\"\n{cache}\n\
             [[zone]]\norigin = \"internal.example.com\"\n\
             [[zone.record]]\nname = \"@\"\nvpc-endpoint = \"vpce-0aaa\"\n"
        );
        Arc::new(Config::from_toml(&text, "t").unwrap())
    }

    fn refresher(
        config: Arc<Config>,
        results: &[Inventory],
    ) -> (Refresher<Arc<Fixed>>, Arc<SnapshotStore>, Arc<RefreshStats>) {
        let source = Arc::new(Fixed(Mutex::new(results.iter().cloned().collect())));
        let store = Arc::new(SnapshotStore::default());
        let stats = Arc::new(RefreshStats::default());
        (
            Refresher::new(source, config, store.clone(), stats.clone()),
            store,
            stats,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_mass_removal_is_held_until_it_persists_for_the_hold() {
        let (mut r, store, stats) =
            refresher(config("5m", None), &[inventory(TWO), inventory(&[])]);
        r.initial_load().await;
        assert_eq!(served(&store), TWO);
        let start = Instant::now();
        // Every refresh within the hold returns the empty result: still held.
        while start.elapsed() < Duration::from_secs(299) {
            assert_eq!(r.refresh_once().await.unwrap(), Outcome::Held);
            assert_eq!(served(&store), TWO, "held at {:?}", start.elapsed());
            assert_eq!(stats.removal_held.load(Ordering::Relaxed), 2);
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Applied);
        assert!(served(&store).is_empty(), "applied after the hold");
        assert_eq!(stats.removal_held.load(Ordering::Relaxed), 0);
    }

    /// The catalog is built from what is served: a zone that a held mass removal
    /// keeps stays a member while it is held, and leaves the catalog when the removal
    /// applies (issue #23).
    #[tokio::test(start_paused = true)]
    async fn a_held_removal_keeps_the_zone_in_the_catalog_until_it_applies() {
        let text = "[aws]\nregion = \"ap-northeast-1\"\nremoval-hold = \"5m\"\n\
                    [transfer]\nallow = [\"10.0.0.0/8\"]\n[catalog]\nzone = \"catalog.invalid\"\n\
                    [[discover]]\nvpc-ids = [\"vpc-1\"]\n";
        let config = Arc::new(Config::from_toml(text, "t").unwrap());
        let ssm = discovery::tests::inventory(vec![endpoint(
            "vpce-0ssm",
            "vpc-1",
            &["ssm.ap-northeast-1.amazonaws.com"],
            TWO,
        )]);
        let empty = discovery::tests::inventory(vec![]);
        let (mut r, store, _) = refresher(config, &[ssm, empty]);
        r.initial_load().await;
        let members = |store: &SnapshotStore| -> Vec<String> {
            let snap = store.load();
            let catalog = snap
                .zone(&Name::from_ascii("catalog.invalid.").unwrap())
                .unwrap();
            catalog
                .other()
                .iter()
                .filter(|r| r.record_type() == hickory_proto::rr::RecordType::PTR)
                .map(|r| r.data.to_string())
                .collect()
        };
        assert_eq!(members(&store), ["ssm.ap-northeast-1.amazonaws.com."]);
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Held);
        assert_eq!(
            members(&store),
            ["ssm.ap-northeast-1.amazonaws.com."],
            "held: still a member"
        );
        tokio::time::sleep(Duration::from_secs(301)).await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Applied);
        assert!(members(&store).is_empty(), "applied: no longer a member");
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_replaced_by_as_many_apply_at_once_and_losses_are_held_with_their_times() {
        let other = &["10.9.1.4", "10.9.2.4"];
        // Every address replaced (a recreated endpoint, rotated ENIs): applied at once,
        // with a one-hour hold in force.
        let (mut r, store, stats) = refresher(
            config("1h", None),
            &[
                inventory(TWO),
                inventory(other),
                inventory(&["10.8.0.1", "10.8.0.2", "10.8.0.3"]),
                inventory(&["10.7.0.1"]),
            ],
        );
        r.initial_load().await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Applied);
        assert_eq!(served(&store), other);
        // More addresses than before, none of the old ones: applied too.
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Applied);
        assert_eq!(served(&store).len(), 3);
        assert_eq!(stats.held(), None);
        // Three to one: two of three lost, whatever the addresses; held, with when.
        let before = unix_now();
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Held);
        assert_eq!(served(&store).len(), 3);
        let (addresses, names, since, until) = stats.held().expect("held");
        assert_eq!((addresses, names), (2, 1));
        assert!(since >= before && since <= unix_now(), "{since}");
        assert_eq!(until, since + 3600);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cold_start_from_a_stale_cache_applies_what_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let config = config("1h", Some(&path));
        // The cache saw other addresses (an older VPC layout); the API answers now.
        cache::save(&path, &config, &inventory(&["10.9.1.4", "10.9.2.4"]), 1).unwrap();
        let (mut r, store, stats) = refresher(config, &[inventory(TWO)]);
        r.initial_load().await;
        assert_eq!(
            served(&store),
            ["10.9.1.4", "10.9.2.4"],
            "the cache serves; the first call waits its jitter"
        );
        assert!(
            r.first_delay
                .is_some_and(|d| d <= Duration::from_secs(3600))
        );
        r.refresh_once().await.unwrap();
        assert_eq!(served(&store), TWO, "applied at once, not held for an hour");
        assert_eq!(stats.held(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_different_result_restarts_the_hold_and_a_recovery_ends_it() {
        let four = &["10.0.1.4", "10.0.2.4", "10.0.3.4", "10.0.4.4"];
        let (mut r, store, stats) = refresher(
            config("1m", None),
            &[
                inventory(four),
                inventory(&["10.0.1.4"]),
                inventory(&["10.0.2.4"]),
                inventory(&["10.0.2.4"]),
                inventory(four),
            ],
        );
        r.initial_load().await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Held);
        tokio::time::sleep(Duration::from_secs(61)).await;
        // Another result: a new hold starts.
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Held);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Held);
        assert_eq!(served(&store).len(), 4);
        // The full set is back: applied at once, nothing held.
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Applied);
        assert_eq!(served(&store).len(), 4);
        assert_eq!(stats.removal_held.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn small_removals_a_zero_hold_and_a_reload_apply_at_once() {
        let three = &["10.0.1.4", "10.0.2.4", "10.0.3.4"];
        // One of three is not more than half.
        let (mut r, store, _) = refresher(config("5m", None), &[inventory(three), inventory(TWO)]);
        r.initial_load().await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Applied);
        assert_eq!(served(&store), TWO);
        // removal-hold = "0s" disables the guard.
        let (mut r, store, _) = refresher(config("0s", None), &[inventory(TWO), inventory(&[])]);
        r.initial_load().await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Applied);
        assert!(served(&store).is_empty());
        // A reload (the refresher SIGHUP makes) applies its first discovery.
        let (mut r, store, _) = refresher(config("5m", None), &[inventory(TWO), inventory(&[])]);
        r.initial_load().await;
        assert_eq!(r.refresh_once().await.unwrap(), Outcome::Held);
        let source = Arc::new(Fixed(Mutex::new([inventory(&[])].into())));
        let mut reloaded =
            Refresher::new(source, config("5m", None), store.clone(), Arc::default())
                .with_last_inventory(r.last.clone())
                .applying_removals();
        reloaded.publish_last();
        assert_eq!(served(&store), TWO);
        reloaded.initial_load().await;
        assert!(served(&store).is_empty(), "SIGHUP applies the held removal");
        // ... and only its first: the guard is back for the next one.
        assert!(!reloaded.apply_removals);
    }

    /// A cold start measures a removal against the cache: an emptied account does not
    /// blank the names after a restart either; nor does it overwrite the cache.
    #[tokio::test(start_paused = true)]
    async fn a_cold_start_holds_a_removal_against_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let cfg = config("5m", Some(&path));
        let (mut r, _, _) = refresher(cfg.clone(), &[inventory(TWO)]);
        r.initial_load().await;
        let saved = std::fs::read(&path).unwrap();

        let (mut r, store, _stats) = refresher(cfg.clone(), &[inventory(&[])]);
        r.initial_load().await;
        r.refresh_once().await.unwrap();
        assert_eq!(
            served(&store),
            TWO,
            "the cached data, held against the empty result"
        );
        assert!(store.load().served.from_cache());
        assert!(store.load().served.ready());
        assert_eq!(std::fs::read(&path).unwrap(), saved, "cache unchanged");

        // Applied after the hold (here: disabled), the empty result is served but
        // never written over the cache.
        let (mut r, store, _) = refresher(config("0s", Some(&path)), &[inventory(&[])]);
        r.initial_load().await;
        r.refresh_once().await.unwrap();
        assert!(served(&store).is_empty());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            saved,
            "cache not overwritten by empty"
        );
    }
}
