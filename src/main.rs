//! The `privatelink-dns` binary: parse the command line, load the config, hand over.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use privatelink_dns::app;
use privatelink_dns::config::{Config, DEMO_NAME, LogFormat};

/// Exit code for usage and configuration errors (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    version,
    about = "Authoritative DNS for AWS PrivateLink endpoint names"
)]
struct Cli {
    /// Config file (TOML). Without it, a built-in demo config is served on 127.0.0.1:5300.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format; overrides `[log] format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config file and exit: 0 if valid, 64 with the problem if not.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match (&cli.command, &cli.config) {
        (Some(Command::CheckConfig), None) => {
            eprintln!("error: check-config needs --config PATH");
            return ExitCode::from(EXIT_USAGE);
        }
        (_, Some(path)) => Config::load(path),
        (None, None) => Ok(Config::demo()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        println!("{}: ok ({} zones)", config.source, config.zones.len());
        return ExitCode::SUCCESS;
    }
    app::init_tracing(
        &config.log.level,
        cli.log_format.unwrap_or(config.log.format),
    );
    if config.source == DEMO_NAME {
        tracing::info!(listen = ?config.server.listen, "no --config given: serving the built-in demo config");
    } else {
        tracing::info!(config = %config.source, "config loaded");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
