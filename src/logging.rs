//! Logging that cannot hurt the daemon: a line goes to stderr from one background
//! thread, through a bounded queue; a full queue (stderr not read) drops the line, a
//! failed write (stderr closed, EPIPE) drops it too, and both are counted. Nothing on
//! a task's path waits for stderr, and nothing panics on it.
//!
//! (tracing-subscriber's own writer reports a failed write with `eprintln!`, which
//! panics when stderr is gone; a DNS server must not die because nobody reads its
//! logs.)

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::config::LogFormat;

/// Lines the background writer could not write.
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
/// The queue's own count of lines dropped because it was full.
static QUEUE_FULL: std::sync::OnceLock<ErrorCounter> = std::sync::OnceLock::new();

/// Log lines lost so far (queue full, or stderr failing).
pub fn dropped() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed) + QUEUE_FULL.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Lines held for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// Stderr, with every error swallowed and counted.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::io::stderr().write_all(buf).is_err() {
            WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Flushes the queue when dropped, within two seconds. Keep it until the process exits.
pub struct Guard(Option<WorkerGuard>);

impl Drop for Guard {
    /// tracing-appender's guard waits for its writer and reports a stuck one with
    /// `println!`, which panics if stdout is closed: it is dropped on a thread of its
    /// own, and the wait for that thread is bounded.
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else {
            return;
        };
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let flushed = std::thread::Builder::new()
            .name("privatelink-dns-log-flush".into())
            .spawn(move || {
                drop(guard);
                let _ = done.send(());
            });
        if flushed.is_ok() {
            let _ = finished.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// A repeated event (one per packet or connection, which a client can cause at will)
/// logged at most once per [`THROTTLE_INTERVAL`], with the count of those not
/// logged in between; each one not logged is counted in
/// [`suppressed`] (`privatelink_dns_log_events_suppressed_total`).
#[derive(Debug, Default)]
pub struct Throttle {
    /// When this event was last logged: milliseconds since [`epoch`], plus 1 (0: never).
    last: AtomicU64,
    skipped: AtomicU64,
}

/// How often a throttled event is logged at most.
pub const THROTTLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Events not logged by a [`Throttle`] so far.
pub fn suppressed() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl Throttle {
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many were not
    /// since the last one logged; `None` (and counted) otherwise.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(epoch().elapsed().as_millis() as u64 + 1)
    }

    /// [`Throttle::allow`] at `now`, milliseconds since [`epoch`] plus 1.
    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= THROTTLE_INTERVAL.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The filter: `RUST_LOG` if set (and valid), else the config's level, with the DNS
/// library's own events left out: hickory-proto logs a WARN for some malformed
/// packets, which anyone who can send a packet could turn into a log flood. (Our code
/// counts malformed packets in metrics instead.) Directives that name `hickory`
/// themselves are taken as written.
pub fn filter(level: &str, rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    let chosen = rust_log
        .filter(|v| tracing_subscriber::EnvFilter::try_new(v).is_ok())
        .unwrap_or(level);
    let mut directives = chosen.to_string();
    if !chosen.contains("hickory") {
        directives.push_str(",hickory_proto=off,hickory_net=off");
    }
    tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
}

/// Sets up logging: `RUST_LOG` wins over the config's level.
pub fn init(level: &str, format: LogFormat) -> Guard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("privatelink-dns-log")
        .finish(Stderr);
    let _ = QUEUE_FULL.set(writer.error_counter());
    let filter = filter(level, std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Guard(installed.ok().map(|()| guard))
}

/// Writes one line to stderr, if it can (the binary's last words: `error: …`).
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_library_is_quiet_unless_named() {
        for (level, rust_log, want) in [
            ("info", None, "hickory_proto=off"),
            ("debug", Some("trace"), "hickory_proto=off"),
            ("info", Some("not a [filter"), "hickory_proto=off"),
        ] {
            let f = filter(level, rust_log).to_string();
            assert!(f.contains(want) && f.contains("hickory_net=off"), "{f}");
        }
        let f = filter("info,hickory_proto=debug", None).to_string();
        assert!(!f.contains("hickory_proto=off"), "{f}");
        let f = filter("info", Some("warn,hickory_proto=warn")).to_string();
        assert!(!f.contains("=off"), "{f}");
    }

    #[test]
    fn a_throttled_event_is_logged_once_then_counted() {
        let t = Throttle::new();
        let before = suppressed();
        let interval = THROTTLE_INTERVAL.as_millis() as u64;
        assert_eq!(t.allow_at(5), Some(0));
        for i in 0..1000 {
            assert_eq!(t.allow_at(6 + i), None);
        }
        assert_eq!(t.allow_at(4 + interval), None);
        assert!(suppressed() - before >= 1001);
        // Due again after the interval: the count of those left out comes with it.
        assert_eq!(t.allow_at(5 + interval), Some(1001));
        assert_eq!(t.allow_at(6 + interval), None);
    }
}
