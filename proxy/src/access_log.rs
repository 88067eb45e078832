//! The access log: one line per request and one per tunnel (when it closes),
//! JSON or logfmt, to stdout or a file.
//!
//! Writing never blocks a request: finished records go into a bounded queue
//! that a dedicated thread formats and writes; when the queue is full the
//! record is dropped and counted (`dropped`). SIGUSR1 reopens the file, so
//! logrotate works as it does for nginx; a reload can change the target and
//! format. The sticky key is logged by its source kind (`cookie`, `query`,
//! …), never its value, which is often a session id.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{AccessLog as Target, LogFormat, LogSettings};
use crate::conn::ConnInfo;
use crate::forwarding::Forwarding;
use crate::h1::request::RequestHead;
use crate::sticky::KeySource;

/// One finished request or tunnel.
#[derive(Debug, Clone)]
pub struct Record {
    time: SystemTime,
    client: IpAddr,
    listener: usize,
    method: String,
    host: String,
    path: String,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration: Duration,
    upstream: Option<String>,
    server: Option<SocketAddr>,
    key: Option<KeySource>,
    upgrade: bool,
    tunnel: Option<(Duration, &'static str)>,
    request_id: String,
    error: Option<String>,
}

/// A record being filled in while a request runs; empty (and free) when the
/// access log is off.
#[derive(Debug, Default)]
pub struct Entry(Option<Box<Record>>);

impl Entry {
    /// Start the record of a request (nothing when the log is off).
    pub fn start(
        log: &LogSettings,
        info: &ConnInfo,
        head: &RequestHead,
        buf: &[u8],
        fwd: &Forwarding,
    ) -> Entry {
        if log.access == Target::Off {
            return Entry(None);
        }
        let target = String::from_utf8_lossy(head.target.of(buf));
        let path = if log.query {
            target.into_owned()
        } else {
            target.split('?').next().unwrap_or_default().to_owned()
        };
        Entry(Some(Box::new(Record {
            time: SystemTime::now(),
            client: fwd.client_ip,
            listener: info.listener,
            method: head.method.as_str().to_owned(),
            host: String::from_utf8_lossy(head.host(buf)).into_owned(),
            path,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream: None,
            server: None,
            key: None,
            upgrade: false,
            tunnel: None,
            request_id: fwd.request_id.as_str().to_owned(),
            error: None,
        })))
    }

    /// A record started from parts (the HTTP/2 path).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        log: &LogSettings,
        listener: usize,
        method: &str,
        host: &str,
        target: &str,
        fwd: &Forwarding,
    ) -> Entry {
        if log.access == Target::Off {
            return Entry(None);
        }
        let path = if log.query {
            target.to_owned()
        } else {
            target.split('?').next().unwrap_or_default().to_owned()
        };
        Entry(Some(Box::new(Record {
            time: SystemTime::now(),
            client: fwd.client_ip,
            listener,
            method: method.to_owned(),
            host: host.to_owned(),
            path,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream: None,
            server: None,
            key: None,
            upgrade: false,
            tunnel: None,
            request_id: fwd.request_id.as_str().to_owned(),
            error: None,
        })))
    }

    /// The upstream the route sent it to.
    pub fn upstream(&mut self, name: &str) {
        if let Some(r) = &mut self.0 {
            r.upstream = Some(name.to_owned());
        }
    }

    /// The server that got it.
    pub fn server(&mut self, addr: SocketAddr) {
        if let Some(r) = &mut self.0 {
            r.server = Some(addr);
        }
    }

    /// Where the sticky key came from.
    pub fn key_source(&mut self, key: Option<KeySource>) {
        if let Some(r) = &mut self.0 {
            r.key = key;
        }
    }

    /// Mark it as a WebSocket upgrade.
    pub fn upgrade(&mut self) {
        if let Some(r) = &mut self.0 {
            r.upgrade = true;
        }
    }

    /// Finish a request: its status (0 if the client got none), bytes, and
    /// any error.
    pub fn finish(
        &mut self,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
        started: Instant,
        error: Option<&str>,
    ) -> Option<Record> {
        let mut r = self.0.take()?;
        r.status = status;
        r.bytes_in = bytes_in;
        r.bytes_out = bytes_out;
        r.duration = started.elapsed();
        r.error = error.map(str::to_owned);
        Some(*r)
    }

    /// Finish a tunnel when it closes: status 101, its lifetime and why it ended.
    pub fn finish_tunnel(
        mut self,
        started: Instant,
        open_for: Duration,
        end: &'static str,
    ) -> Option<Record> {
        let mut r = self.0.take()?;
        r.status = 101;
        r.duration = started.elapsed();
        r.tunnel = Some((open_for, end));
        Some(*r)
    }
}

impl Record {
    fn render(&self, format: LogFormat, out: &mut String) {
        let time = humantime::format_rfc3339_millis(self.time);
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let mut fields: Vec<(&str, Value)> = vec![
            ("time", Value::Str(time.to_string())),
            ("client", Value::Str(self.client.to_string())),
            ("listener", Value::Int(self.listener as u64)),
            ("method", Value::Str(self.method.clone())),
            ("host", Value::Str(self.host.clone())),
            ("path", Value::Str(self.path.clone())),
            ("status", Value::Int(u64::from(self.status))),
            ("bytes_in", Value::Int(self.bytes_in)),
            ("bytes_out", Value::Int(self.bytes_out)),
            ("duration_ms", Value::Num(ms(self.duration))),
        ];
        fields.push((
            "upstream",
            self.upstream.clone().map_or(Value::Null, Value::Str),
        ));
        fields.push((
            "server",
            self.server
                .map_or(Value::Null, |s| Value::Str(s.to_string())),
        ));
        fields.push((
            "key",
            self.key
                .map_or(Value::Null, |k| Value::Str(k.as_str().to_owned())),
        ));
        fields.push(("upgrade", Value::Bool(self.upgrade)));
        if let Some((open, end)) = self.tunnel {
            fields.push(("tunnel_ms", Value::Num(ms(open))));
            fields.push(("tunnel_end", Value::Str(end.to_owned())));
        }
        fields.push(("request_id", Value::Str(self.request_id.clone())));
        if let Some(e) = &self.error {
            fields.push(("error", Value::Str(e.clone())));
        }
        match format {
            LogFormat::Json => {
                let map: serde_json::Map<String, serde_json::Value> = fields
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.json()))
                    .collect();
                let _ = write!(out, "{}", serde_json::Value::Object(map));
            }
            LogFormat::Logfmt => {
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}=");
                    v.logfmt(out);
                }
            }
        }
        out.push('\n');
    }
}

enum Value {
    Str(String),
    Int(u64),
    Num(f64),
    Bool(bool),
    Null,
}

impl Value {
    fn json(self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s),
            Value::Int(n) => serde_json::Value::from(n),
            Value::Num(n) => serde_json::Number::from_f64(n)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Null => serde_json::Value::Null,
        }
    }

    fn logfmt(&self, out: &mut String) {
        match self {
            Value::Str(s) => {
                let plain = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
                if plain {
                    out.push_str(s);
                } else {
                    out.push('"');
                    for c in s.chars() {
                        match c {
                            '"' => out.push_str("\\\""),
                            '\\' => out.push_str("\\\\"),
                            '\n' => out.push_str("\\n"),
                            c if c.is_control() => {
                                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                            }
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
            }
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Null => out.push('-'),
        }
    }
}

/// What the writer thread is told.
enum Msg {
    Line(Box<Record>),
    Reopen,
}

#[derive(Debug, Clone, PartialEq)]
struct WriterConfig {
    target: Target,
    format: LogFormat,
}

/// The handle the request path writes through.
pub struct AccessLog {
    tx: Mutex<Option<SyncSender<Msg>>>,
    config: Arc<Mutex<WriterConfig>>,
    enabled: AtomicBool,
    /// Records dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Records written.
    pub written: Arc<AtomicU64>,
    /// Write or open errors.
    pub errors: Arc<AtomicU64>,
}

impl AccessLog {
    /// Start the writer for `settings`.
    pub fn start(settings: &LogSettings) -> io::Result<AccessLog> {
        let config = Arc::new(Mutex::new(WriterConfig {
            target: settings.access.clone(),
            format: settings.format,
        }));
        let (tx, rx) = sync_channel(settings.buffer_lines.max(1));
        let log = AccessLog {
            tx: Mutex::new(Some(tx)),
            config: config.clone(),
            enabled: AtomicBool::new(settings.access != Target::Off),
            dropped: Arc::default(),
            written: Arc::default(),
            errors: Arc::default(),
        };
        // Open once here so a bad path fails at start, not silently later.
        if let Target::File(path) = &settings.access {
            open_file(path)?;
        }
        let (written, errors) = (log.written.clone(), log.errors.clone());
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer_loop(rx, config, written, errors))?;
        Ok(log)
    }

    /// Queue a record; drops (and counts) it when the queue is full.
    pub fn write(&self, record: Record) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(Box::new(record))) {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Reopen the file (SIGUSR1).
    pub fn reopen(&self) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            // A full queue will reach the Reopen soon enough; never block.
            let _ = tx.try_send(Msg::Reopen);
        }
    }

    /// Apply new settings (a reload). The file is checked before the switch.
    pub fn reconfigure(&self, settings: &LogSettings) -> io::Result<()> {
        if let Target::File(path) = &settings.access {
            open_file(path)?;
        }
        let next = WriterConfig {
            target: settings.access.clone(),
            format: settings.format,
        };
        let mut current = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if *current != next {
            *current = next;
            drop(current);
            self.enabled.store(settings.access != Target::Off, Relaxed);
            self.reopen();
        }
        Ok(())
    }
}

fn open_file(path: &PathBuf) -> io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}

enum Sink {
    Stdout(io::Stdout),
    File(io::BufWriter<std::fs::File>),
    Off,
}

fn open_sink(config: &WriterConfig) -> io::Result<Sink> {
    Ok(match &config.target {
        Target::Off => Sink::Off,
        Target::Stdout => Sink::Stdout(io::stdout()),
        Target::File(p) => Sink::File(io::BufWriter::with_capacity(64 * 1024, open_file(p)?)),
    })
}

fn writer_loop(
    rx: Receiver<Msg>,
    config: Arc<Mutex<WriterConfig>>,
    written: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let current = || config.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut cfg = current();
    let mut sink = open_sink(&cfg).unwrap_or_else(|e| {
        errors.fetch_add(1, Relaxed);
        tracing::error!(error = %e, "access log: cannot open; lines are dropped until SIGUSR1 or a reload");
        Sink::Off
    });
    let mut line = String::with_capacity(512);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Write everything queued, then flush once.
        while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                Msg::Reopen => {
                    flush(&mut sink);
                    cfg = current();
                    sink = match open_sink(&cfg) {
                        Ok(s) => s,
                        Err(e) => {
                            errors.fetch_add(1, Relaxed);
                            tracing::error!(error = %e, "access log: reopen failed");
                            Sink::Off
                        }
                    };
                }
                Msg::Line(record) => {
                    line.clear();
                    record.render(cfg.format, &mut line);
                    let result = match &mut sink {
                        Sink::Stdout(s) => s.lock().write_all(line.as_bytes()),
                        Sink::File(f) => f.write_all(line.as_bytes()),
                        Sink::Off => Ok(()),
                    };
                    match result {
                        Ok(()) => {
                            written.fetch_add(1, Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }
        flush(&mut sink);
    }
}

fn flush(sink: &mut Sink) {
    match sink {
        Sink::Stdout(s) => {
            let _ = s.lock().flush();
        }
        Sink::File(f) => {
            let _ = f.flush();
        }
        Sink::Off => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH,
            client: "10.0.0.1".parse().unwrap(),
            listener: 0,
            method: "GET".into(),
            host: "example.com".into(),
            path: "/a b".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 12,
            duration: Duration::from_micros(1500),
            upstream: Some("chat".into()),
            server: Some("127.0.0.1:9001".parse().unwrap()),
            key: Some(KeySource::Cookie),
            upgrade: false,
            tunnel: None,
            request_id: "abc".into(),
            error: None,
        }
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut out = String::new();
        record().render(LogFormat::Json, &mut out);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["key"], "cookie");
        assert_eq!(v["server"], "127.0.0.1:9001");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn logfmt_quotes_what_needs_it() {
        let mut out = String::new();
        let mut r = record();
        r.error = Some("said \"no\"".into());
        r.tunnel = Some((Duration::from_secs(2), "idle"));
        r.render(LogFormat::Logfmt, &mut out);
        assert!(out.contains(" path=\"/a b\" "), "{out}");
        assert!(out.contains(" method=GET "), "{out}");
        assert!(out.contains(" tunnel_ms=2000 tunnel_end=idle "), "{out}");
        assert!(out.contains(" error=\"said \\\"no\\\"\""), "{out}");
    }
}
