//! The `privatelink-dns` binary. Everything it does is in the library: see `cli.rs`.

fn main() -> std::process::ExitCode {
    privatelink_dns::cli::main()
}
