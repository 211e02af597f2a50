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

/// Sets up logging: `RUST_LOG` wins over the config's level.
pub fn init(level: &str, format: LogFormat) -> Guard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("privatelink-dns-log")
        .finish(Stderr);
    let _ = QUEUE_FULL.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
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
