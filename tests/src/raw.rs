//! A raw HTTP/1 and WebSocket client for tests that must control bytes
//! exactly: pipelined bytes, half-sent heads, frames written by hand.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response head as read off the wire.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Header fields, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A TCP connection with a read buffer.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not consumed.
    pub buf: Vec<u8>,
    /// Every byte read off the socket since it connected.
    pub received: u64,
}

impl RawClient {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).ok();
        RawClient {
            stream,
            buf: Vec::new(),
            received: 0,
        }
    }

    /// Write `bytes` whole.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Read more bytes within `within`; `Ok(0)` at EOF.
    pub async fn read_more(&mut self, within: Duration) -> Result<usize, String> {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Err(_) => Err("read timed out".into()),
            Ok(Err(e)) => Err(format!("read failed: {e}")),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.received += n as u64;
                Ok(n)
            }
        }
    }

    /// Read one response head (10 s budget).
    pub async fn read_head(&mut self) -> Result<Head, String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) =
                resp.parse(&self.buf).map_err(|e| e.to_string())?
            {
                let head = Head {
                    status: resp.code.unwrap_or(0),
                    headers: resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                self.buf.drain(..len);
                return Ok(head);
            }
            if self.read_more(Duration::from_secs(10)).await? == 0 {
                return Err(format!(
                    "closed before a full head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        }
    }

    /// Read `n` body bytes.
    pub async fn read_body(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if self.read_more(Duration::from_secs(10)).await? == 0 {
                return Err("closed inside a body".into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Whether the peer closes the connection within `within` (true), or
    /// keeps it open (false). Bytes that arrive meanwhile are kept.
    pub async fn closes_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.read_more(left).await {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.contains("timed out") => return false,
                Err(_) => return true,
            }
        }
    }

    /// Read one WebSocket frame: `(opcode, payload)`.
    pub async fn read_frame(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok((opcode, payload));
            }
            if self.read_more(Duration::from_secs(10)).await? == 0 {
                return Err("closed before a whole frame".into());
            }
        }
    }
}

/// A GET upgrade request to `path` with a fixed key.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n{extra}\r\n",
        crate::FIXED_WS_KEY
    )
}

/// A frame as a client sends it (masked).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Parse a (server → client, unmasked or masked) frame at the start of
/// `buf`: `(opcode, payload, bytes used)`.
pub fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let payload = buf.get(at..at + len)?;
    let payload = match mask {
        Some(m) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some((opcode, payload, at + len))
}
