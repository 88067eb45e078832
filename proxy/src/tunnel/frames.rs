//! WebSocket frame boundaries in a byte stream (RFC 6455 §5.2), tracked as
//! the tunnel passes bytes through, so the proxy can end a tunnel with a
//! close frame written between two frames rather than inside one.
//!
//! The tracker never buffers: it keeps a few bytes of header and the count
//! of payload bytes left in the current frame. Feeding it costs one step per
//! frame header, not per byte. It trusts nothing: a malformed header only
//! means the stream is not at a boundary we can find, and the tunnel then
//! closes without a frame.

/// Close code 1001, "going away": the endpoint is leaving (RFC 6455 §7.4.1).
pub const GOING_AWAY: u16 = 1001;

/// Where a byte stream is relative to frame boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a frame header; `have` bytes of it seen.
    Header { have: u8, bytes: [u8; 14] },
    /// Inside a payload; this many bytes left.
    Payload { left: u64 },
    /// The stream broke the framing rules; boundaries are unknown from here.
    Lost,
}

/// Follows one direction of a tunnel.
#[derive(Debug, Clone, Copy)]
pub struct FrameTracker {
    state: State,
    /// A close frame (opcode 8) has passed: the peer is closing by itself.
    pub saw_close: bool,
}

impl Default for FrameTracker {
    fn default() -> Self {
        Self {
            state: State::Header {
                have: 0,
                bytes: [0; 14],
            },
            saw_close: false,
        }
    }
}

/// Length of a frame header given its first two bytes.
fn header_len(b1: u8) -> u8 {
    let masked = if b1 & 0x80 != 0 { 4 } else { 0 };
    match b1 & 0x7f {
        126 => 4 + masked,
        127 => 10 + masked,
        _ => 2 + masked,
    }
}

impl FrameTracker {
    /// Whether the stream is between two frames.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Whether framing was lost (the peer sent something that is not
    /// WebSocket frames).
    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// How many more bytes may be read before reaching the next boundary, at
    /// most `max`: used when closing, so the tunnel stops exactly there.
    /// `None` when the boundary is unknown (lost framing).
    pub fn until_boundary(&self, max: usize) -> Option<usize> {
        match self.state {
            State::Header { have: 0, .. } => Some(0),
            State::Header { have: 1, .. } => Some(1),
            State::Header { have, bytes } => {
                Some((header_len(bytes[1]) - have) as usize).map(|n| n.min(max))
            }
            State::Payload { left } => Some(left.min(max as u64) as usize),
            State::Lost => None,
        }
    }

    /// Account for `data` passing through.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Payload { left } => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Header {
                            have: 0,
                            bytes: [0; 14],
                        };
                    }
                }
                State::Header { have, bytes } => {
                    bytes[*have as usize] = data[0];
                    *have += 1;
                    data = &data[1..];
                    if *have < 2 || *have < header_len(bytes[1]) {
                        continue;
                    }
                    let b0 = bytes[0];
                    if b0 & 0x70 != 0 && b0 & 0x0f == 0x8 {
                        // RSV bits on a close frame: not a stream we understand.
                        self.state = State::Lost;
                        return;
                    }
                    let len = match bytes[1] & 0x7f {
                        126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
                        127 => u64::from_be_bytes([
                            bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8],
                            bytes[9],
                        ]),
                        n => u64::from(n),
                    };
                    if len >> 63 != 0 {
                        self.state = State::Lost;
                        return;
                    }
                    if b0 & 0x0f == 0x8 {
                        self.saw_close = true;
                    }
                    self.state = if len == 0 {
                        State::Header {
                            have: 0,
                            bytes: [0; 14],
                        }
                    } else {
                        State::Payload { left: len }
                    };
                }
            }
        }
    }
}

/// A close frame with `code`, as a server sends it (unmasked).
pub fn close_frame_to_client(code: u16) -> [u8; 4] {
    let [hi, lo] = code.to_be_bytes();
    [0x88, 0x02, hi, lo]
}

/// A close frame with `code`, as a client sends it (masked with `mask`).
pub fn close_frame_to_server(code: u16, mask: [u8; 4]) -> [u8; 8] {
    let [hi, lo] = code.to_be_bytes();
    [
        0x88,
        0x82,
        mask[0],
        mask[1],
        mask[2],
        mask[3],
        hi ^ mask[0],
        lo ^ mask[1],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if let Some(k) = mask {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn boundaries_across_every_split() {
        let stream: Vec<u8> = [
            frame(1, b"hello", None),
            frame(2, &[7u8; 300], Some([1, 2, 3, 4])),
            frame(9, b"", Some([9, 9, 9, 9])),
            frame(2, &vec![1u8; 70_000], None),
        ]
        .concat();
        let ends = [7usize, 7 + 308, 7 + 308 + 6, stream.len()];
        for chunk in [1usize, 2, 3, 7, 64, 5000] {
            let mut t = FrameTracker::default();
            let mut at = 0;
            let mut seen = Vec::new();
            while at < stream.len() {
                let n = chunk.min(stream.len() - at);
                for i in 0..n {
                    t.feed(&stream[at + i..at + i + 1]);
                    if t.at_boundary() {
                        seen.push(at + i + 1);
                    }
                }
                at += n;
            }
            assert_eq!(seen, ends, "chunk {chunk}");
        }
    }

    #[test]
    fn until_boundary_stops_at_the_frame_end() {
        let f = frame(1, b"abcdef", None);
        let mut t = FrameTracker::default();
        t.feed(&f[..4]);
        assert_eq!(t.until_boundary(100), Some(4));
        assert_eq!(t.until_boundary(2), Some(2));
        t.feed(&f[4..]);
        assert_eq!(t.until_boundary(100), Some(0));
        let mut h = FrameTracker::default();
        h.feed(&[0x82]);
        assert_eq!(h.until_boundary(100), Some(1));
        h.feed(&[0xfe]);
        assert_eq!(h.until_boundary(100), Some(6));
    }

    #[test]
    fn close_frames_are_noticed_and_made() {
        let mut t = FrameTracker::default();
        t.feed(&close_frame_to_client(GOING_AWAY));
        assert!(t.saw_close && t.at_boundary());
        let masked = close_frame_to_server(GOING_AWAY, [1, 2, 3, 4]);
        let mut u = FrameTracker::default();
        u.feed(&masked);
        assert!(u.saw_close && u.at_boundary());
        assert_eq!(masked[6] ^ 1, 0x03);
        assert_eq!(masked[7] ^ 2, 0xe9);
    }
}
