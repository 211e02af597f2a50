//! privatelink-dns: authoritative DNS for AWS PrivateLink endpoint names.
//!
//! On-premises resolvers forward the private DNS names of VPC interface endpoints
//! here; we answer them authoritatively from an in-memory table.
//!
//! Data flows one way:
//!
//! ```text
//! sources (config today, EC2 discovery later)
//!   → snapshot::build   (pure: zones, names, record sets, SOA serials)
//!   → SnapshotStore     (arc-swap: readers never lock, writers publish whole snapshots)
//!   → answer::answer    (pure: query bytes + snapshot → response bytes)
//!   → server            (UDP/TCP shells that move bytes)
//! ```
//!
//! - [`config`]: file types and their check into a runtime config (errors name file, line, key).
//! - [`snapshot`]: the immutable table and its builder.
//! - [`answer`]: every protocol decision; no I/O.
//! - [`server`]: sockets, TCP framing, limits.
//! - [`app`]: wiring, binding, shutdown.

pub mod answer;
pub mod app;
pub mod aws;
pub mod cache;
pub mod config;
pub mod discovery;
pub mod refresh;
pub mod server;
pub mod snapshot;
pub mod zonefile;
