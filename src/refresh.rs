//! The refresh loop: discover → assemble → build → publish, on a jittered
//! interval, with exponential backoff after failures.
//!
//! **An error never changes answers**: a failed discovery publishes nothing, so the
//! last good snapshot keeps serving. Failures are counted by reason in
//! [`RefreshStats`] and logged once per change of state (healthy → failing, one
//! reason → another, failing → recovered), not once per attempt. After each
//! success the inventory goes to the cold-start cache, if configured.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cache;
use crate::config::Config;
use crate::discovery::{self, Discover, DiscoveryError, FailureReason, Inventory};
use crate::snapshot::{self, SnapshotStore};

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
    /// Endpoints in the last good inventory.
    pub endpoints: AtomicU64,
    /// A snapshot with discovered data (from AWS or from the cache) is being served.
    loaded: AtomicBool,
    /// The data being served came from the cache file, not from AWS.
    pub from_cache: AtomicBool,
    /// AWS discovery is configured (refresh metrics are meaningful).
    pub aws: AtomicBool,
    /// Unix time the served discovery data was fetched (cache: when it was saved).
    pub data_unix: AtomicU64,
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

    /// True once data from AWS or from the cache has been loaded (always true without AWS).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// Counts a failure; returns the length of the failure streak.
    pub fn record_failure(&self, reason: FailureReason, message: &str) -> u64 {
        self.failures[reason as usize].fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
    last: Arc<Mutex<Option<Inventory>>>,
}

impl<D: Discover> Refresher<D> {
    pub fn new(
        source: D,
        config: Arc<Config>,
        store: Arc<SnapshotStore>,
        stats: Arc<RefreshStats>,
    ) -> Self {
        Self {
            source,
            config,
            store,
            stats,
            failing: None,
            last: Arc::default(),
        }
    }

    /// Shares the last good inventory with the caller (it outlives this refresher on reload).
    pub fn with_last_inventory(mut self, last: Arc<Mutex<Option<Inventory>>>) -> Self {
        self.last = last;
        self
    }

    fn last(&self) -> Option<Inventory> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_last(&self, inventory: &Inventory) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(inventory.clone());
    }

    /// Publishes the config with the last good inventory, if there is one.
    pub fn publish_last(&self) {
        if let Some(inventory) = self.last() {
            self.publish(Some(&inventory));
        }
    }

    fn cache_file(&self) -> Option<PathBuf> {
        self.config.aws.as_ref().and_then(|a| a.cache_file.clone())
    }

    /// Builds a snapshot from the config and `inventory` and publishes it.
    pub fn publish(&self, inventory: Option<&Inventory>) {
        let assembled = discovery::assemble(&self.config, inventory);
        for warning in &assembled.warnings {
            warn!(%warning, "discovery");
        }
        let previous = self.store.load_full();
        let snap = snapshot::build(
            &assembled.zones,
            self.config.server.settings.clone(),
            Some(&previous),
            unix_now(),
        );
        self.store.publish(snap);
    }

    /// One discovery attempt. On success the new data is served and cached; on
    /// failure nothing changes.
    pub async fn refresh_once(&mut self) -> Result<(), DiscoveryError> {
        let started = Instant::now();
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let result = self.source.discover().await;
        let elapsed = started.elapsed();
        self.stats
            .last_duration_ms
            .store(elapsed.as_millis() as u64, Ordering::Relaxed);
        match result {
            Ok(inventory) => {
                self.publish(Some(&inventory));
                self.set_last(&inventory);
                let endpoints: usize = inventory.targets.iter().map(|t| t.endpoints.len()).sum();
                self.stats
                    .endpoints
                    .store(endpoints as u64, Ordering::Relaxed);
                self.stats.successes.fetch_add(1, Ordering::Relaxed);
                self.stats.consecutive_failures.store(0, Ordering::Relaxed);
                self.stats
                    .last_success_unix
                    .store(unix_now(), Ordering::Relaxed);
                self.stats.data_unix.store(unix_now(), Ordering::Relaxed);
                self.stats.from_cache.store(false, Ordering::Relaxed);
                self.stats.mark_loaded();
                if let Some(reason) = self.failing.take() {
                    info!(
                        previous_reason = reason.as_str(),
                        endpoints, "refresh recovered; serving fresh data"
                    );
                } else {
                    debug!(endpoints, ?elapsed, "refresh done");
                }
                if let Some(path) = self.cache_file() {
                    let now = unix_now();
                    let written =
                        tokio::task::spawn_blocking(move || cache::save(&path, &inventory, now))
                            .await;
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => warn!(%error, "cannot write the cache file"),
                        Err(error) => warn!(%error, "cache writer failed"),
                    }
                }
                Ok(())
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

    /// The first load of a config: discovery, else the last good inventory (after a
    /// reload), else the cache file, else the static config alone (AWS-backed names
    /// then answer NODATA until discovery works).
    pub async fn initial_load(&mut self) {
        if self.refresh_once().await.is_ok() {
            return;
        }
        if let Some(inventory) = self.last() {
            self.publish(Some(&inventory));
            return;
        }
        match self.cache_file().map(|p| cache::load(&p)) {
            Some(Ok(cached)) => {
                let age = unix_now().saturating_sub(cached.saved_at_unix);
                warn!(
                    age_seconds = age,
                    "serving the cached discovery until the EC2 API answers"
                );
                self.publish(Some(&cached.inventory));
                self.set_last(&cached.inventory);
                self.stats.from_cache.store(true, Ordering::Relaxed);
                self.stats
                    .data_unix
                    .store(cached.saved_at_unix, Ordering::Relaxed);
                self.stats.mark_loaded();
            }
            Some(Err(error)) => {
                error!(%error, "cannot use the cache file; ignoring it");
                self.publish(None);
            }
            None => {
                error!(
                    "no discovery data and no cache-file: AWS-backed names answer NODATA until the EC2 API answers"
                );
                self.publish(None);
            }
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
            let delay = next_delay(streak, interval, max_backoff, jitter());
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let _ = self.refresh_once().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use hickory_proto::rr::{LowerName, Name};

    use super::*;
    use crate::config::Target;
    use crate::discovery::TargetInventory;
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

    fn inventory(ip: &str) -> Inventory {
        Inventory {
            targets: vec![TargetInventory {
                target: Target {
                    region: Some("ap-northeast-1".into()),
                    role_arn: None,
                },
                endpoints: vec![endpoint("vpce-0aaa", "vpc-1", &[], &[ip])],
            }],
        }
    }

    fn config() -> Arc<Config> {
        let text = r#"
[aws]
region = "ap-northeast-1"
refresh-interval = "30s"
max-backoff = "60s"
[[zone]]
origin = "internal.example.com"
[[zone.record]]
name = "@"
vpc-endpoint = "vpce-0aaa"
"#;
        Arc::new(Config::from_toml(text, "t").unwrap())
    }

    fn served(store: &SnapshotStore) -> Vec<String> {
        let snap = store.load();
        let key = LowerName::new(&Name::from_ascii("internal.example.com.").unwrap());
        snap.zones[&key].nodes[&key]
            .a
            .iter()
            .map(|r| r.data.to_string())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn schedule_backoff_stale_on_error_and_recovery() {
        use FailureReason::*;
        let script = Arc::new(Script {
            results: Mutex::new(VecDeque::from([
                Ok(inventory("10.0.1.4")), // initial load
                Err(error(Throttled)),     // +30s ±10%
                Err(error(Throttled)),     // +2s
                Err(error(ServerError)),   // +4s
                Err(error(Timeout)),       // +8s
                Ok(inventory("10.0.1.5")), // +16s
                Ok(inventory("10.0.1.5")), // +30s
            ])),
            calls: Mutex::new(Vec::new()),
        });
        let store = Arc::new(SnapshotStore::default());
        let stats = Arc::new(RefreshStats::default());
        let mut r = Refresher::new(script.clone(), config(), store.clone(), stats.clone());
        r.initial_load().await;
        assert!(stats.is_loaded());
        assert_eq!(served(&store), ["10.0.1.4"]);
        let serial = |s: &SnapshotStore| s.load().zones.values().next().unwrap().serial();
        let first_serial = serial(&store);

        let shutdown = CancellationToken::new();
        let task = tokio::spawn(r.run(shutdown.clone()));
        // Let the failures happen: answers never change while failing.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(17)).await;
            if stats.total_failures() > 0 && stats.successes.load(Ordering::Relaxed) == 1 {
                assert_eq!(served(&store), ["10.0.1.4"], "stale on error");
            }
        }
        // Calls at about 30, 32, 36, 44, 60 and 90 s; the next would be at 117 s or later.
        tokio::time::sleep(Duration::from_secs(30)).await;
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
                Ok(inventory("10.0.1.4")),
                Ok(inventory("10.0.1.4")),
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
        let before = store.load().zones.values().next().unwrap().serial();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        r.refresh_once().await.unwrap();
        assert_eq!(store.load().zones.values().next().unwrap().serial(), before);
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
        assert!(!stats.is_loaded());
        assert!(
            served(&store).is_empty(),
            "the name exists without addresses: NODATA"
        );
        assert_eq!(stats.failures(FailureReason::Other), 1);
    }
}
