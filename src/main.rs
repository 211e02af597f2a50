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
    /// Ask the EC2 API once and print what would be served (exit 1 on AWS errors).
    Discover {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn discover(config: &Config, json: bool) -> ExitCode {
    if config.aws.is_none() {
        eprintln!(
            "error: {}: nothing to discover: no vpc-endpoint records and no [[discover]] blocks",
            config.source
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(app::discover_once(config)) {
        Ok((inventory, assembled)) => {
            for w in &assembled.warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", app::render_discovery(&inventory, &assembled, json));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
        (Some(Command::CheckConfig | Command::Discover { .. }), None) => {
            eprintln!("error: this command needs --config PATH");
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
    if let Some(Command::Discover { json }) = cli.command {
        return discover(&config, json);
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
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(app::run(config, cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
