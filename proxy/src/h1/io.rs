//! The I/O moves of the HTTP/1 path, each with its deadline: reading more of
//! a message into a connection's buffer, and writing a list of slices whole.
//!
//! A [`ReadBuf`] borrows a pooled buffer only while it holds bytes, so a
//! keep-alive connection waiting for its next request holds none.

use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::bufpool::{PooledBuf, BUF_SIZE};

/// Bytes read from a peer and not yet consumed, in a pooled buffer.
#[derive(Default)]
pub struct ReadBuf {
    buf: Option<PooledBuf>,
    start: usize,
    end: usize,
}

/// Why a read or write did not complete.
#[derive(Debug, thiserror::Error)]
pub enum IoFail {
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// The message grew past the size it may have.
    #[error("too large")]
    TooLarge,
    /// An I/O error.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ReadBuf {
    /// A buffer holding a copy of `bytes` (read before HTTP began, e.g.
    /// behind a PROXY header).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut buf = PooledBuf::take();
        buf.grow(bytes.len());
        buf[..bytes.len()].copy_from_slice(bytes);
        Self {
            buf: Some(buf),
            start: 0,
            end: bytes.len(),
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        match &self.buf {
            Some(b) => &b[self.start..self.end],
            None => &[],
        }
    }

    /// Mark `n` bytes consumed; an emptied buffer goes back to the pool.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.buf = None;
            self.start = 0;
            self.end = 0;
        }
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Read once more from `from`, keeping what is held, growing the buffer
    /// up to `max` bytes held. Returns the bytes read (never 0: EOF is
    /// `Closed`).
    pub async fn fill(
        &mut self,
        from: &mut (impl AsyncRead + Unpin),
        max: usize,
    ) -> Result<usize, IoFail> {
        let held = self.end - self.start;
        if held >= max {
            return Err(IoFail::TooLarge);
        }
        let buf = self.buf.get_or_insert_with(PooledBuf::take);
        if self.end == buf.len() {
            if self.start > 0 {
                buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (buf.len() * 2).min(max.max(BUF_SIZE));
                if grown <= buf.len() {
                    return Err(IoFail::TooLarge);
                }
                buf.grow(grown);
            }
        }
        let room = (max - held).min(buf.len() - self.end);
        let n = from.read(&mut buf[self.end..self.end + room]).await?;
        if n == 0 {
            if self.start == self.end {
                self.buf = None;
            }
            return Err(IoFail::Closed);
        }
        self.end += n;
        Ok(n)
    }

    /// [`Self::fill`] that must finish by `deadline`.
    pub async fn fill_by(
        &mut self,
        from: &mut (impl AsyncRead + Unpin),
        max: usize,
        deadline: Instant,
    ) -> Result<usize, IoFail> {
        tokio::time::timeout_at(deadline, self.fill(from, max))
            .await
            .unwrap_or(Err(IoFail::Timeout))
    }

    /// [`Self::fill`] that must deliver a byte within `limit`.
    pub async fn fill_within(
        &mut self,
        from: &mut (impl AsyncRead + Unpin),
        max: usize,
        limit: Duration,
    ) -> Result<usize, IoFail> {
        self.fill_by(from, max, Instant::now() + limit).await
    }

    /// Take the held bytes out as an owned copy (for a tunnel's first write).
    pub fn take_all(&mut self) -> Vec<u8> {
        let out = self.data().to_vec();
        self.consume(out.len());
        out
    }
}

/// Write every byte of `slices` to `to`, each write bounded by `limit`, then
/// flush (TLS buffers records until flushed).
pub async fn write_all(
    to: &mut (impl AsyncWrite + Unpin),
    slices: &mut [IoSlice<'_>],
    limit: Duration,
) -> Result<(), IoFail> {
    let mut slices = slices;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = tokio::time::timeout(limit, to.write_vectored(slices))
            .await
            .map_err(|_| IoFail::Timeout)??;
        if n == 0 {
            return Err(IoFail::Closed);
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    tokio::time::timeout(limit, to.flush())
        .await
        .map_err(|_| IoFail::Timeout)??;
    Ok(())
}

/// [`write_all`] for one slice.
pub async fn write_one(
    to: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    limit: Duration,
) -> Result<(), IoFail> {
    write_all(to, &mut [IoSlice::new(data)], limit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fill_grows_compacts_and_reports_eof() {
        let data = vec![7u8; BUF_SIZE + 100];
        let mut src = &data[..];
        let mut rb = ReadBuf::default();
        let mut total = 0;
        while total < data.len() {
            total += rb.fill(&mut src, 1 << 20).await.unwrap();
        }
        assert_eq!(rb.data().len(), data.len());
        rb.consume(BUF_SIZE);
        assert_eq!(rb.data().len(), 100);
        assert!(matches!(
            rb.fill(&mut src, 1 << 20).await,
            Err(IoFail::Closed)
        ));
        rb.consume(100);
        assert!(rb.is_empty());
        let mut src = &data[..];
        let mut small = ReadBuf::default();
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = small.fill(&mut src, 1000).await {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(IoFail::TooLarge)));
    }

    #[tokio::test]
    async fn write_all_handles_many_slices() {
        let mut out: Vec<u8> = Vec::new();
        let mut slices = [IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"cd")];
        write_all(&mut out, &mut slices, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(out, b"abcd");
    }
}
