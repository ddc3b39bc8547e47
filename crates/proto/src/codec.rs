//! Line framing: splits a byte stream into request lines of bounded length, so that one
//! oversized line costs the daemon at most [`MAX_LINE_BYTES`] of memory and is answered with an
//! error instead of ending the connection.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Longest request line accepted, newline excluded.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One unit of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n` (and without a `\r` before it).
    Line(BytesMut),
    /// A line longer than the limit began here; the rest of it up to its newline is dropped.
    TooLong,
}

/// Newline-delimited frames with a length bound. Unlike `LinesCodec` it hands out bytes, so
/// that invalid UTF-8 becomes a request error rather than a broken connection.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_len: usize,
    /// Bytes of the buffer already searched for a newline.
    scanned: usize,
    /// Inside an oversized line: drop input until its newline.
    discarding: bool,
}

impl LineCodec {
    pub fn new() -> Self {
        Self::with_max_len(MAX_LINE_BYTES)
    }

    pub fn with_max_len(max_len: usize) -> Self {
        Self {
            max_len,
            scanned: 0,
            discarding: false,
        }
    }
}

impl LineCodec {
    /// Whether the framer is inside an oversized line, dropping its bytes: a line has begun
    /// even though the buffer is empty.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        loop {
            let newline = buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|offset| self.scanned + offset);
            match (self.discarding, newline) {
                (true, Some(end)) => {
                    buf.advance(end + 1);
                    self.scanned = 0;
                    self.discarding = false;
                    // The oversized line was reported when it crossed the limit; go on.
                }
                (true, None) => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                (false, Some(end)) if end > self.max_len => {
                    buf.advance(end + 1);
                    self.scanned = 0;
                    return Ok(Some(Frame::TooLong));
                }
                (false, Some(end)) => {
                    let mut line = buf.split_to(end + 1);
                    self.scanned = 0;
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    return Ok(Some(Frame::Line(line)));
                }
                (false, None) if buf.len() > self.max_len => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(Frame::TooLong));
                }
                (false, None) => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    /// A last line without a newline still counts (`printf '{"cmd":"list"}' | socat …`).
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.scanned = 0;
        if self.discarding || buf.is_empty() {
            buf.clear();
            return Ok(None);
        }
        let line = buf.split();
        Ok(Some(Frame::Line(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Frame {
        Frame::Line(BytesMut::from(text))
    }

    #[test]
    fn splits_lines_across_partial_reads() {
        let mut codec = LineCodec::new();
        let mut buf = BytesMut::from("{\"cmd\":");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\"list\"}\r\n{\"cmd\":\"hello\"}\n");
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(line("{\"cmd\":\"list\"}"))
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(line("{\"cmd\":\"hello\"}"))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn an_oversized_line_is_reported_once_and_the_next_line_survives() {
        let mut codec = LineCodec::with_max_len(8);
        let mut buf = BytesMut::from("0123456789");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::TooLong));
        assert!(buf.is_empty(), "memory of the long line is released");
        buf.extend_from_slice(b"still the long line");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b" end\nok\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("ok")));
    }

    #[test]
    fn an_oversized_line_arriving_whole_is_reported() {
        let mut codec = LineCodec::with_max_len(4);
        let mut buf = BytesMut::from("123456\nab\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::TooLong));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("ab")));
    }

    #[test]
    fn a_line_at_the_limit_is_accepted() {
        let mut codec = LineCodec::with_max_len(4);
        let mut buf = BytesMut::from("1234\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("1234")));
    }

    #[test]
    fn the_last_line_needs_no_newline() {
        let mut codec = LineCodec::new();
        let mut buf = BytesMut::from("a\nb");
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(line("a")));
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(line("b")));
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }
}
