//! privatelink-dns: authoritative DNS for AWS PrivateLink endpoint names.
//!
//! On-premises resolvers forward the private DNS names of VPC interface endpoints
//! here; we answer them authoritatively from an in-memory table.
//!
//! Data flows one way:
//!
//! ```text
//! sources: config (zones: static names indexed once, from TOML or a zone file, into
//!          names::Names; AWS-backed records that say where their addresses come from),
//!          aws::Ec2Discovery (→ plain discovery::Inventory: endpoints, EKS clusters),
//!          cache (the last one, on disk),
//!          follow::Follower (zones transferred from a primary, published whole)
//!   → discovery::assemble  (pure: config + inventory → zones with addresses)
//!   → snapshot::build      (pure: one index of lower-cased wire names, pre-encoded RRsets;
//!                          a zone with only static names shares the config's index)
//!   → SnapshotStore::update (the one writer; readers never lock; computes each
//!                          zone's IXFR delta once, and wakes notify)
//!   → Snapshot::lookup     (the one lookup) → answer::answer | fast::answer_udp
//!                          (two encoders of the same result: same bytes)
//!   → server, http         (UDP/TCP/HTTP shells that move bytes)
//! ```
//!
//! - [`config`]: file types and their check into a runtime config (errors name file, line, key).
//! - [`aws`]: EC2 API calls (and EKS, for cluster endpoints); the only module that
//!   sees aws-sdk types.
//! - [`discovery`]: the plain inventory, and its assembly with the config into zones.
//! - [`refresh`]: the loop that keeps the snapshot in sync; backoff, stale-on-error,
//!   the mass-removal hold; the only caller of [`snapshot::SnapshotStore::update`]
//!   besides a reload of a config without AWS.
//! - [`cache`]: the last good inventory on disk, for cold starts (bounded, regular files only).
//! - [`state`]: the last SOA serial served per zone, persisted (`state-dir`), so none goes down.
//! - [`names`]: one zone's names and pre-encoded RRsets in one buffer, and their builder.
//! - [`snapshot`]: the immutable table (with what it serves and where that came from),
//!   its builder and its lookup.
//! - [`wire`]: header constants, the UDP size rule and the question name both encoders share.
//! - [`access`]: access lists, TSIG keys and transfer policies (plain data).
//! - [`answer`]: every protocol decision; no I/O (queries, TSIG, whether to transfer).
//! - [`tsig`]: verify a signed request and sign answers and transfer messages
//!   (hickory-proto's `TSigner` does the HMAC).
//! - [`transfer`]: a zone as AXFR / IXFR messages, made one at a time.
//! - [`catalog`]: RFC 9432 catalog zones: member IDs and the catalog's records (pure).
//! - [`journal`]: each transferable zone's recent changes as deltas, for IXFR (plain
//!   data: no snapshot types).
//! - [`notify`]: NOTIFY to secondaries on every serial change.
//! - [`follow`]: fleet mode (`[follow]`): the primary's catalog and zones, transferred
//!   (IXFR/AXFR, TSIG), checked whole, published through the one writer, kept on disk.
//! - [`fast`]: the allocation-free UDP encoder for plain A/AAAA queries.
//! - [`server`]: sockets, TCP framing, limits (the global caps, and what one source may hold).
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` on its own accept loop.
//! - [`metrics`]: query and refresh metrics (OpenMetrics).
//! - [`app`]: wiring, binding, reload, shutdown.
//! - [`cli`]: the command line: `run`, `check-config`, `discover`, `probe`.
//! - [`tls`]: the DNS-over-TLS certificate pair, loaded, checked and swapped on reload.
//! - [`logging`]: stderr through a bounded queue; a lost line is counted, never a panic;
//!   events a client can repeat at will are throttled, the DNS library's own are off.
//! - [`zonefile`]: RFC 1035 master files: a built zone written out, a zone file read in
//!   (errors give line and column, never the file's text).

pub mod access;
pub mod answer;
pub mod app;
pub mod aws;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod fast;
pub mod follow;
pub mod http;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod refresh;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod transfer;
pub mod tsig;
pub mod wire;
pub mod zonefile;
