//! The systems the proxy benchmark compares, and how each is configured:
//! pure functions from a [`Site`] to a config file, so the report can
//! quote them and the tests can check them. Starting them is
//! [`crate::harness`]'s job.
//!
//! Every peer gets one worker/thread, consistent hashing on `X-Session-Id`
//! (the key every load connection carries), upstream keep-alive, an hour
//! of WebSocket idle time, and — on TLS listeners — the same ECDSA P-256
//! certificate. `connect_timeout_s` is the setting a reload changes, the
//! same harmless change for every peer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// No proxy: the load goes straight to the first backend listener (the
    /// ceiling of the load core).
    Direct,
    /// ringway-proxy.
    Ringway,
    /// nginx.
    Nginx,
    /// HAProxy.
    Haproxy,
    /// Caddy.
    Caddy,
}

impl PeerKind {
    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Direct => "direct",
            PeerKind::Ringway => "ringway",
            PeerKind::Nginx => "nginx",
            PeerKind::Haproxy => "haproxy",
            PeerKind::Caddy => "caddy",
        }
    }

    /// The command printing its version, for the report.
    pub fn version_cmd(self) -> &'static [&'static str] {
        match self {
            PeerKind::Nginx => &["nginx", "-v"],
            PeerKind::Haproxy => &["haproxy", "-v"],
            PeerKind::Caddy => &["caddy", "version"],
            PeerKind::Direct | PeerKind::Ringway => &[],
        }
    }
}

/// `[log] access` of ringway-proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// No `[log]` table (for builds that do not know it).
    Omit,
    /// `access = "off"`.
    Off,
    /// `access = "<path>"`.
    File(PathBuf),
}

/// The certificate every TLS listener serves.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Everything a peer's config depends on.
#[derive(Debug, Clone)]
pub struct Site {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// ringway-proxy's admin listener; Caddy's admin endpoint (for reload).
    pub admin: SocketAddr,
    /// The backend listeners.
    pub upstreams: Vec<SocketAddr>,
    /// Serve TLS with this certificate.
    pub tls: Option<TlsPaths>,
    /// Upstream connect timeout, seconds: what a reload changes.
    pub connect_timeout_s: u32,
    /// ringway-proxy's access log.
    pub access_log: AccessLog,
    /// The peer's own directory (pid file, logs, temp files, PEM bundle).
    pub dir: PathBuf,
}

/// The file name of `kind`'s config.
pub fn file_name(kind: PeerKind) -> &'static str {
    match kind {
        PeerKind::Ringway => "ringway.toml",
        PeerKind::Nginx => "nginx.conf",
        PeerKind::Haproxy => "haproxy.cfg",
        PeerKind::Caddy => "Caddyfile",
        PeerKind::Direct => "",
    }
}

/// `kind`'s config for `site`.
pub fn config(kind: PeerKind, site: &Site) -> String {
    match kind {
        PeerKind::Ringway => ringway(site),
        PeerKind::Nginx => nginx(site),
        PeerKind::Haproxy => haproxy(site),
        PeerKind::Caddy => caddy(site),
        PeerKind::Direct => String::new(),
    }
}

/// ringway-proxy, with keys of shared/DESIGN.md's config only.
fn ringway(s: &Site) -> String {
    let log = match &s.access_log {
        AccessLog::Omit => String::new(),
        AccessLog::Off => "[log]\naccess = \"off\"\n\n".to_owned(),
        AccessLog::File(p) => format!("[log]\naccess = \"{}\"\nformat = \"json\"\n\n", p.display()),
    };
    let tls = s.tls.as_ref().map_or(String::new(), |t| {
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}\n",
            t.cert.display(),
            t.key.display()
        )
    });
    let mut servers = String::new();
    for a in &s.upstreams {
        let _ = writeln!(servers, "  {{ addr = \"{a}\" }},");
    }
    format!(
        "[server]\nthreads = 1\ngrace_period = \"1s\"\n\n{log}[admin]\nlisten = \"{admin}\"\n\n\
         [[listener]]\nlisten = \"{listen}\"\n{tls}\n\
         [[route]]\nhost = \"*\"\npath_prefix = \"/\"\nupstream = \"app\"\n\n\
         [upstream.app]\nbalance = \"consistent-hash\"\nhash_key = [\"header:x-session-id\"]\n\
         balance_factor = 0\nconnect_timeout = \"{ct}s\"\nidle_timeout = \"1h\"\nservers = [\n{servers}]\n",
        admin = s.admin,
        listen = s.listen,
        ct = s.connect_timeout_s,
    )
}

/// The frame of every nginx config: one worker, files in `dir`.
fn nginx_frame(dir: &Path, http: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\npid {d}/nginx.pid;\n\
         error_log stderr warn;\nevents {{ worker_connections 19000; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {http}}}\n"
    )
}

/// nginx: `hash $http_x_session_id consistent`, keep-alive upstream, the
/// Upgrade map, an hour of read timeout for WebSockets.
fn nginx(s: &Site) -> String {
    let servers: String = s
        .upstreams
        .iter()
        .map(|a| format!("    server {a};\n"))
        .collect();
    let (ssl, certs) = match &s.tls {
        Some(t) => (
            " ssl",
            format!(
                "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
                 \x20   ssl_session_cache shared:SSL:10m;\n",
                t.cert.display(),
                t.key.display()
            ),
        ),
        None => ("", String::new()),
    };
    nginx_frame(
        &s.dir,
        &format!(
            "  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
             \x20 upstream app {{\n    hash $http_x_session_id consistent;\n{servers}\
             \x20   keepalive 64;\n    keepalive_requests 1000000;\n  }}\n\
             \x20 server {{\n    listen {listen}{ssl} backlog=4096;\n{certs}    location / {{\n\
             \x20     proxy_pass http://app;\n      proxy_http_version 1.1;\n\
             \x20     proxy_set_header Upgrade $http_upgrade;\n\
             \x20     proxy_set_header Connection $connection_upgrade;\n\
             \x20     proxy_connect_timeout {ct}s;\n\
             \x20     proxy_read_timeout 3600s;\n      proxy_send_timeout 3600s;\n    }}\n  }}\n",
            listen = s.listen,
            ct = s.connect_timeout_s,
        ),
    )
}

/// The HTTP origin behind the peers: one nginx worker answering `200 ok`
/// on every address (cheaper per request than any proxy in front of it).
pub fn nginx_origin(dir: &Path, listens: &[SocketAddr]) -> String {
    let listens: String = listens
        .iter()
        .map(|a| format!("    listen {a} backlog=4096;\n"))
        .collect();
    nginx_frame(
        dir,
        &format!("  server {{\n{listens}    location / {{ return 200 'ok'; }}\n  }}\n"),
    )
}

/// HAProxy in master-worker mode (`-W`, reloaded by SIGUSR2): one thread,
/// `balance hdr(X-Session-Id)` consistent, `timeout tunnel 3600s`.
fn haproxy(s: &Site) -> String {
    let servers: String = s
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| format!("    server b{} {a}\n", i + 1))
        .collect();
    let ssl = if s.tls.is_some() {
        format!(" ssl crt {}", s.dir.join("combined.pem").display())
    } else {
        String::new()
    };
    format!(
        "global\n    nbthread 1\n    maxconn 9950\n    ssl-default-bind-options ssl-min-ver TLSv1.2\n\n\
         defaults\n    mode http\n    maxconn 9950\n    timeout connect {ct}s\n    timeout client 60s\n\
         \x20   timeout server 60s\n    timeout tunnel 3600s\n    timeout client-fin 5s\n\
         \x20   option http-keep-alive\n\n\
         frontend fe\n    bind {listen}{ssl}\n    default_backend app\n\n\
         backend app\n    balance hdr(X-Session-Id)\n    hash-type consistent\n    http-reuse safe\n{servers}",
        ct = s.connect_timeout_s,
        listen = s.listen,
    )
}

/// Caddy: `lb_policy header X-Session-Id`, admin endpoint on for `caddy
/// reload`, no automatic HTTPS, HTTP/1.1 and 2 only (no QUIC listener).
fn caddy(s: &Site) -> String {
    let ups: Vec<String> = s.upstreams.iter().map(|a| a.to_string()).collect();
    let (scheme, tls) = match &s.tls {
        Some(t) => (
            "https",
            format!("\ttls {} {}\n", t.cert.display(), t.key.display()),
        ),
        None => ("http", String::new()),
    };
    // Tabs, as `caddy fmt` writes them (Caddy warns about anything else).
    format!(
        "{{\n\tadmin {admin}\n\tauto_https off\n\tservers {{\n\t\tprotocols h1 h2\n\t}}\n}}\n\n\
         {scheme}://{listen} {{\n\tbind {ip}\n{tls}\treverse_proxy {ups} {{\n\
         \t\tlb_policy header X-Session-Id\n\t\ttransport http {{\n\t\t\tdial_timeout {ct}s\n\t\t}}\n\t}}\n}}\n",
        admin = s.admin,
        listen = s.listen,
        ip = s.listen.ip(),
        ups = ups.join(" "),
        ct = s.connect_timeout_s,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_hashes_the_session_header_and_reloads_the_timeout() {
        let mut site = Site {
            listen: "127.0.0.1:8080".parse().unwrap(),
            admin: "127.0.0.1:9090".parse().unwrap(),
            upstreams: vec![
                "127.0.0.1:9001".parse().unwrap(),
                "127.0.0.1:9002".parse().unwrap(),
            ],
            tls: None,
            connect_timeout_s: 3,
            access_log: AccessLog::Off,
            dir: PathBuf::from("/tmp/x"),
        };
        let r = config(PeerKind::Ringway, &site);
        assert!(r.contains("threads = 1") && r.contains("hash_key = [\"header:x-session-id\"]"));
        assert!(r.contains("[log]\naccess = \"off\"") && r.contains("connect_timeout = \"3s\""));
        assert!(r.contains("{ addr = \"127.0.0.1:9002\" },") && !r.contains("tls ="));
        let n = config(PeerKind::Nginx, &site);
        assert!(
            n.contains("hash $http_x_session_id consistent;") && n.contains("worker_processes 1;")
        );
        assert!(
            n.contains("proxy_connect_timeout 3s;") && n.contains("listen 127.0.0.1:8080 backlog")
        );
        let h = config(PeerKind::Haproxy, &site);
        assert!(h.contains("balance hdr(X-Session-Id)") && h.contains("nbthread 1"));
        assert!(h.contains("server b2 127.0.0.1:9002") && h.contains("timeout connect 3s"));
        let c = config(PeerKind::Caddy, &site);
        assert!(c.contains("reverse_proxy 127.0.0.1:9001 127.0.0.1:9002 {"));
        assert!(
            c.contains("lb_policy header X-Session-Id") && c.contains("http://127.0.0.1:8080 {")
        );

        site.tls = Some(TlsPaths {
            cert: "/c/cert.pem".into(),
            key: "/c/key.pem".into(),
        });
        site.access_log = AccessLog::Omit;
        let r = config(PeerKind::Ringway, &site);
        assert!(
            r.contains("tls = { cert = \"/c/cert.pem\", key = \"/c/key.pem\" }")
                && !r.contains("[log]")
        );
        assert!(config(PeerKind::Nginx, &site).contains("listen 127.0.0.1:8080 ssl backlog"));
        assert!(config(PeerKind::Haproxy, &site)
            .contains("bind 127.0.0.1:8080 ssl crt /tmp/x/combined.pem"));
        assert!(config(PeerKind::Caddy, &site)
            .contains("https://127.0.0.1:8080 {\n\tbind 127.0.0.1\n\ttls /c/cert.pem /c/key.pem"));
        let o = nginx_origin(Path::new("/tmp/x"), &site.upstreams);
        assert!(
            o.contains("listen 127.0.0.1:9001 backlog=4096;") && o.contains("return 200 'ok';")
        );
    }
}
