//! A strict WebSocket client for checking the close handshake (RFC 6455
//! §5.5.1, §7): it speaks the protocol byte by byte over a plain TCP
//! socket, so nothing is smoothed over by a library. It checks every frame
//! the server sends (unmasked, no reserved bits, a known opcode, control
//! frames whole and short), that nothing follows the server's close frame,
//! that a close is answered with a close frame, and that the server then
//! closes the TCP connection itself.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A ping (answered by the client with a pong).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame: its code, if it had one.
    Close(Option<u16>),
}

/// A WebSocket connection with nothing between the test and the bytes.
pub struct StrictWs {
    stream: TcpStream,
    buf: Vec<u8>,
    mask_seed: u32,
}

impl StrictWs {
    /// Open `ws://addr/path_and_query` and check the 101 answer.
    pub async fn connect(addr: SocketAddr, path_and_query: &str) -> Result<StrictWs, String> {
        let mut stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{addr}: connect timed out"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let key = "x3JJHMbDL1EzLkh9GBhXDw==";
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut ws = StrictWs {
            stream,
            buf: Vec::new(),
            mask_seed: 0x9e37_79b9,
        };
        let head = ws.read_head().await?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&head)
            .map_err(|e| format!("bad response head: {e}"))?;
        if resp.code != Some(101) {
            return Err(format!("upgrade answered {:?}", resp.code));
        }
        let accept = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned());
        let want = derive_accept_key(key.as_bytes());
        if accept.as_deref() != Some(want.as_str()) {
            return Err(format!("Sec-WebSocket-Accept {accept:?}, want {want}"));
        }
        Ok(ws)
    }

    async fn read_head(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(head);
            }
            if self.fill().await? == 0 {
                return Err("connection closed during the handshake".into());
            }
        }
    }

    /// Read more bytes; 0 at EOF.
    async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(STEP, self.stream.read(&mut chunk))
            .await
            .map_err(|_| format!("nothing from the server within {STEP:?}"))?
            .map_err(|e| format!("read: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn need(&mut self, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(format!(
                    "connection closed mid-frame (had {} of {n} bytes)",
                    self.buf.len()
                ));
            }
        }
        Ok(())
    }

    /// The next frame, checked. A connection closed before any byte of a
    /// frame is the error `"eof"`.
    pub async fn read_frame(&mut self) -> Result<Frame, String> {
        if self.buf.is_empty() && self.fill().await? == 0 {
            return Err("eof".into());
        }
        self.need(2).await?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        if b0 & 0x70 != 0 {
            return Err(format!("reserved bits set: {b0:#04x}"));
        }
        if b1 & 0x80 != 0 {
            return Err("a server frame is masked (RFC 6455 §5.1)".into());
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        let (len, start) = match b1 & 0x7f {
            126 => {
                self.need(4).await?;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.need(10).await?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if opcode >= 8 && (!fin || len > 125) {
            return Err(format!(
                "control frame {opcode:#x} fragmented or {len} bytes long"
            ));
        }
        self.need(start + len).await?;
        let payload: Vec<u8> = self.buf[start..start + len].to_vec();
        self.buf.drain(..start + len);
        match opcode {
            0x1 if fin => String::from_utf8(payload)
                .map(Frame::Text)
                .map_err(|_| "text frame is not UTF-8".into()),
            0x8 => match payload.len() {
                0 => Ok(Frame::Close(None)),
                1 => Err("close frame with a one-byte body".into()),
                _ => {
                    std::str::from_utf8(&payload[2..])
                        .map_err(|_| "close reason is not UTF-8".to_owned())?;
                    Ok(Frame::Close(Some(u16::from_be_bytes([
                        payload[0], payload[1],
                    ]))))
                }
            },
            0x9 => Ok(Frame::Ping(payload)),
            0xA => Ok(Frame::Pong),
            other => Err(format!("unexpected opcode {other:#x} (fin {fin})")),
        }
    }

    /// Send one masked frame.
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 17;
        self.mask_seed ^= self.mask_seed << 5;
        let mask = self.mask_seed.to_be_bytes();
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
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Send a text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    /// The next text frame, answering pings on the way.
    pub async fn next_text(&mut self) -> Result<String, String> {
        loop {
            match self.read_frame().await? {
                Frame::Text(t) => return Ok(t),
                Frame::Ping(p) => self.send_frame(0xA, &p).await?,
                Frame::Pong => {}
                Frame::Close(code) => return Err(format!("closed with {code:?}")),
            }
        }
    }

    /// Close from the client's side with `code`: the server must answer
    /// with a close frame (after any data frames already on their way) and
    /// then close the TCP connection. The code it answered with.
    pub async fn close(mut self, code: u16) -> Result<Option<u16>, String> {
        self.send_frame(0x8, &code.to_be_bytes()).await?;
        let answer = loop {
            match self.read_frame().await {
                Ok(Frame::Close(c)) => break c,
                Ok(_) => continue,
                Err(e) if e == "eof" => {
                    return Err("the server closed TCP without answering our close frame".into())
                }
                Err(e) => return Err(e),
            }
        };
        self.expect_eof().await?;
        Ok(answer)
    }

    /// Wait for the server to close (answering pings meanwhile): its close
    /// frame is answered with the same code, and the server must then close
    /// the TCP connection. The code it closed with.
    pub async fn closed_by_server(mut self) -> Result<Option<u16>, String> {
        let code = loop {
            match self.read_frame().await {
                Ok(Frame::Close(c)) => break c,
                Ok(Frame::Ping(p)) => self.send_frame(0xA, &p).await?,
                Ok(_) => continue,
                Err(e) if e == "eof" => {
                    return Err("the server closed TCP without a close frame".into())
                }
                Err(e) => return Err(e),
            }
        };
        let echo = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
        self.send_frame(0x8, &echo).await?;
        self.expect_eof().await?;
        Ok(code)
    }

    /// After the close frames: nothing more, and the server closes TCP.
    async fn expect_eof(&mut self) -> Result<(), String> {
        match self.read_frame().await {
            Err(e) if e == "eof" => Ok(()),
            Err(e) if e.contains("reset") => Err(format!("TCP reset instead of a close: {e}")),
            Err(e) => Err(e),
            Ok(f) => Err(format!("a frame after the close handshake: {f:?}")),
        }
    }
}
