//! The chunked transfer coding (RFC 9112 §7.1) as a byte-at-a-time state
//! machine that never copies: it walks bytes passing through the proxy and
//! says which of them are chunk data and where the message ends.
//!
//! The proxy forwards chunked bodies as they are (no re-framing), so all it
//! needs is to know the end of the body, count the data bytes (for
//! `max_body_bytes`), and, for an HTTP/1.0 client that cannot read chunked,
//! pick out the data. Parsing is strict — CRLF only, bounded sizes and
//! extensions — because a lenient chunk parser in a proxy is a request
//! smuggling vector.

/// Longest chunk-size line we accept (hex digits plus extensions).
const MAX_LINE: u32 = 4096;
/// Largest trailer section we accept.
const MAX_TRAILERS: u32 = 16 * 1024;

/// Where the parser is inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// Past the size, in extensions, until CR.
    Ext { value: u64 },
    /// Expecting the LF ending the size line.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// In the trailer section, at the start of a line.
    TrailerLineStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Expecting the LF of a trailer line (or of the final empty line, `last`).
    TrailerLf { last: bool },
    /// The body is complete.
    Done,
}

/// A malformed chunked body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(&'static str);

/// One piece of input, as [`Chunked::advance`] classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `n` bytes of framing (sizes, CRLFs, extensions, trailers).
    Framing(usize),
    /// `n` bytes of chunk data.
    Data(usize),
}

/// Tracks a chunked body across any number of reads.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    /// Bytes in the current size line or the trailer section so far.
    line: u32,
    /// Data bytes seen so far.
    data_total: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    /// A parser at the start of a chunked body.
    pub fn new() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line: 0,
            data_total: 0,
        }
    }

    /// Whether the terminating chunk and trailers have been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes seen so far (the decoded body length).
    pub fn data_total(&self) -> u64 {
        self.data_total
    }

    /// Classify the longest run at the start of `input` (one data run or one
    /// framing run). Returns the piece, or `None` when `input` is empty or the
    /// body is already done (bytes after the end belong to the next message).
    pub fn advance(&mut self, input: &[u8]) -> Result<Option<Piece>, ChunkError> {
        if input.is_empty() || self.is_done() {
            return Ok(None);
        }
        if let State::Data { remaining } = self.state {
            let n = (remaining.min(input.len() as u64)) as usize;
            self.data_total += n as u64;
            let left = remaining - n as u64;
            self.state = if left == 0 {
                State::DataCr
            } else {
                State::Data { remaining: left }
            };
            return Ok(Some(Piece::Data(n)));
        }
        let mut used = 0;
        for &b in input {
            used += 1;
            self.step(b)?;
            if matches!(self.state, State::Data { .. } | State::Done) {
                break;
            }
        }
        Ok(Some(Piece::Framing(used)))
    }

    /// Consume all of `input`, returning how many bytes belong to the body
    /// (the rest is the next message) — for callers that only need the end.
    pub fn consume(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        while let Some(piece) = self.advance(&input[at..])? {
            at += match piece {
                Piece::Framing(n) | Piece::Data(n) => n,
            };
        }
        Ok(at)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { value, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 15 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.line += 1;
                    State::Size {
                        value: value * 16 + d,
                        digits: digits + 1,
                    }
                }
                b';' | b' ' | b'\t' if digits > 0 => {
                    self.line += 1;
                    State::Ext { value }
                }
                b'\r' if digits > 0 => State::SizeLf { value },
                _ => return Err(ChunkError("bad chunk size")),
            },
            State::Ext { value } => match b {
                b'\r' => State::SizeLf { value },
                b'\n' => return Err(ChunkError("bare LF in chunk extension")),
                _ => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    State::Ext { value }
                }
            },
            State::SizeLf { value } => {
                if b != b'\n' {
                    return Err(ChunkError("expected LF after chunk size"));
                }
                self.line = 0;
                if value == 0 {
                    State::TrailerLineStart
                } else {
                    State::Data { remaining: value }
                }
            }
            State::Data { .. } => unreachable!("data is consumed in advance()"),
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("expected CRLF after chunk data"));
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("expected CRLF after chunk data"));
                }
                State::Size {
                    value: 0,
                    digits: 0,
                }
            }
            State::TrailerLineStart => match b {
                b'\r' => State::TrailerLf { last: true },
                b'\n' => return Err(ChunkError("bare LF in trailers")),
                _ => self.trailer_byte()?,
            },
            State::TrailerLine => match b {
                b'\r' => State::TrailerLf { last: false },
                b'\n' => return Err(ChunkError("bare LF in trailers")),
                _ => self.trailer_byte()?,
            },
            State::TrailerLf { last } => {
                if b != b'\n' {
                    return Err(ChunkError("expected LF in trailers"));
                }
                if last {
                    State::Done
                } else {
                    State::TrailerLineStart
                }
            }
            State::Done => State::Done,
        };
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<State, ChunkError> {
        self.line += 1;
        if self.line > MAX_TRAILERS {
            return Err(ChunkError("trailers too large"));
        }
        Ok(State::TrailerLine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Result<(usize, u64, bool), ChunkError> {
        let mut c = Chunked::new();
        let used = c.consume(input)?;
        Ok((used, c.data_total(), c.is_done()))
    }

    #[test]
    fn a_whole_body_in_one_piece() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1";
        let (used, data, done) = run(body).unwrap();
        assert!(done);
        assert_eq!(data, 11);
        assert_eq!(&body[used..], b"GET / HTTP/1.1");
    }

    #[test]
    fn byte_by_byte_gives_the_same_answer() {
        let body = b"a\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut c = Chunked::new();
        let mut data = Vec::new();
        for (i, b) in body.iter().enumerate() {
            match c.advance(std::slice::from_ref(b)).unwrap() {
                Some(Piece::Data(1)) => data.push(*b),
                Some(Piece::Framing(1)) => {}
                other => panic!("at {i}: {other:?}"),
            }
        }
        assert!(c.is_done());
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn pieces_split_data_from_framing() {
        let mut c = Chunked::new();
        let input = b"3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(c.advance(input).unwrap(), Some(Piece::Framing(3)));
        assert_eq!(c.advance(&input[3..]).unwrap(), Some(Piece::Data(3)));
        assert_eq!(c.advance(&input[6..]).unwrap(), Some(Piece::Framing(7)));
        assert!(c.is_done());
        assert_eq!(c.advance(b"next").unwrap(), None);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloX",
            b"ffffffffffffffffff\r\n",
            b"\r\n",
            b"0\r\nTrailer\n",
        ] {
            assert!(run(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_ext = [b"1;".to_vec(), vec![b'a'; 5000], b"\r\n".to_vec()].concat();
        assert!(run(&long_ext).is_err());
    }

    #[test]
    fn an_incomplete_body_is_not_done() {
        let (used, data, done) = run(b"5\r\nhel").unwrap();
        assert_eq!((used, data, done), (6, 3, false));
    }
}
