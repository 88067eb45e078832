//! The runtime control API:
//! `POST /api/upstreams/{upstream}/servers/{addr}/{drain|maint|ready}`.
//!
//! - drain: no new requests or upgrades (their keys walk the ring to the
//!   next server); open tunnels end after the pool's `drain_timeout`.
//! - maint: no traffic at all; open tunnels end now, with close frames.
//! - ready: back in service; a pending drain or close order is taken back.
//!
//! The state lives in the server's lasting state, which a reload carries
//! over while the server stays in the config. Who may call this is decided
//! before (see `guard`); this module parses the path and applies the order.

use std::net::SocketAddr;

use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::runtime::Runtime;
use crate::upstream::AdminState;

/// What an operator asks of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop new traffic; end tunnels after `drain_timeout`.
    Drain,
    /// Stop all traffic; end tunnels now.
    Maint,
    /// Back in service.
    Ready,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "drain" => Some(Action::Drain),
            "maint" => Some(Action::Maint),
            "ready" => Some(Action::Ready),
            _ => None,
        }
    }

    /// Its name in the path.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Drain => "drain",
            Action::Maint => "maint",
            Action::Ready => "ready",
        }
    }
}

/// A parsed control path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `[upstream.NAME]`.
    pub upstream: String,
    /// The server's address as written in the path (percent-decoded).
    pub server: String,
    /// What to do.
    pub action: Action,
}

/// Parse `/api/upstreams/{upstream}/servers/{addr}/{action}`. `None` when
/// the path does not have that shape (a 404).
pub fn parse(path: &str) -> Option<Command> {
    let rest = path.strip_prefix("/api/upstreams/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [upstream, "servers", server, action] = parts.as_slice() else {
        return None;
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some(Command {
        upstream: decode(upstream)?,
        server: decode(server)?,
        action: Action::parse(action)?,
    })
}

/// Whether `path` belongs to the control API (for the 405 on other methods).
pub fn is_control_path(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Why a command could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such upstream.
    #[error("no upstream named {0:?}")]
    NoUpstream(String),
    /// No such server in the upstream.
    #[error("upstream {upstream:?} has no server {server:?}")]
    NoServer {
        /// The upstream.
        upstream: String,
        /// The address asked for.
        server: String,
    },
}

/// Apply `cmd` to the running configuration; the JSON answer describes the
/// server after the change.
pub fn apply(rt: &Runtime, cmd: &Command) -> Result<Value, CommandError> {
    let pool = rt
        .pools
        .get(&cmd.upstream)
        .ok_or_else(|| CommandError::NoUpstream(cmd.upstream.clone()))?;
    let no_server = || CommandError::NoServer {
        upstream: cmd.upstream.clone(),
        server: cmd.server.clone(),
    };
    let addr: SocketAddr = cmd.server.parse().map_err(|_| no_server())?;
    let server = pool.server(addr).ok_or_else(no_server)?;
    let before = server.state_name();
    let drain = pool.settings.drain_timeout;
    match cmd.action {
        Action::Drain => {
            server.set_admin_state(AdminState::Draining);
            server.tunnels.drain(drain);
        }
        Action::Maint => {
            server.set_admin_state(AdminState::Maint);
            server.tunnels.close_now();
        }
        Action::Ready => {
            server.set_admin_state(AdminState::Up);
            server.tunnels.keep();
        }
    }
    let after = server.state_name();
    tracing::info!(
        upstream = %cmd.upstream,
        server = %addr,
        action = cmd.action.as_str(),
        before,
        after,
        open_tunnels = server.tunnels.open(),
        "admin: server state changed"
    );
    Ok(json!({
        "upstream": cmd.upstream,
        "server": addr.to_string(),
        "action": cmd.action.as_str(),
        "previous_state": before,
        "state": after,
        "open_tunnels": server.tunnels.open(),
        "tunnels_end_in_secs": match cmd.action {
            Action::Drain => Some(drain.as_secs_f64()),
            Action::Maint => Some(0.0),
            Action::Ready => None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_with_encoded_addresses() {
        let c = parse("/api/upstreams/chat/servers/127.0.0.1:9001/drain").unwrap();
        assert_eq!(
            c,
            Command {
                upstream: "chat".into(),
                server: "127.0.0.1:9001".into(),
                action: Action::Drain
            }
        );
        let v6 = parse("/api/upstreams/chat/servers/%5B%3A%3A1%5D%3A9001/maint").unwrap();
        assert_eq!(v6.server, "[::1]:9001");
        assert_eq!(v6.action, Action::Maint);
        for bad in [
            "/api/upstreams/chat/servers/127.0.0.1:9001/reboot",
            "/api/upstreams/chat/servers/127.0.0.1:9001",
            "/api/upstreams/chat/127.0.0.1:9001/ready",
            "/api/upstreams/chat/servers/127.0.0.1:9001/ready/",
            "/api/upstreams/chat/servers/%FF/ready",
            "/stats",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    fn runtime(servers: &str, previous: Option<&Runtime>) -> Runtime {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[route]]\nupstream = \"chat\"\n\
             [upstream.chat]\ndrain_timeout = \"7s\"\nservers = [{servers}]\n"
        );
        let config = crate::config::Config::from_toml_str(&text).unwrap();
        Runtime::build(&config, previous, std::path::Path::new("")).unwrap()
    }

    fn cmd(server: &str, action: Action) -> Command {
        Command {
            upstream: "chat".into(),
            server: server.into(),
            action,
        }
    }

    #[test]
    fn orders_change_state_and_tunnel_orders() {
        use crate::tunnel::control::Order;
        let rt = runtime(r#"{ addr = "127.0.0.1:9001" }"#, None);
        let s = rt.pools["chat"].servers[0].clone();
        let answer = apply(&rt, &cmd("127.0.0.1:9001", Action::Drain)).unwrap();
        assert_eq!(answer["state"], "draining");
        assert_eq!(answer["previous_state"], "up");
        assert_eq!(answer["tunnels_end_in_secs"], 7.0);
        assert!(matches!(s.tunnels.order(), Order::CloseAt(_)));
        assert!(!s.is_available());
        apply(&rt, &cmd("127.0.0.1:9001", Action::Maint)).unwrap();
        assert_eq!(s.state_name(), "maint");
        assert_eq!(s.tunnels.order(), Order::CloseNow);
        apply(&rt, &cmd("127.0.0.1:9001", Action::Ready)).unwrap();
        assert_eq!(s.state_name(), "up");
        assert_eq!(s.tunnels.order(), Order::Keep);
    }

    #[test]
    fn unknown_upstream_or_server() {
        let rt = runtime(r#"{ addr = "127.0.0.1:9001" }"#, None);
        let mut c = cmd("127.0.0.1:9001", Action::Drain);
        c.upstream = "nope".into();
        assert_eq!(apply(&rt, &c), Err(CommandError::NoUpstream("nope".into())));
        for server in ["127.0.0.1:9002", "not-an-address"] {
            assert!(matches!(
                apply(&rt, &cmd(server, Action::Drain)),
                Err(CommandError::NoServer { .. })
            ));
        }
    }

    #[test]
    fn the_state_survives_a_rebuild_that_keeps_the_server() {
        let first = runtime(
            r#"{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002" }"#,
            None,
        );
        apply(&first, &cmd("127.0.0.1:9001", Action::Maint)).unwrap();
        // Reweighted and its neighbour removed: still the same server.
        let second = runtime(r#"{ addr = "127.0.0.1:9001", weight = 3 }"#, Some(&first));
        assert_eq!(second.pools["chat"].servers[0].state_name(), "maint");
    }
}
