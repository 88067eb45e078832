//! The command line: `ringway-proxy --config PATH [--check | --upgrade]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use std::io::IsTerminal;

use crate::app;
use crate::config::Config;
use crate::runtime::Runtime;

/// Command-line options, nginx-style: `-t` checks the config and exits.
#[derive(Debug, Parser)]
#[command(
    name = "ringway-proxy",
    version,
    about = "Edge reverse proxy for real-time applications"
)]
pub struct Cli {
    /// The TOML config file.
    #[arg(short, long, value_name = "PATH")]
    pub config: PathBuf,
    /// Validate the config, print every error with its TOML path, and exit 0 (ok) or 1.
    #[arg(short = 't', long = "check", alias = "test")]
    pub check: bool,
    /// Take the listening sockets over from a running instance (sent SIGQUIT).
    #[arg(short, long)]
    pub upgrade: bool,
}

/// Parse arguments, then check or run. Errors go to stderr with a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}: configuration is invalid:", cli.config.display());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        // Build the runtime as a reload would: certificate files are read
        // and checked too.
        match Runtime::build(&config, None, &crate::config::base_dir(&cli.config)) {
            Ok(runtime) => {
                for warning in crate::reload::expiry_warnings(&runtime) {
                    eprintln!("warning: {warning}");
                }
            }
            Err(errors) => {
                eprintln!("{}: configuration is invalid:", cli.config.display());
                for e in &errors.0 {
                    eprintln!("  {e}");
                }
                return ExitCode::FAILURE;
            }
        }
        println!("{}: configuration ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging();
    match app::run(config, &cli.config, cli.upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", cli.config.display());
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: under systemd, stderr goes to the journal,
    // and a log file must not carry escape codes.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
