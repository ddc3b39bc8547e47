//! Reading request lines from a connection under two clocks and one memory budget: a
//! connection that sends nothing is closed after the idle timeout, a line that has begun must
//! end within the line timeout, and the bytes of unfinished lines across all connections are
//! bounded by a shared budget. A big line's buffer is freed once the line is read.

use bytes::BytesMut;
use proto::{Frame, LineCodec};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

/// Bytes read at a time. Each connection may buffer this much beyond the budget, so that a
/// short request (`hello`, `stop`) is read even while big lines hold all of it.
pub const CHUNK: usize = 8 * 1024;

/// A buffer larger than this is given back to the allocator once its line is read.
const KEEP_CAPACITY: usize = 4 * CHUNK;

/// How long a connection may stay silent, and how long one line may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// No byte at all between requests for this long: the connection is closed.
    pub idle: Duration,
    /// A line that has begun must end within this.
    pub line: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            line: Duration::from_secs(5),
        }
    }
}

/// The bytes all connections together may hold in unfinished lines (beyond one
/// [`CHUNK`] each).
#[derive(Debug, Clone)]
pub struct Budget(Arc<Semaphore>);

impl Budget {
    /// Bytes of unfinished lines all connections may buffer, by default.
    pub const DEFAULT_BYTES: usize = 64 * 1024 * 1024;

    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes)))
    }

    /// Bytes not held by any connection now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BYTES)
    }
}

/// Why no line came.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no request for {0:?}")]
    Idle(Duration),
    #[error("request line not finished within {0:?}")]
    LineTimeout(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The request lines of one connection.
#[derive(Debug)]
pub struct LineReader<R> {
    read: R,
    buf: BytesMut,
    codec: LineCodec,
    budget: Budget,
    /// Bytes of the budget this connection holds now.
    held: usize,
    /// When the first byte of the current, unfinished line arrived.
    line_started: Option<Instant>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(read: R, budget: Budget) -> Self {
        Self {
            read,
            buf: BytesMut::new(),
            codec: LineCodec::new(),
            budget,
            held: 0,
            line_started: None,
            eof: false,
        }
    }

    /// The next frame; `Ok(None)` once the client has closed its sending half.
    pub async fn next(&mut self, timeouts: Timeouts) -> Result<Option<Frame>, ReadError> {
        loop {
            let frame = if self.eof {
                self.codec.decode_eof(&mut self.buf)?
            } else {
                self.codec.decode(&mut self.buf)?
            };
            if let Some(frame) = frame {
                self.line_read();
                return Ok(Some(frame));
            }
            if self.eof {
                self.line_read();
                return Ok(None);
            }
            let in_line = !self.buf.is_empty() || self.codec.is_discarding();
            let (deadline, timed_out) = match self.line_started {
                Some(started) if in_line => (
                    started + timeouts.line,
                    ReadError::LineTimeout as fn(Duration) -> ReadError,
                ),
                _ => (
                    Instant::now() + timeouts.idle,
                    ReadError::Idle as fn(_) -> _,
                ),
            };
            let limit = if in_line {
                timeouts.line
            } else {
                timeouts.idle
            };
            // Room for the next chunk first: waiting for the budget is waiting for the line.
            tokio::time::timeout_at(deadline, self.hold(self.buf.len() + CHUNK))
                .await
                .map_err(|_| timed_out(limit))?;
            self.buf.reserve(CHUNK);
            let mut chunk = (&mut self.read).take(CHUNK as u64);
            let n = tokio::time::timeout_at(deadline, chunk.read_buf(&mut self.buf))
                .await
                .map_err(|_| timed_out(limit))??;
            if n == 0 {
                self.eof = true;
            } else if self.line_started.is_none() {
                self.line_started = Some(Instant::now());
            }
        }
    }

    /// After a frame (or the end): gives back a big buffer and the budget it no longer needs.
    /// Bytes of the next line already read start its clock now. The rest of a line too long
    /// to keep, still to be skipped, is that line: its clock goes on.
    fn line_read(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::from(&self.buf[..]);
        }
        if !self.codec.is_discarding() {
            self.line_started = (!self.buf.is_empty()).then(Instant::now);
        }
        let keep = self.charge(self.buf.len());
        if keep < self.held {
            self.budget.0.add_permits(self.held - keep);
            self.held = keep;
        }
    }

    /// What a buffer of `bytes` costs the budget: everything beyond the free first chunk.
    fn charge(&self, bytes: usize) -> usize {
        bytes.saturating_sub(CHUNK).next_multiple_of(CHUNK)
    }

    /// Holds enough of the budget for a buffer of `bytes`, waiting for other lines to end.
    async fn hold(&mut self, bytes: usize) {
        let wanted = self.charge(bytes);
        if wanted <= self.held {
            return;
        }
        // Lines are at most a few MiB: far below u32's 4 GiB.
        let more = u32::try_from(wanted - self.held).unwrap_or(u32::MAX);
        // The budget's semaphore is never closed, so this only waits.
        if let Ok(permit) = self.budget.0.acquire_many(more).await {
            permit.forget();
            self.held = wanted;
        }
    }
}

impl<R> Drop for LineReader<R> {
    fn drop(&mut self) {
        self.budget.0.add_permits(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const QUICK: Timeouts = Timeouts {
        idle: Duration::from_secs(60),
        line: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn a_started_line_must_end_within_the_line_timeout() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut lines = LineReader::new(server, Budget::default());
        client.write_all(b"{\"cmd\":\"hel").await.unwrap();
        let started = Instant::now();
        let err = lines.next(QUICK).await.unwrap_err();
        assert!(matches!(err, ReadError::LineTimeout(_)), "{err}");
        assert_eq!(started.elapsed(), QUICK.line);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_ends_after_the_idle_timeout_and_lines_reset_the_clock() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut lines = LineReader::new(server, Budget::default());
        client.write_all(b"one\n").await.unwrap();
        assert_eq!(
            lines.next(QUICK).await.unwrap(),
            Some(Frame::Line(BytesMut::from("one")))
        );
        let started = Instant::now();
        let err = lines.next(QUICK).await.unwrap_err();
        assert!(matches!(err, ReadError::Idle(_)), "{err}");
        assert_eq!(started.elapsed(), QUICK.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_trickling_in_is_still_bounded_by_its_start() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut lines = LineReader::new(server, Budget::default());
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                client.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            client
        });
        let started = Instant::now();
        let err = lines.next(QUICK).await.unwrap_err();
        assert!(matches!(err, ReadError::LineTimeout(_)), "{err}");
        assert!(started.elapsed() <= QUICK.line + Duration::from_secs(1));
        trickle.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_rest_of_a_line_too_long_is_still_bounded_by_its_start() {
        // Once told it was too long, a client streaming on held its connection for as long
        // as it sent: the idle clock began again with every chunk.
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut lines = LineReader::new(server, Budget::default());
        let stream = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            // 30 s of it, then the end of the line.
            for _ in 0..300 {
                if client.write_all(&chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = client.write_all(b"\n").await;
        });
        let started = Instant::now();
        assert_eq!(lines.next(QUICK).await.unwrap(), Some(Frame::TooLong));
        let ended = lines.next(QUICK).await;
        assert!(matches!(ended, Err(ReadError::LineTimeout(_))), "{ended:?}");
        assert!(started.elapsed() <= QUICK.line, "{:?}", started.elapsed());
        drop(lines);
        stream.await.unwrap();
    }

    #[tokio::test]
    async fn unfinished_lines_share_one_budget_and_give_it_back() {
        let budget = Budget::new(4 * CHUNK);
        let (mut big_client, big_server) = tokio::io::duplex(1 << 20);
        let mut big = LineReader::new(big_server, budget.clone());
        // Far more than the budget, without a newline: the reader takes what it may, then waits.
        big_client.write_all(&vec![b'x'; 16 * CHUNK]).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), big.next(QUICK)).await;
        assert!(waiting.is_err(), "the line cannot be read past the budget");
        assert_eq!(budget.available(), 0);
        // A short request on another connection still fits in its free chunk.
        let (mut small_client, small_server) = tokio::io::duplex(1 << 20);
        let mut small = LineReader::new(small_server, budget.clone());
        small_client
            .write_all(b"{\"cmd\":\"hello\"}\n")
            .await
            .unwrap();
        assert!(matches!(small.next(QUICK).await, Ok(Some(Frame::Line(_)))));
        drop(big);
        assert_eq!(
            budget.available(),
            4 * CHUNK,
            "a closed connection frees its bytes"
        );
    }

    #[tokio::test]
    async fn a_big_line_releases_its_budget_and_its_buffer() {
        let budget = Budget::new(Budget::DEFAULT_BYTES);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut lines = LineReader::new(server, budget.clone());
        let writer = tokio::spawn(async move {
            let mut line = vec![b'y'; 512 * 1024];
            line.push(b'\n');
            client.write_all(&line).await.unwrap();
            client
        });
        let Ok(Some(Frame::Line(line))) = lines.next(QUICK).await else {
            panic!("the line is read");
        };
        assert_eq!(line.len(), 512 * 1024);
        drop(line);
        let _client = writer.await.unwrap();
        assert_eq!(budget.available(), Budget::DEFAULT_BYTES);
        assert!(
            lines.buf.capacity() <= KEEP_CAPACITY,
            "{}",
            lines.buf.capacity()
        );
    }
}
