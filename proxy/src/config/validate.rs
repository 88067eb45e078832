//! Validation, top level: split the TOML document into its sections, hand
//! each to its validator, and validate the small process-wide sections
//! (`[server]`, `[log]`, `[admin]`) here.
//!
//! Every problem goes into one [`Problems`] list with its TOML path, so a
//! file is either accepted whole or rejected with every error at once. A
//! section that fails to deserialize is skipped, never guessed at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::limits::validate_limits;
use super::listeners::validate_listeners;
use super::names;
use super::problems::{Problems, Span};
use super::raw::*;
use super::routes::validate_routes;
use super::upstreams::validate_upstream;
use super::*;

/// The top-level keys a file may have.
const TOP_LEVEL_KEYS: &str = "server, log, admin, listener, route, upstream, limits";

/// Longest Unix socket path: `sun_path` holds 108 bytes with the final NUL.
/// Pingora unwraps the socket address it builds from `upgrade_sock`, so a
/// longer path would abort an `--upgrade` start.
const MAX_SOCKET_PATH: usize = 107;

impl Config {
    /// Read a config file and validate it.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::from_toml_str(&text)
    }

    /// Parse and validate TOML text, reporting every error found.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("TOML syntax: {}", e.to_string().trim_end()),
            }])
        })?;
        let mut p = Problems::default();

        let server: RawServer = section(&mut p, &mut table, "server").unwrap_or_default();
        let log: RawLog = section(&mut p, &mut table, "log").unwrap_or_default();
        let admin: Option<RawAdmin> = section(&mut p, &mut table, "admin");
        let listeners: Vec<(String, RawListener)> = items(&mut p, &mut table, "listener");
        let routes: Vec<(String, RawRoute)> = items(&mut p, &mut table, "route");
        let mut upstream_names: Vec<String> = Vec::new();
        let mut upstreams: Vec<(String, RawUpstream)> = Vec::new();
        match table.remove("upstream") {
            Some(toml::Value::Table(t)) => {
                for (name, v) in t {
                    let at = format!("upstream.{name}");
                    if let Err(why) = names::pool_name(&name) {
                        p.add(at.clone(), why);
                    }
                    upstream_names.push(name.clone());
                    if let Some(u) = p.typed::<RawUpstream>(&at, v) {
                        upstreams.push((name, u));
                    }
                }
            }
            Some(_) => p.add("upstream", "must be a table of [upstream.NAME] sections"),
            None => {}
        }
        let limits: Option<RawLimits> = section(&mut p, &mut table, "limits");
        for key in table.keys() {
            p.add(
                key.as_str(),
                format!("unknown key (expected {TOP_LEVEL_KEYS})"),
            );
        }

        let limits = limits
            .map(|l| validate_limits(&mut p, l))
            .unwrap_or_default();
        let config = Config {
            server: validate_server(&mut p, server),
            log: validate_log(&mut p, log),
            admin: admin.and_then(|a| validate_admin(&mut p, a)),
            listeners: validate_listeners(&mut p, listeners, &limits),
            routes: validate_routes(&mut p, routes, &upstream_names),
            upstreams: upstreams
                .into_iter()
                .map(|(name, raw)| {
                    let u = validate_upstream(&mut p, &name, raw);
                    (name, u)
                })
                .collect(),
            limits,
        };
        if p.0.is_empty() {
            Ok(config)
        } else {
            // [limits] is checked first (listeners depend on it); report in
            // the order of the sections of a file, each in its own order.
            p.0.sort_by_key(|e| section_rank(&e.path));
            Err(ConfigErrors(p.0))
        }
    }
}

/// Where an error's top-level section comes in [`TOP_LEVEL_KEYS`]; file-level
/// errors first, unknown tables last.
fn section_rank(path: &str) -> usize {
    if path.is_empty() {
        return 0;
    }
    let section = path.split(['.', '[']).next().unwrap_or_default();
    TOP_LEVEL_KEYS
        .split(", ")
        .position(|k| k == section)
        .map_or(usize::MAX, |i| i + 1)
}

/// A `[NAME]` table, deserialized on its own; `None` when absent or broken.
fn section<T: DeserializeOwned>(
    p: &mut Problems,
    table: &mut toml::Table,
    name: &str,
) -> Option<T> {
    table.remove(name).and_then(|v| p.typed::<T>(name, v))
}

/// `[[NAME]]` arrays: each element deserialized on its own, so one bad
/// element does not hide the others.
fn items<T: DeserializeOwned>(
    p: &mut Problems,
    table: &mut toml::Table,
    name: &str,
) -> Vec<(String, T)> {
    match table.remove(name) {
        None => Vec::new(),
        Some(toml::Value::Array(values)) => values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let path = format!("{name}[{i}]");
                p.typed::<T>(&path, v).map(|t| (path, t))
            })
            .collect(),
        Some(_) => {
            p.add(
                name,
                format!("must be an array of tables: write [[{name}]]"),
            );
            Vec::new()
        }
    }
}

fn validate_server(p: &mut Problems, raw: RawServer) -> ServerSettings {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    ServerSettings {
        threads: p.count("server.threads", raw.threads, 1..=1024, cores.min(1024)),
        grace_period: p.duration(
            "server.grace_period",
            raw.grace_period.as_deref(),
            Span::ZeroOk,
            Duration::from_secs(30),
        ),
        graceful_shutdown_timeout: p.duration(
            "server.graceful_shutdown_timeout",
            raw.graceful_shutdown_timeout.as_deref(),
            Span::ZeroOk,
            Duration::from_secs(5),
        ),
        upgrade_sock: raw.upgrade_sock.filter(|path| upgrade_sock_ok(p, path)),
        max_connections: p.count_opt_why(
            "server.max_connections",
            raw.max_connections,
            1..=1_000_000,
            "leave it out to derive it from the open-file limit",
        ),
    }
}

fn upgrade_sock_ok(p: &mut Problems, path: &Path) -> bool {
    const AT: &str = "server.upgrade_sock";
    let text = path.to_string_lossy();
    if !path.is_absolute() {
        p.add(AT, format!("{text:?} must be an absolute path"));
        false
    } else if text.len() > MAX_SOCKET_PATH {
        p.add(
            AT,
            format!(
                "{} bytes is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes)",
                text.len()
            ),
        );
        false
    } else if text.bytes().any(|b| b.is_ascii_control()) {
        p.add(AT, "must not contain control characters");
        false
    } else {
        true
    }
}

fn validate_log(p: &mut Problems, raw: RawLog) -> LogSettings {
    let access = match raw.access.as_deref() {
        None | Some("stdout") => AccessLog::Stdout,
        Some("off") => AccessLog::Off,
        Some(path) if path.is_empty() || path.bytes().any(|b| b.is_ascii_control()) => {
            p.add(
                "log.access",
                format!("{path:?} is not \"stdout\", \"off\" or a file path"),
            );
            AccessLog::Stdout
        }
        Some(path) => AccessLog::File(PathBuf::from(path)),
    };
    LogSettings {
        access,
        format: raw.format.unwrap_or(LogFormat::Json),
        query: raw.query.unwrap_or(false),
        buffer_lines: p.count("log.buffer", raw.buffer, 1..=1_000_000, 65536),
    }
}

fn validate_admin(p: &mut Problems, raw: RawAdmin) -> Option<AdminSettings> {
    if let Some(token) = &raw.token {
        if let Err(why) = names::admin_token(token) {
            p.add("admin.token", why);
        }
    }
    let listen = p.addr("admin.listen", &raw.listen)?;
    if raw.token.is_none() && !listen.ip().to_canonical().is_loopback() {
        p.add(
            "admin.token",
            format!(
                "required when admin.listen is not a loopback address ({listen}): anyone who reaches it could drain or stop servers"
            ),
        );
    }
    Some(AdminSettings {
        listen,
        token: raw.token,
    })
}
