//! TLS for the end-to-end tests: a test CA that signs ECDSA P-256 leaf
//! certificates into a temp dir (rcgen), and clients that trust it —
//! rustls handshakes that report the certificate they were served,
//! HTTP/1.1 and HTTP/2 GETs over TLS, WSS connections, and a client that
//! speaks HTTP/2 frame by frame ([`h2raw`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A client TLS connection.
pub type Tls = TlsStream<TcpStream>;
/// A WebSocket over a client TLS connection.
pub type Wss = WebSocketStream<Tls>;

/// A certificate authority for one test, with the directory its files go in.
pub struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
    /// The CA certificate (PEM), for `ca_file`.
    pub ca_file: PathBuf,
    /// Where [`TestCa::leaf`] writes.
    pub dir: tempfile::TempDir,
}

/// What a leaf certificate says, beyond its names.
#[derive(Debug, Clone, Default)]
pub struct LeafOpts {
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// The subject's common name (default: the first name).
    pub common_name: Option<String>,
    /// The serial number.
    pub serial: Option<u64>,
    /// Expires this long from now (default: rcgen's far future).
    pub expires_in: Option<Duration>,
}

/// A leaf certificate and its key, written as PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate chain file (the leaf alone).
    pub cert: PathBuf,
    /// The private key file (PKCS#8).
    pub key: PathBuf,
    /// The certificate, as a handshake presents it.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA (ECDSA P-256) named `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca cert");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).expect("write ca");
        TestCa {
            key,
            cert,
            ca_file,
            dir,
        }
    }

    /// A path in this CA's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sign a leaf for DNS `names` (and `opts.ips`), written to
    /// `<tag>.pem` and `<tag>.key` in this CA's directory.
    pub fn leaf(&self, tag: &str, names: &[&str], opts: LeafOpts) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .subject_alt_names
            .extend(opts.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let cn = opts
            .common_name
            .clone()
            .or_else(|| names.first().map(|n| n.to_string()))
            .unwrap_or_else(|| tag.to_owned());
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(serial) = opts.serial {
            params.serial_number = Some(SerialNumber::from(serial));
        }
        if let Some(left) = opts.expires_in {
            let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
            params.not_before = now - Duration::from_secs(3600);
            params.not_after = now + left;
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        let leaf = Leaf {
            cert: self.path(&format!("{tag}.pem")),
            key: self.path(&format!("{tag}.key")),
            der: cert.der().to_vec(),
        };
        write_atomically(&leaf.cert, cert.pem().as_bytes());
        write_atomically(&leaf.key, key.serialize_pem().as_bytes());
        leaf
    }

    /// A client config trusting this CA only, offering `alpn`. Each call
    /// is a fresh config, so no session is resumed from an earlier one.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("add the test CA");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Write `bytes` to `path` by rename, so a reader sees the old or the new
/// file whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Handshake with `addr`, verifying the certificate for `name`; the SNI
/// extension carries `name` unless `send_sni` is false.
pub async fn handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
    send_sni: bool,
) -> Result<Tls, String> {
    let mut config = config;
    if !send_sni {
        let mut c = (*config).clone();
        c.enable_sni = false;
        config = Arc::new(c);
    }
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).ok();
        tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("handshake with {addr} as {name:?}: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| format!("handshake with {addr} timed out"))?
}

/// The end-entity certificate the server presented.
pub fn served_cert(tls: &Tls) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c: &CertificateDer<'_>| c.to_vec())
        .unwrap_or_default()
}

/// The ALPN protocol agreed on.
pub fn alpn(tls: &Tls) -> Option<String> {
    tls.get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// An HTTP response: status, fields (names lowercased), body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header fields, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Response {
    /// The first value of `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.1 with `Host: host`, on `tls` (or any stream),
/// reading the response by its `Content-Length`.
pub async fn h1_get<S>(stream: &mut S, host: &str, path: &str) -> Result<Response, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringway-tests\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = resp.parse(&buf).map_err(|e| e.to_string())? {
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let status = resp.code.unwrap_or(0);
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < len + length {
                    let mut chunk = [0u8; 8192];
                    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("closed inside the body".to_owned());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[len..len + length]).into_owned();
                return Ok(Response {
                    status,
                    headers,
                    body,
                });
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "closed before a whole head: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "no response within 10 s".to_owned())?
}

/// `GET https://authority/path` over HTTP/2 on `tls` (which must have
/// agreed on `h2`).
pub async fn h2_get(tls: Tls, authority: &str, path: &str) -> Result<Response, String> {
    let exchange = async {
        let (client, conn) = h2::client::handshake(tls)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
        let req = http::Request::get(format!("https://{authority}{path}"))
            .body(())
            .map_err(|e| e.to_string())?;
        let (resp, _) = client
            .send_request(req, true)
            .map_err(|e| format!("h2 send: {e}"))?;
        let resp = resp.await.map_err(|e| format!("h2 response: {e}"))?;
        let (parts, mut body) = resp.into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("h2 body: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no h2 response within 10 s".to_owned())?
}

/// Open `wss://name/path` at `addr` (SNI and verification for `name`).
pub async fn wss_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
    path: &str,
) -> Result<Wss, String> {
    let tls = handshake(addr, config, name, true).await?;
    let upgrade = tokio_tungstenite::client_async(format!("wss://{name}{path}"), tls);
    match tokio::time::timeout(Duration::from_secs(10), upgrade).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("upgrade {path}: {e}")),
        Err(_) => Err(format!("upgrade {path}: timed out")),
    }
}

/// Send `msg` and expect it echoed back unchanged, within 10 s.
pub async fn wss_echo(ws: &mut Wss, msg: &str) -> Result<(), String> {
    ws.send(Message::Text(msg.into()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => return Err("no echo within 10 s".into()),
            Ok(None) => return Err("connection ended".into()),
            Ok(Some(Err(e))) => return Err(format!("websocket error: {e}")),
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == msg => return Ok(()),
            Ok(Some(Ok(Message::Text(t)))) => return Err(format!("sent {msg:?}, got {t:?}")),
            Ok(Some(Ok(Message::Close(c)))) => return Err(format!("closed: {c:?}")),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Run `ringway-proxy --config <config> --check`: exit code and everything
/// it printed.
pub fn check(config: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(crate::target_bin("ringway-proxy"))
        .arg("--config")
        .arg(config)
        .arg("--check")
        .output()
        .expect("run ringway-proxy --check");
    (out.status.code(), crate::printed(&out))
}

/// A client config trusting only the CA certificates in `ca_pem` (a PEM
/// file some other tool made, e.g. `certs/make-dev-certs.sh`), offering
/// `alpn`.
pub fn client_trusting(ca_pem: &Path, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca_pem).map_err(|e| format!("{}: {e}", ca_pem.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_pem.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_pem.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", ca_pem.display()));
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client that speaks HTTP/2 frame by frame (RFC 9113), with a few
/// hand-encoded HPACK fields and no dynamic table, so a test sees what the
/// server sends as sent and can send what no well-behaved client would.
pub mod h2raw {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

    use super::Tls;

    // Frame types, flags, settings and error codes of RFC 9113.
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;

    /// A frame as read off the wire.
    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// Whether this frame ends `stream` (END_STREAM or RST_STREAM).
        pub fn ends(&self, stream: u32) -> bool {
            let end = matches!(self.kind, DATA | HEADERS) && self.flags & END_STREAM != 0;
            self.stream == stream && (end || self.kind == RST_STREAM)
        }

        /// The error code of a RST_STREAM or GOAWAY.
        pub fn code(&self) -> u32 {
            let at = if self.kind == GOAWAY { 4 } else { 0 };
            u32::from_be_bytes(self.payload[at..at + 4].try_into().expect("code"))
        }
    }

    /// A frame's bytes.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A request's HEADERS frame: `method` (GET or POST) `https://a.test/`
    /// and `extra` fields, HPACK literals that never touch the dynamic table.
    pub fn request(stream: u32, method: &str, extra: &[(&str, &str)], flags: u8) -> Vec<u8> {
        request_to(stream, method, "/", extra, flags)
    }

    /// [`request`] for `path`.
    pub fn request_to(
        stream: u32,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        flags: u8,
    ) -> Vec<u8> {
        let mut block = vec![if method == "POST" { 0x83 } else { 0x82 }, 0x87];
        let literal = |block: &mut Vec<u8>, value: &str| {
            assert!(value.len() < 127);
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        };
        if path == "/" {
            block.push(0x84); // :path /
        } else {
            block.push(0x04); // :path, not indexed
            literal(&mut block, path);
        }
        block.push(0x01); // :authority, not indexed
        literal(&mut block, "a.test");
        for (name, value) in extra {
            block.push(0x00);
            literal(&mut block, name);
            literal(&mut block, value);
        }
        frame(HEADERS, flags, stream, &block)
    }

    /// A RST_STREAM frame.
    pub fn rst(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// What the peer did next.
    pub enum Next {
        /// A frame.
        Frame(Frame),
        /// EOF or a failed read: the connection is gone.
        Closed,
        /// Nothing within the time given.
        Quiet,
    }

    /// The proxy's side of a raw connection, frame by frame.
    pub struct Frames<R> {
        pub r: R,
        pub buf: Vec<u8>,
    }

    impl<R: AsyncRead + Unpin> Frames<R> {
        /// The next frame, within `within`.
        pub async fn next(&mut self, within: Duration) -> Next {
            let until = tokio::time::Instant::now() + within;
            loop {
                if self.buf.len() >= 9 {
                    let len =
                        u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                    if self.buf.len() >= 9 + len {
                        let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                        return Next::Frame(Frame {
                            kind: f[3],
                            flags: f[4],
                            stream: u32::from_be_bytes(f[5..9].try_into().unwrap()) & 0x7fff_ffff,
                            payload: f[9..].to_vec(),
                        });
                    }
                }
                let mut chunk = [0u8; 16384];
                match tokio::time::timeout_at(until, self.r.read(&mut chunk)).await {
                    Err(_) => return Next::Quiet,
                    Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                    Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }

        /// Read until the connection closes, within `within`: whether a GOAWAY
        /// came first (`None` if it stayed open).
        pub async fn until_closed(&mut self, within: Duration) -> Option<bool> {
            let until = Instant::now() + within;
            let mut goaway = false;
            loop {
                match self
                    .next(until.saturating_duration_since(Instant::now()))
                    .await
                {
                    Next::Frame(f) => goaway |= f.kind == GOAWAY,
                    Next::Closed => return Some(goaway),
                    Next::Quiet => return None,
                }
            }
        }
    }

    /// A client HTTP/2 connection spoken frame by frame, over TLS.
    pub struct Raw {
        pub frames: Frames<ReadHalf<Tls>>,
        pub w: WriteHalf<Tls>,
        /// The proxy's SETTINGS: (identifier, value).
        pub settings: Vec<(u16, u32)>,
    }

    impl Raw {
        /// Send the preface and SETTINGS, read the proxy's SETTINGS and ack them.
        pub async fn open(tls: Tls) -> Raw {
            let (r, w) = tokio::io::split(tls);
            let mut raw = Raw {
                frames: Frames { r, buf: Vec::new() },
                w,
                settings: Vec::new(),
            };
            let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            hello.extend(frame(SETTINGS, 0, 0, &[]));
            raw.send(&hello).await;
            loop {
                match raw.frames.next(Duration::from_secs(10)).await {
                    Next::Frame(f) if f.kind == SETTINGS && f.flags & ACK == 0 => {
                        raw.settings = f
                            .payload
                            .chunks_exact(6)
                            .map(|s| {
                                let id = u16::from_be_bytes([s[0], s[1]]);
                                (id, u32::from_be_bytes(s[2..6].try_into().unwrap()))
                            })
                            .collect();
                        break;
                    }
                    Next::Frame(_) => {}
                    _ => panic!("no SETTINGS from the proxy"),
                }
            }
            raw.send(&frame(SETTINGS, ACK, 0, &[])).await;
            raw
        }

        /// Write `bytes` and flush.
        pub async fn send(&mut self, bytes: &[u8]) {
            self.try_send(bytes).await.expect("write");
        }

        /// Write `bytes` and flush; an error means the proxy closed the
        /// connection (for a test that writes while a deadline may pass).
        pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.w.write_all(bytes).await?;
            self.w.flush().await
        }

        /// `GET /` on stream `id`, answered in full.
        pub async fn exchange(&mut self, id: u32) {
            self.send(&request(id, "GET", &[], END_HEADERS | END_STREAM))
                .await;
            let (end, seen) = self.until_stream_ends(id, Duration::from_secs(10)).await;
            let answered = seen
                .iter()
                .chain([&end])
                .any(|f| f.stream == id && f.kind == HEADERS);
            assert!(
                answered && end.kind != RST_STREAM,
                "stream {id}: {end:?} after {seen:?}"
            );
        }

        /// The value of setting `id` the proxy sent, if it sent one.
        pub fn setting(&self, id: u16) -> Option<u32> {
            self.settings
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, v)| *v)
        }

        /// Frames until one for `stream` ends it (END_STREAM or RST_STREAM),
        /// within `within`: that frame and every frame before it.
        pub async fn until_stream_ends(
            &mut self,
            stream: u32,
            within: Duration,
        ) -> (Frame, Vec<Frame>) {
            let until = Instant::now() + within;
            let mut seen = Vec::new();
            loop {
                match self
                    .frames
                    .next(until.saturating_duration_since(Instant::now()))
                    .await
                {
                    Next::Frame(f) if f.ends(stream) => return (f, seen),
                    Next::Frame(f) => seen.push(f),
                    Next::Closed => panic!("closed before stream {stream} ended: {seen:?}"),
                    Next::Quiet => {
                        panic!("stream {stream} did not end within {within:?}: {seen:?}")
                    }
                }
            }
        }
    }
}
