//! What a reload cannot change: the settings Pingora fixes when the process
//! starts (`[server]` threads and shutdown timings, the upgrade socket, the
//! listening sockets and what each expects first, the admin address).
//!
//! A pure comparison of two validated configs; refusing the reload and
//! telling the operator about `--upgrade` is the reload module's job.

use std::net::SocketAddr;

use super::{Config, Listener};

impl Config {
    /// The settings that differ between `self` (running) and `next` but
    /// cannot change in a running process — Pingora fixes them at start —
    /// each named by its TOML path (listener indexes are `next`'s, with the
    /// address). Empty when `next` can be reloaded in place; otherwise the
    /// reload is refused as a whole and the operator restarts or runs
    /// `--upgrade`. Listeners are matched by address, so reordering them
    /// changes nothing.
    pub fn restart_required(&self, next: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let (a, b) = (&self.server, &next.server);
        if a.threads != b.threads {
            out.push("server.threads".to_owned());
        }
        if a.grace_period != b.grace_period {
            out.push("server.grace_period".to_owned());
        }
        if a.graceful_shutdown_timeout != b.graceful_shutdown_timeout {
            out.push("server.graceful_shutdown_timeout".to_owned());
        }
        if a.upgrade_sock != b.upgrade_sock {
            out.push("server.upgrade_sock".to_owned());
        }
        if self.admin.as_ref().map(|a| a.listen) != next.admin.as_ref().map(|a| a.listen) {
            out.push("admin.listen".to_owned());
        }
        let running = |addr: SocketAddr| self.listeners.iter().position(|l| l.listen == addr);
        for (j, new) in next.listeners.iter().enumerate() {
            let addr = new.listen;
            let Some(i) = running(addr) else {
                out.push(format!("listener[{j}].listen ({addr} added)"));
                continue;
            };
            let old: &Listener = &self.listeners[i];
            if old.tls.is_some() != new.tls.is_some() {
                out.push(format!("listener[{j}].tls (turned on or off, {addr})"));
            }
            if old.proxy_protocol != new.proxy_protocol {
                out.push(format!("listener[{j}].proxy_protocol ({addr})"));
            }
        }
        for (i, old) in self.listeners.iter().enumerate() {
            if !next.listeners.iter().any(|l| l.listen == old.listen) {
                out.push(format!(
                    "listener ({} removed; it was listener[{i}])",
                    old.listen
                ));
            }
        }
        out
    }
}
