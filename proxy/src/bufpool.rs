//! Per-thread pool of I/O buffers, so that a connection owns a buffer only
//! while bytes move through it.
//!
//! An idle keep-alive connection or an idle WebSocket tunnel waits on socket
//! readiness with no buffer at all; when bytes arrive it borrows one from its
//! thread's pool and gives it back as soon as they have been written on. That
//! is what keeps an idle tunnel at a few hundred bytes of task state instead of
//! the tens of KiB a buffer per direction would cost.
//!
//! Buffers never cross threads through the pool (each thread has its own free
//! list), so taking and returning one is a `Vec` push/pop without locks. A
//! buffer dropped on another thread simply frees its memory.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Size of every pooled buffer: one TLS record's worth, and big enough that a
/// typical request or response head and body move in one read.
pub const BUF_SIZE: usize = 16 * 1024;

/// How many free buffers a thread keeps; beyond this, returned buffers are
/// freed so a burst does not pin its peak memory forever.
const MAX_FREE: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer borrowed from the current thread's pool; returned on drop.
pub struct PooledBuf {
    buf: Option<Vec<u8>>,
}

impl PooledBuf {
    /// Borrow a buffer of [`BUF_SIZE`] bytes (contents unspecified).
    pub fn take() -> Self {
        let buf = FREE
            .with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF_SIZE]);
        Self { buf: Some(buf) }
    }

    /// Grow the buffer to `len` bytes (keeping its contents), for the rare
    /// request head larger than [`BUF_SIZE`]. A grown buffer is freed, not
    /// pooled, when dropped.
    pub fn grow(&mut self, len: usize) {
        if let Some(buf) = &mut self.buf {
            if buf.len() < len {
                buf.resize(len, 0);
            }
        }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take().filter(|b| b.len() == BUF_SIZE) {
            // During thread teardown the pool may already be gone: then just free.
            let _ = FREE.try_with(|f| {
                let mut f = f.borrow_mut();
                if f.len() < MAX_FREE {
                    f.push(buf);
                }
            });
        }
    }
}

/// Bytes borrowed in a pooled buffer, with the window `start..end` still to
/// be consumed (written on, or parsed). Used where data arrived but could not
/// all be passed on yet.
pub struct Pending {
    buf: PooledBuf,
    start: usize,
    end: usize,
}

impl Pending {
    /// Wrap `buf` whose first `len` bytes are data.
    pub fn new(buf: PooledBuf, len: usize) -> Self {
        Self {
            buf,
            start: 0,
            end: len,
        }
    }

    /// Copy `data` into a fresh pooled buffer (at most [`BUF_SIZE`] bytes are
    /// kept; callers split larger data).
    pub fn copy_of(data: &[u8]) -> Self {
        let mut buf = PooledBuf::take();
        let n = data.len().min(BUF_SIZE);
        buf[..n].copy_from_slice(&data[..n]);
        Self::new(buf, n)
    }

    /// The bytes not yet consumed.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Mark `n` bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Whether everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_on_the_same_thread() {
        let first = PooledBuf::take();
        let ptr = first.as_ptr();
        drop(first);
        let again = PooledBuf::take();
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.len(), BUF_SIZE);
    }

    #[test]
    fn pending_tracks_what_is_left() {
        let mut p = Pending::copy_of(b"hello world");
        assert_eq!(p.bytes(), b"hello world");
        p.consume(6);
        assert_eq!(p.bytes(), b"world");
        p.consume(100);
        assert!(p.is_empty());
    }
}
