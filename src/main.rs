//! The `privatelink-dns` binary. Everything it does is in the library: see `cli.rs`.

/// jemalloc, because glibc's malloc fragments across reloads of many small zones:
/// 10,000 zones grew from 42 to 55 MB resident after one reload (73 to 89 MB from a
/// TOML config) with the same live heap, and `malloc_trim` could not give it back
/// (issue #15; docs/performance.md has the runs). The query path does not allocate.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Freed pages go back to the OS at once, not after jemalloc's default 10 s decay: the
/// resident size follows the data right after a reload.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 34] = b"dirty_decay_ms:0,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    privatelink_dns::cli::main()
}
