//! The command line: parse, load the config (exit 64 on a problem), hand over.
//!
//! `privatelink-dns [--config PATH]` serves; `check-config` validates; `discover`
//! runs one EC2 discovery and prints what would be served; `probe URL` is a
//! health-check client for images without curl (Docker HEALTHCHECK, ECS).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app;
use crate::aws::Ec2Discovery;
use crate::config::{Config, DEMO_NAME, LogFormat};
use crate::discovery::{self, Assembled, Discover, DiscoveryError, Inventory};
use crate::logging;

/// A line on stderr that cannot panic (stderr may be closed).
macro_rules! say {
    ($($arg:tt)*) => { logging::say(format_args!($($arg)*)) };
}

/// Exit code for usage and configuration errors (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Environment variable holding the whole config, for platforms that pass settings
/// as variables (ECS secrets from SSM Parameter Store). `--config` wins.
pub const CONFIG_TEXT_ENV: &str = "PRIVATELINK_DNS_CONFIG_TOML";

#[derive(Parser)]
#[command(
    version,
    about = "Authoritative DNS for AWS PrivateLink endpoint names"
)]
struct Cli {
    /// Config file (TOML). Without it (and without $PRIVATELINK_DNS_CONFIG_TOML), a
    /// built-in demo config is served on 127.0.0.1:5300.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "PRIVATELINK_DNS_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Log format; overrides `[log] format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config and exit: 0 if valid, 64 with the problem if not.
    CheckConfig,
    /// Ask the EC2 API once and print what would be served (exit 1 on AWS errors).
    Discover {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// GET an http://host:port/path URL; exit 0 on 200, 1 otherwise (health checks).
    Probe {
        /// e.g. http://127.0.0.1:9153/readyz
        url: String,
    },
}

/// The whole program; `main.rs` only calls this.
pub fn main() -> ExitCode {
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
    if let Some(Command::Probe { url }) = &cli.command {
        return match probe(url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                say!("probe {url}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match load(&cli) {
        Ok(config) => config,
        Err(e) => {
            say!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({} zones)",
                config.source,
                config.zones.len()
            );
            return ExitCode::SUCCESS;
        }
        Some(Command::Discover { json }) => return discover(&config, json),
        _ => {}
    }
    let _log = logging::init(
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
    let result = runtime.block_on(app::run(config, cli.config));
    // Dropping a runtime waits for every blocking task without a bound (a stuck
    // getaddrinfo in the SDK, a cache write to a hung volume): one second at most.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            say!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> Result<Config, String> {
    if let Some(path) = &cli.config {
        return Config::load(path).map_err(|e| e.to_string());
    }
    if let Ok(text) = std::env::var(CONFIG_TEXT_ENV) {
        return Config::from_toml(&text, &format!("${CONFIG_TEXT_ENV}")).map_err(|e| e.to_string());
    }
    if matches!(
        cli.command,
        Some(Command::CheckConfig | Command::Discover { .. })
    ) {
        return Err("this command needs --config PATH".to_string());
    }
    Ok(Config::demo())
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        say!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn discover(config: &Config, json: bool) -> ExitCode {
    if config.aws.is_none() {
        say!(
            "error: {}: nothing to discover: no vpc-endpoint records and no [[discover]] blocks",
            config.source
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(discover_once(config)) {
        Ok((inventory, assembled)) => {
            for w in &assembled.warnings {
                say!("warning: {w}");
            }
            let _ = write!(
                std::io::stdout(),
                "{}",
                render_discovery(&inventory, &assembled, json)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One discovery for `discover`: what the config would serve now.
async fn discover_once(config: &Config) -> Result<(Inventory, Assembled), DiscoveryError> {
    let Some(source) = Ec2Discovery::for_config(config).await else {
        return Ok((Inventory::default(), discovery::assemble(config, None)));
    };
    let inventory = source.discover().await?;
    let assembled = discovery::assemble(config, Some(&inventory));
    Ok((inventory, assembled))
}

/// Renders [`discover_once`]'s result as a table, or as JSON.
fn render_discovery(inventory: &Inventory, assembled: &Assembled, json: bool) -> String {
    if json {
        let doc = serde_json::json!({
            "records": assembled.provenance,
            "skipped": assembled.skipped,
            "endpoints": inventory.targets,
            "warnings": assembled.warnings,
        });
        return match serde_json::to_string_pretty(&doc) {
            Ok(text) => text + "\n",
            Err(e) => format!("{{\"error\": \"cannot encode the discovery as JSON: {e}\"}}\n"),
        };
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "TYPE".to_string(),
        "ADDRESS".to_string(),
        "ENDPOINT".to_string(),
        "AZ".to_string(),
    ]];
    for p in &assembled.provenance {
        let endpoint = if p.inbound_resolver_only {
            format!("{} (for on-prem: inbound-resolver only)", p.endpoint)
        } else {
            p.endpoint.clone()
        };
        rows.push([
            p.name.clone(),
            p.rtype.to_string(),
            p.address.to_string(),
            endpoint,
            p.availability_zone.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let endpoints: usize = inventory.targets.iter().map(|t| t.endpoints.len()).sum();
    let clusters: usize = inventory.targets.iter().map(|t| t.clusters.len()).sum();
    out.push_str(&format!(
        "{} addresses from {endpoints} interface endpoints{}\n",
        assembled.provenance.len(),
        if clusters > 0 {
            format!(" and {clusters} EKS clusters")
        } else {
            String::new()
        }
    ));
    for s in &assembled.skipped {
        out.push_str(&format!("skipped: {} ({})\n", s.endpoint, s.reason));
    }
    out
}

/// A minimal HTTP/1.0 GET: enough for our own /healthz and /readyz.
fn probe(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr = host
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    match reply.get(9..12) {
        Some("200") => Ok(()),
        _ => Err(reply.lines().next().unwrap_or("no reply").to_string()),
    }
}
