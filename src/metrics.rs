//! Prometheus metrics, exposed at `/metrics` by [`crate::http`].
//!
//! Query-path metrics are atomic increments and nothing else: prometheus-client
//! counters resolved once per label set, and our own latency histogram (per-thread
//! shards of atomic counts, merged at scrape time; prometheus-client's `Histogram` is
//! behind a lock that every worker would take on every query). Refresh and
//! snapshot metrics are read at scrape time from [`RefreshStats`] and the snapshot by
//! a collector, so the refresh loop keeps one source of truth. One registry per
//! server, so several servers in one process (tests) do not mix their numbers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::answer::{Response, Transport};
use crate::discovery::FailureReason;
use crate::refresh::RefreshStats;
use crate::snapshot::{Served, SnapshotStore};

/// What metrics need to know about an answer.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub qtype: Option<RecordType>,
    pub rcode: ResponseCode,
    pub truncated: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    transport: &'static str,
    qtype: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    r#type: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    zone: String,
    result: &'static str,
}

/// How a zone transfer ended, for `privatelink_dns_transfers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Every message sent.
    Complete,
    /// The peer stopped reading (timeout) or the connection failed.
    Failed,
    /// More than `max-transfers` at once: refused.
    Busy,
}

/// What became of one NOTIFY, for `privatelink_dns_notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyResult {
    Sent,
    /// NOERROR, with a valid TSIG when the NOTIFY was signed.
    Acknowledged,
    /// A try answered with another rcode (REFUSED, NOTAUTH, ...): not acknowledged.
    Rejected,
    GivenUp,
}

/// All metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    /// The counters of `queries` by (transport, qtype label, rcode label), resolved once:
    /// the query path then costs one atomic increment, not a lock and a hash.
    query_counters: Box<[OnceLock<Counter>]>,
    /// Per transport (UDP, TCP), resolved at start.
    truncated: [Counter; TRANSPORTS],
    dropped: [Counter; TRANSPORTS],
    malformed: [Counter; TRANSPORTS],
    latency: Arc<Latency>,
    tcp_open: Gauge,
    tcp_rejected: Counter,
    tcp_rejected_source: Counter,
    tls_handshake_failures: Counter,
    tls_not_after: prometheus_client::metrics::gauge::Gauge<i64, std::sync::atomic::AtomicI64>,
    tls_reloads: Family<OutcomeLabels, Counter>,
    /// What the follower (`[follow]`) shows; empty when not following.
    follow: Arc<crate::follow::FollowStatus>,
    refusals: Family<ReasonLabels, Counter>,
    transfers: Family<TransferLabels, Counter>,
    notify: Family<NotifyLabels, Counter>,
}

/// Every qtype label value ("other" last).
const QTYPES: [&str; 19] = [
    "A", "AAAA", "SOA", "NS", "ANY", "TXT", "CNAME", "MX", "SRV", "PTR", "HTTPS", "SVCB", "CAA",
    "DS", "DNSKEY", "AXFR", "IXFR", "none", "other",
];
/// Every rcode label value ("other" last).
const RCODES: [&str; 9] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "NOTAUTH", "BADVERS",
    "other",
];

fn transport(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    }
}

/// A bounded set of label values: the types resolvers ask, everything else "other".
/// Index into [`QTYPES`]: the types resolvers ask, everything else "other".
fn qtype_index(t: Option<RecordType>) -> usize {
    use RecordType::*;
    let Some(t) = t else { return 17 }; // "none": no parsable question
    match t {
        A => 0,
        AAAA => 1,
        SOA => 2,
        NS => 3,
        ANY => 4,
        TXT => 5,
        CNAME => 6,
        MX => 7,
        SRV => 8,
        PTR => 9,
        HTTPS => 10,
        SVCB => 11,
        CAA => 12,
        DS => 13,
        DNSKEY => 14,
        AXFR => 15,
        IXFR => 16,
        _ => 18,
    }
}

/// The mnemonic of a response code, as in metrics labels and the query log.
pub fn rcode_label(r: ResponseCode) -> &'static str {
    RCODES[rcode_index(r)]
}

/// Index into [`RCODES`].
fn rcode_index(r: ResponseCode) -> usize {
    match u16::from(r) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 4,
        5 => 5,
        9 => 6,
        16 => 7,
        _ => 8,
    }
}

impl Metrics {
    pub fn new(stats: Arc<RefreshStats>, store: Arc<SnapshotStore>) -> Self {
        let mut registry = Registry::with_prefix("privatelink_dns");
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "queries",
            "DNS queries answered, by transport, query type and response code",
            queries.clone(),
        );
        let truncated = Family::<TransportLabels, Counter>::default();
        registry.register(
            "responses_truncated",
            "Responses sent with TC=1",
            truncated.clone(),
        );
        let dropped = Family::<TransportLabels, Counter>::default();
        registry.register(
            "packets_dropped",
            "Packets not answered: shorter than a header, or not a query (QR=1)",
            dropped.clone(),
        );
        let malformed = Family::<TransportLabels, Counter>::default();
        registry.register(
            "queries_malformed",
            "Queries answered FORMERR",
            malformed.clone(),
        );
        let latency = Arc::new(Latency::default());
        registry.register_collector(Box::new(LatencyCollector(latency.clone())));
        let tcp_open = Gauge::default();
        registry.register("tcp_connections", "TCP connections open", tcp_open.clone());
        let tcp_rejected = Counter::default();
        registry.register(
            "tcp_connections_rejected",
            "TCP connections closed on accept at max-tcp-connections",
            tcp_rejected.clone(),
        );
        let tcp_rejected_source = Counter::default();
        registry.register(
            "tcp_connections_rejected_per_source",
            "TCP connections closed on accept because their source held max-tcp-connections-per-source",
            tcp_rejected_source.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "DNS-over-TLS handshakes that failed or did not finish within tcp-idle-timeout",
            tls_handshake_failures.clone(),
        );
        let tls_not_after =
            prometheus_client::metrics::gauge::Gauge::<i64, std::sync::atomic::AtomicI64>::default(
            );
        registry.register(
            "tls_certificate_not_after_timestamp_seconds",
            "When the served [tls] certificate expires (Unix time; 0 without one, or if unreadable)",
            tls_not_after.clone(),
        );
        let tls_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Loads of the [tls] certificate pair after the start, by outcome: ok, failed (the previous pair stays)",
            tls_reloads.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused or failing TSIG, by reason: query_acl, transfer_acl, transfer_tsig, transfer_tls, tsig_badkey, tsig_badsig, tsig_badtime",
            refusals.clone(),
        );
        for reason in crate::answer::Refusal::LABELS {
            let _ = refusals.get_or_create(&ReasonLabels { reason });
        }
        let transfers = Family::<TransferLabels, Counter>::default();
        registry.register(
            "transfers",
            "Zone transfers served, by type (AXFR, IXFR) and outcome (complete, failed, busy)",
            transfers.clone(),
        );
        let notify = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notify",
            "NOTIFY messages per zone: sent (each try), acknowledged, rejected (a try answered with an error rcode), given_up",
            notify.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(RefreshCollector {
            stats,
            store: store.clone(),
        }));
        let follow = Arc::new(crate::follow::FollowStatus::default());
        registry.register_collector(Box::new(FollowCollector {
            status: follow.clone(),
            store,
        }));
        Self {
            follow,
            registry,
            query_counters: (0..TRANSPORTS * QTYPES.len() * RCODES.len())
                .map(|_| OnceLock::new())
                .collect(),
            queries,
            truncated: per_transport(&truncated),
            dropped: per_transport(&dropped),
            malformed: per_transport(&malformed),
            latency,
            tcp_open,
            tcp_rejected,
            tcp_rejected_source,
            tls_handshake_failures,
            tls_not_after,
            tls_reloads,
            refusals,
            transfers,
            notify,
        }
    }

    /// Counts a refusal or TSIG failure.
    pub fn refused(&self, why: crate::answer::Refusal) {
        self.refusals
            .get_or_create(&ReasonLabels {
                reason: why.label(),
            })
            .inc();
    }

    /// Counts one zone transfer.
    pub fn transfer(&self, qtype: RecordType, outcome: TransferOutcome) {
        let labels = TransferLabels {
            r#type: if qtype == RecordType::IXFR {
                "IXFR"
            } else {
                "AXFR"
            },
            outcome: match outcome {
                TransferOutcome::Complete => "complete",
                TransferOutcome::Failed => "failed",
                TransferOutcome::Busy => "busy",
            },
        };
        self.transfers.get_or_create(&labels).inc();
    }

    /// Counts one NOTIFY event for `zone`.
    pub fn notify(&self, zone: &str, result: NotifyResult) {
        let result = match result {
            NotifyResult::Sent => "sent",
            NotifyResult::Acknowledged => "acknowledged",
            NotifyResult::GivenUp => "given_up",
            NotifyResult::Rejected => "rejected",
        };
        self.notify
            .get_or_create(&NotifyLabels {
                zone: zone.to_string(),
                result,
            })
            .inc();
    }

    /// Counts one packet and its answer (or the lack of one).
    pub fn observe(&self, t: Transport, response: Option<&Response>, elapsed: Duration) {
        let outcome = response.map(|r| Outcome {
            qtype: r.question.as_ref().map(|q| q.query_type()),
            rcode: r.rcode,
            truncated: r.truncated,
        });
        self.observe_outcome(t, outcome, elapsed);
    }

    /// [`Metrics::observe`] without a [`Response`] (the fast path has none).
    pub fn observe_outcome(&self, t: Transport, outcome: Option<Outcome>, elapsed: Duration) {
        let ti = transport_index(t);
        let Some(o) = outcome else {
            self.dropped[ti].inc();
            return;
        };
        self.latency.observe(elapsed);
        let (qt, rc) = (qtype_index(o.qtype), rcode_index(o.rcode));
        let slot = (ti * QTYPES.len() + qt) * RCODES.len() + rc;
        self.query_counters[slot]
            .get_or_init(|| {
                let labels = QueryLabels {
                    transport: transport(t),
                    qtype: QTYPES[qt],
                    rcode: RCODES[rc],
                };
                self.queries.get_or_create(&labels).clone()
            })
            .inc();
        if o.truncated {
            self.truncated[ti].inc();
        }
        if o.rcode == ResponseCode::FormErr {
            self.malformed[ti].inc();
        }
    }

    pub fn tcp_opened(&self) {
        self.tcp_open.inc();
    }

    pub fn tcp_closed(&self) {
        self.tcp_open.dec();
    }

    pub fn tcp_rejected(&self) {
        self.tcp_rejected.inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// The served certificate's notAfter (Unix seconds).
    pub fn tls_not_after(&self, at: Option<i64>) {
        self.tls_not_after.set(at.unwrap_or(0));
    }

    /// A reload of the certificate pair: "ok", or "failed" (the old pair stays).
    pub fn tls_reload(&self, outcome: &'static str) {
        self.tls_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn tcp_rejected_source(&self) {
        self.tcp_rejected_source.inc();
    }

    /// The Prometheus text exposition.
    /// The follower's status, which it updates and `/metrics` and `/readyz` read.
    pub fn follow_status(&self) -> &Arc<crate::follow::FollowStatus> {
        &self.follow
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Transports with counters of their own: UDP, TCP, TLS.
const TRANSPORTS: usize = 3;

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
    }
}

/// The counters of a per-transport family, in [`transport_index`] order.
fn per_transport(family: &Family<TransportLabels, Counter>) -> [Counter; TRANSPORTS] {
    [Transport::Udp, Transport::Tcp, Transport::Tls].map(|t| {
        family
            .get_or_create(&TransportLabels {
                transport: transport(t),
            })
            .clone()
    })
}

/// Finite buckets of the latency histogram: 1 µs · 2^i, for i in 0..15 (to ~16 ms).
const LATENCY_BUCKETS: usize = 15;
/// Shards: threads are spread over them, so workers rarely share a cache line.
const LATENCY_SHARDS: usize = 16;

/// Answer latency as atomic counts, one shard per group of threads.
#[derive(Debug, Default)]
struct Latency {
    shards: [LatencyShard; LATENCY_SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct LatencyShard {
    /// Non-cumulative counts; the last is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    fn observe(&self, elapsed: Duration) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % LATENCY_SHARDS;
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let shard = &self.shards[SHARD.with(|s| *s)];
        shard.buckets[latency_bucket(ns)].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// (sum in seconds, count, non-cumulative (upper bound, count) per bucket).
    fn merged(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = (0..=LATENCY_BUCKETS)
            .map(|i| {
                let upper = if i == LATENCY_BUCKETS {
                    f64::INFINITY
                } else {
                    1e-6 * f64::from(1u32 << i)
                };
                (upper, 0)
            })
            .collect();
        let mut sum_ns = 0u64;
        for shard in &self.shards {
            for (b, n) in buckets.iter_mut().zip(&shard.buckets) {
                b.1 += n.load(Ordering::Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(shard.sum_ns.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (sum_ns as f64 / 1e9, count, buckets)
    }
}

/// The bucket of `ns` nanoseconds: the smallest i with ns ≤ 1 µs · 2^i, else +Inf.
fn latency_bucket(ns: u64) -> usize {
    let micros = ns.div_ceil(1000);
    let i = if micros <= 1 {
        0
    } else {
        (64 - (micros - 1).leading_zeros()) as usize
    };
    i.min(LATENCY_BUCKETS)
}

#[derive(Debug)]
struct LatencyCollector(Arc<Latency>);

impl Collector for LatencyCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.0.merged();
        let mut m = e.encode_descriptor(
            "answer_duration_seconds",
            "Time to compute an answer, from query bytes to response bytes",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Reads refresh and snapshot numbers at scrape time.
#[derive(Debug)]
struct RefreshCollector {
    stats: Arc<RefreshStats>,
    store: Arc<SnapshotStore>,
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for RefreshCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let snap = self.store.load();
        gauge(&mut e, "zones", "Zones served", snap.zone_count() as f64)?;
        gauge(
            &mut e,
            "records",
            "A and AAAA records served",
            snap.record_count() as f64,
        )?;
        gauge(
            &mut e,
            "journal_bytes",
            "Bytes the IXFR journal holds over all zones (journal-max-bytes)",
            snap.journal().bytes() as f64,
        )?;
        counter(
            &mut e,
            "log_lines_dropped",
            "Log lines lost: stderr not read fast enough, or failing",
            crate::logging::dropped(),
        )?;
        if let Some(serials) = self.store.serials() {
            counter(
                &mut e,
                "state_write_failures",
                "Writes of the zones' serials to state-dir that failed (serials stay right in memory; after a restart one could go down)",
                serials.write_failures.load(Ordering::Relaxed),
            )?;
        }
        counter(
            &mut e,
            "tsig_sign_failures",
            "Responses and transfer messages to signed requests that could not be signed: not sent (a transfer stops there)",
            crate::tsig::sign_failures(),
        )?;
        counter(
            &mut e,
            "log_events_suppressed",
            "Repeated events (one per packet or connection) not logged: each is logged at most once per 10 s, with a count",
            crate::logging::suppressed(),
        )?;
        let served = &snap.served;
        gauge(
            &mut e,
            "ready",
            "1 while every discovery target has data (from AWS or a cache saved for this config)",
            f64::from(u8::from(served.ready())),
        )?;
        if served.targets.is_empty() {
            return Ok(());
        }
        encode_refreshes(&mut e, s)?;
        encode_served(&mut e, s, served)
    }
}

/// Fleet mode: each followed zone's serial, the primary's, the time since the last
/// successful check, transfers by type and outcome, expirations. Nothing when not
/// following.
#[derive(Debug)]
struct FollowCollector {
    status: Arc<crate::follow::FollowStatus>,
    store: Arc<SnapshotStore>,
}

impl Collector for FollowCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.status;
        if !s.enabled.load(Ordering::Relaxed) {
            return Ok(());
        }
        let zones = s.zones();
        let now = crate::snapshot::unix_now();
        let per_zone = |e: &mut DescriptorEncoder,
                        name: &str,
                        help: &str,
                        value: &dyn Fn(&crate::follow::ZoneStatus) -> Option<f64>|
         -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(0.0);
            let mut family = e.encode_descriptor(name, help, None, g.metric_type())?;
            for (zone, z) in &zones {
                if let Some(v) = value(z) {
                    let labels = [("zone", zone.to_string())];
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
            Ok(())
        };
        per_zone(
            &mut e,
            "follow_zone_serial",
            "SOA serial served of each followed zone (and held of the primary's catalog)",
            &|z| z.serial.map(f64::from),
        )?;
        per_zone(
            &mut e,
            "follow_primary_serial",
            "The primary's SOA serial of each followed zone, as last seen",
            &|z| z.primary_serial.map(f64::from),
        )?;
        per_zone(
            &mut e,
            "follow_seconds_since_success",
            "Seconds since the primary last answered a check of the zone",
            &|z| z.last_success.map(|t| now.saturating_sub(t) as f64),
        )?;
        per_zone(
            &mut e,
            "follow_zone_expired",
            "1 while a followed zone is past its SOA expire without contact (answered SERVFAIL)",
            &|z| Some(f64::from(u8::from(z.expired))),
        )?;
        {
            let c = ConstCounter::new(0u64);
            let mut family = e.encode_descriptor(
                "follow_transfers",
                "Checks and transfers from the primary, by type (axfr, ixfr) and outcome (ok, uptodate, failed)",
                None,
                c.metric_type(),
            )?;
            for ((kind, outcome), n) in s.transfers() {
                let labels = [("type", kind), ("outcome", outcome)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "follow_expirations",
            "Followed zones that reached their SOA expire without contact",
            s.expirations(),
        )?;
        gauge(
            &mut e,
            "follow_zones_expired",
            "Followed zones answered SERVFAIL now (past SOA expire)",
            self.store.load().expired_zones().len() as f64,
        )?;
        gauge(
            &mut e,
            "follow_loaded",
            "1 once the catalog and every member zone have had data (from the primary or cache-dir)",
            f64::from(u8::from(s.loaded.load(Ordering::Relaxed))),
        )
    }
}

/// How discovery has gone: attempts, failures by reason, the last success.
fn encode_refreshes(e: &mut DescriptorEncoder, s: &RefreshStats) -> Result<(), std::fmt::Error> {
    counter(
        e,
        "refresh_attempts",
        "Discovery attempts",
        s.attempts.load(Ordering::Relaxed),
    )?;
    counter(
        e,
        "refresh_successes",
        "Successful discoveries",
        s.successes.load(Ordering::Relaxed),
    )?;
    {
        let c = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "refresh_failures",
            "Failed discoveries, by reason",
            None,
            c.metric_type(),
        )?;
        for reason in FailureReason::ALL {
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(s.failures(reason)).encode(family.encode_family(&labels)?)?;
        }
    }
    gauge(
        e,
        "refresh_consecutive_failures",
        "Failed discoveries since the last success",
        s.consecutive_failures.load(Ordering::Relaxed) as f64,
    )?;
    gauge(
        e,
        "refresh_duration_seconds",
        "Duration of the last discovery attempt",
        s.last_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    )?;
    let last = s.last_success_unix.load(Ordering::Relaxed);
    gauge(
        e,
        "refresh_last_success_timestamp_seconds",
        "Unix time of the last successful discovery (0: never)",
        last as f64,
    )?;
    counter(
        e,
        "cache_write_failures",
        "Cache file writes that failed (the file keeps its previous data)",
        s.cache_write_failures.load(Ordering::Relaxed),
    )
}

/// The discovered data being served: its age, size and origin, and what was held
/// back or refused.
fn encode_served(
    e: &mut DescriptorEncoder,
    s: &RefreshStats,
    served: &Served,
) -> Result<(), std::fmt::Error> {
    if let Some(data) = served.oldest() {
        let now = crate::snapshot::unix_now();
        gauge(
            e,
            "snapshot_age_seconds",
            "Age of the oldest discovered data being served",
            now.saturating_sub(data) as f64,
        )?;
    }
    {
        let g = ConstGauge::new(0.0);
        let mut family = e.encode_descriptor(
            "target_data_age_seconds",
            "Age of each discovery target's data being served, by target and source (aws, cache); none for a target without data",
            None,
            g.metric_type(),
        )?;
        let now = crate::snapshot::unix_now();
        for (target, source) in &served.targets {
            let Some(source) = source else {
                continue;
            };
            let label = match source {
                crate::snapshot::DataSource::Aws { .. } => "aws",
                crate::snapshot::DataSource::Cache { .. } => "cache",
            };
            let labels = [("target", target.as_str()), ("source", label)];
            ConstGauge::new(now.saturating_sub(source.unix()) as f64)
                .encode(family.encode_family(&labels)?)?;
        }
    }
    gauge(
        e,
        "endpoints_discovered",
        "VPC endpoints in the data being served",
        served.endpoints as f64,
    )?;
    gauge(
        e,
        "serving_from_cache",
        "1 while some of the data served came from the cache file",
        f64::from(u8::from(served.from_cache())),
    )?;
    gauge(
        e,
        "targets_without_data",
        "Discovery targets with no data (their AWS-backed names answer NODATA)",
        served.missing().len() as f64,
    )?;
    let held = s.removal_held.load(Ordering::Relaxed);
    gauge(
        e,
        "removal_held",
        "1 while a discovery that would remove most AWS-backed addresses is held",
        f64::from(u8::from(held > 0)),
    )?;
    gauge(
        e,
        "removal_held_addresses",
        "Served addresses the held discovery would remove",
        held as f64,
    )?;
    gauge(
        e,
        "removal_held_until_timestamp_seconds",
        "Unix time at which the held removal applies if the same result persists (0: none held)",
        s.removal_held_until_unix.load(Ordering::Relaxed) as f64,
    )?;
    gauge(
        e,
        "discovery_names_rejected",
        "Private DNS names from the API not served: the root, a single label, or above a configured zone",
        s.rejected_names.load(Ordering::Relaxed) as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::answer;
    use crate::config::Config;

    #[test]
    fn label_indexes_match_label_names() {
        use RecordType::*;
        for t in [
            A, AAAA, SOA, NS, ANY, TXT, CNAME, MX, SRV, PTR, HTTPS, SVCB, CAA, DS, DNSKEY, AXFR,
            IXFR,
        ] {
            assert_eq!(QTYPES[qtype_index(Some(t))], t.to_string(), "{t}");
        }
        assert_eq!(QTYPES[qtype_index(Some(RecordType::NULL))], "other");
        assert_eq!(QTYPES[qtype_index(None)], "none");
        let rcodes = [
            (0, "NOERROR"),
            (1, "FORMERR"),
            (2, "SERVFAIL"),
            (3, "NXDOMAIN"),
            (4, "NOTIMP"),
            (5, "REFUSED"),
            (9, "NOTAUTH"),
            (16, "BADVERS"),
            (6, "other"),
        ];
        for (code, label) in rcodes {
            assert_eq!(
                RCODES[rcode_index(<ResponseCode as From<u16>>::from(code))],
                label,
                "{code}"
            );
        }
    }

    #[test]
    fn latency_buckets_and_merge() {
        // (nanoseconds, bucket): bucket i holds ≤ 1 µs · 2^i.
        let rows = [
            (0, 0),
            (1_000, 0),
            (1_001, 1),
            (2_000, 1),
            (2_001, 2),
            (4_000, 2),
            (4_001, 3),
            (16_384_000, 14),
            (16_384_001, 15),
            (u64::MAX, 15),
        ];
        for (ns, bucket) in rows {
            assert_eq!(latency_bucket(ns), bucket, "{ns} ns");
        }
        // Four threads, 1,000 observations each: every one counted once.
        let latency = Arc::new(Latency::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let latency = latency.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        latency.observe(Duration::from_micros(3 * (t + 1)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (sum, count, buckets) = latency.merged();
        assert_eq!(count, 4000);
        assert!((sum - 1000.0 * 30e-6).abs() < 1e-9, "{sum}");
        let n = |upper: f64| buckets.iter().find(|b| b.0 == upper).unwrap().1;
        assert_eq!(n(4e-6), 1000, "3 µs");
        assert_eq!(n(8e-6), 1000, "6 µs");
        assert_eq!(n(16e-6), 2000, "9 and 12 µs");
    }

    #[test]
    fn renders_query_and_refresh_metrics() {
        let config = Config::demo();
        let served = crate::snapshot::Served {
            published: true,
            targets: vec![
                ("region=ap-northeast-1".into(), None),
                (
                    "vpc=vpc-1".into(),
                    Some(crate::snapshot::DataSource::Cache { saved_at: 0 }),
                ),
            ],
            endpoints: 0,
        };
        let store = Arc::new(SnapshotStore::new(
            crate::app::build_snapshot(&config, None).with_served(served),
        ));
        let stats = Arc::new(RefreshStats::default());
        stats.record_failure(FailureReason::Throttled, "x");
        stats.removal_held.store(7, Ordering::Relaxed);
        stats.rejected_names.store(2, Ordering::Relaxed);
        let m = Metrics::new(stats, store.clone());
        let mut q = hickory_proto::op::Message::query();
        q.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("internal.example.com.").unwrap(),
            RecordType::AAAA,
        ));
        let r = answer(&q.to_vec().unwrap(), &store.load(), Transport::Udp);
        m.observe(Transport::Udp, r.as_ref(), Duration::from_micros(3));
        m.observe(Transport::Tcp, None, Duration::ZERO);
        let text = m.render();
        for want in [
            "privatelink_dns_queries_total{transport=\"udp\",qtype=\"AAAA\",rcode=\"NOERROR\"} 1",
            "privatelink_dns_packets_dropped_total{transport=\"tcp\"} 1",
            "privatelink_dns_answer_duration_seconds_count 1",
            "privatelink_dns_answer_duration_seconds_bucket{le=\"0.000004\"} 1",
            "privatelink_dns_answer_duration_seconds_bucket{le=\"0.000002\"} 0",
            "privatelink_dns_answer_duration_seconds_bucket{le=\"+Inf\"} 1",
            "# TYPE privatelink_dns_answer_duration_seconds histogram",
            "privatelink_dns_refresh_failures_total{reason=\"throttled\"} 1",
            "privatelink_dns_refresh_failures_total{reason=\"timeout\"} 0",
            "privatelink_dns_zones 3",
            "privatelink_dns_build_info{version=",
            "privatelink_dns_refresh_failures_total{reason=\"invalid_response\"} 0",
            "privatelink_dns_ready 0",
            "privatelink_dns_targets_without_data 1",
            "privatelink_dns_removal_held 1",
            "privatelink_dns_removal_held_addresses 7",
            "privatelink_dns_discovery_names_rejected 2",
            "privatelink_dns_cache_write_failures_total 0",
            "privatelink_dns_log_lines_dropped_total ",
            "privatelink_dns_target_data_age_seconds{target=\"vpc=vpc-1\",source=\"cache\"} ",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
