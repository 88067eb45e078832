//! TLS for the end-to-end tests: a test CA that signs ECDSA P-256 leaf
//! certificates into a temp dir (rcgen), and clients that trust it —
//! rustls handshakes that report the certificate they were served,
//! HTTP/1.1 and HTTP/2 GETs over TLS, and WSS connections.

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
