//! privatelink-dns: authoritative DNS for AWS PrivateLink endpoint names.
//!
//! On-premises resolvers forward the private DNS names of VPC interface endpoints
//! here; we answer them authoritatively from an in-memory table.
//!
//! Data flows one way:
//!
//! ```text
//! sources: config, and aws::Ec2Discovery (→ plain discovery::Inventory)
//!   → discovery::assemble (pure: config + inventory → zones)
//!   → snapshot::build   (pure: zones, names, record sets, SOA serials)
//!   → SnapshotStore     (arc-swap: readers never lock, writers publish whole snapshots)
//!   → answer::answer    (pure: query bytes + snapshot → response bytes)
//!   → server            (UDP/TCP shells that move bytes)
//! ```
//!
//! - [`config`]: file types and their check into a runtime config (errors name file, line, key).
//! - [`aws`]: EC2 API calls; the only module that sees aws-sdk types.
//! - [`discovery`]: the plain inventory and its assembly with the config into zones.
//! - [`refresh`]: the loop that keeps the snapshot in sync; backoff, stale-on-error.
//! - [`cache`]: the last good inventory on disk, for cold starts.
//! - [`snapshot`]: the immutable table and its builder.
//! - [`answer`]: every protocol decision; no I/O.
//! - [`server`]: sockets, TCP framing, limits.
//! - [`app`]: wiring, binding, shutdown.
//! - [`logging`]: stderr through a bounded queue; a lost line is counted, never a panic.

pub mod answer;
pub mod app;
pub mod aws;
pub mod cache;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod fast;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod refresh;
pub mod server;
pub mod snapshot;
pub mod wire;
pub mod zonefile;
